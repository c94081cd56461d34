"""constraints.txt (the releases `make` installs) against pyproject.toml: every dependency is pinned there, to a
release its range allows, and that is the release installed."""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_dependency_is_pinned_within_its_range_and_installed_at_that_release() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    pins = _pins()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )
        assert metadata.version(requirement.name) == pins[name], (
            f"{requirement.name} {metadata.version(requirement.name)} is installed, constraints.txt pins "
            f"{pins[name]}: run make (it reinstalls when constraints.txt changes)"
        )

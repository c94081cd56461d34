"""The README stays the map a newcomer follows: every setting, command and route is in it."""

from __future__ import annotations

import argparse
import re

from starlette.routing import Route

from kit.settings import Settings
from peak.app import create_app
from peak.cli import build_parser, settings_markdown
from tests.support import REPO

README = (REPO / "README.md").read_text()


def test_settings_table_is_current() -> None:
    found = re.search(r"<!-- settings:[^>]*-->\n(.*?)\n<!-- /settings -->", README, re.S)
    assert found, "README has no settings table between its markers"
    assert found.group(1) == settings_markdown(), (
        "README settings table is stale: paste `peak settings --markdown`"
    )


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_is_documented() -> None:
    for name, sub in _subcommands(build_parser()).items():
        assert f"`peak {name}" in README, f"`peak {name}` is not in the README"
        for child in _subcommands(sub):
            assert f"`peak {name} {child}" in README, f"`peak {name} {child}` is not in the README"


def test_every_route_is_documented() -> None:
    app = create_app(Settings.from_env({}))
    documented = {re.sub(r"{[^}]*}", "{}", path) for path in re.findall(r"`(?:[A-Z]+ )?(/[^` ?]*)", README)}
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"{[^}]*}", "{}", route.path)
        assert path in documented, f"{route.path} is not in the README"


def test_the_two_setup_commands() -> None:
    assert "make up" in README and "make test" in README

"""The one place the kit touches Starlette's private API; supported: starlette >=1.0,<2 (pyproject.toml).

The segment router (``kit/routing.py``) picks a request's candidate routes by the path its routes match on,
so it must compute that path exactly as Starlette's ``Route.matches`` does: with Starlette's own
``starlette._utils.get_route_path`` (which strips a mount's ``root_path``), rather than a copy that could drift
from it. The name is checked when this module is imported: an upgrade that moves it fails at start, naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import Any

from starlette.types import Scope

__all__ = ["PRIVATE", "SUPPORTED", "UnsupportedStarlette", "get_route_path", "lookup"]

SUPPORTED = "starlette>=1.0,<2"

# (module, attribute) pairs this module reads.
PRIVATE: tuple[tuple[str, str], ...] = (("starlette._utils", "get_route_path"),)


class UnsupportedStarlette(ImportError):
    """The installed Starlette lacks a private name the kit relies on."""


def lookup(module: str, attribute: str, *, version: str | None = None) -> Any:
    """``module.attribute``, or UnsupportedStarlette naming it and the supported range."""
    found: ModuleType | None
    try:
        found = importlib.import_module(module)
    except ImportError:
        found = None
    if found is None or not hasattr(found, attribute):
        installed = version or metadata.version("starlette")
        raise UnsupportedStarlette(
            f"Starlette {installed} has no {module}.{attribute}, which kit/starlette_private.py relies on; "
            f"supported: {SUPPORTED}. Install a supported Starlette or update kit/starlette_private.py."
        )
    return getattr(found, attribute)


get_route_path: Callable[[Scope], str] = lookup("starlette._utils", "get_route_path")

"""What a subsystem gives the composition: routes, migrations, per-process services and background loops.

The kit never imports a subsystem; ``peak.app`` lists the components and everything else follows from here.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from kit.context import Context
    from kit.lua import Script

__all__ = ["Component", "Feed", "GaugeRefresh", "Loop", "Role", "sections_of"]

Role = Literal["api", "worker", "cli"]

ServiceFactory = Callable[["Context", Role], AbstractAsyncContextManager[None]]
Loop = Callable[["Context"], Awaitable[None]]
# What the ops console shows of a component: read at most once per second per process, only while a console is
# open; its answer is rendered as JSON.
Feed = Callable[["Context"], Awaitable[Any]]
GaugeRefresh = Callable[["Context"], Awaitable[None]]
# Adds a component's `peak` subcommands; it is handed every component, for the contexts its commands open.
CliHook = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]", Sequence["Component"]], None]


@dataclass(frozen=True)
class Component:
    name: str
    routes: Sequence[BaseRoute] = ()
    # Package whose ``migrations/`` folder holds ordered plain SQL files (``0001_users.sql``).
    migrations: str | None = None
    # Started in every process, in component order, before any request or loop runs.
    services: Sequence[ServiceFactory] = ()
    # Long-running loops that `peak worker` runs; each restarts after an error.
    loops: Sequence[Loop] = ()
    cli: CliHook | None = None
    # ASGI middleware around the whole app; it finds the context in ``scope["state"]["ctx"]``.
    middleware: Sequence[Middleware] = ()
    # Its criticality tier (degrade/tiers.py); None: ops tooling (degrade, the console), never switched and
    # not on the degrade board.
    tier: str | None = "critical_plus"
    # The component's settings dataclass (read with ``ctx.settings.of(...)``; listed by `peak settings`).
    settings: type[Any] | None = None
    # Its Lua scripts (its ``scripts.py``), loaded into every Redis primary at start and checked by SHA.
    scripts: Sequence[Script] = ()
    # The ops console's panels of this component by name (``"sale"``): see ``Feed``.
    feeds: Mapping[str, Feed] = field(default_factory=dict)
    # Refreshed right before each /metrics scrape (at most once a second per process): set Prometheus gauges.
    gauges: Sequence[GaugeRefresh] = ()


def sections_of(components: Sequence[Component]) -> list[type[Any]]:
    """The components' settings dataclasses, in component order."""
    return [c.settings for c in components if c.settings is not None]

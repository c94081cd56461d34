"""What a subsystem gives the composition: routes, migrations, per-process services and background loops.

The kit never imports a subsystem; ``peak.app`` lists the components and everything else follows from here.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from kit.context import Context

__all__ = ["Component", "Loop", "Role"]

Role = Literal["api", "worker", "cli"]

ServiceFactory = Callable[["Context", Role], AbstractAsyncContextManager[None]]
Loop = Callable[["Context"], Awaitable[None]]
CliHook = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


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
    tier: str = "critical_plus"

"""The app composition: one Starlette app mounting every subsystem's routes, with one lifespan.

``components()`` is the list of subsystems: with the CLI (peak/cli.py) the only code that imports them. Each
gets what it needs of its siblings handed to it here (degrade's and the console's ``authorize``).
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Sequence

from granian.utils.proxies import wrap_asgi_with_proxy_headers
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

import console.component
import customer_service.component
import degrade.component
import reviews.component
import seckill.component
import sso.component
from kit import health
from kit.component import Component, sections_of
from kit.context import open_context
from kit.logs import configure
from kit.middleware import RequestMiddleware
from kit.routing import SegmentRouter
from kit.settings import Settings, SettingsError
from sso.guard import require_admin_or_session

__all__ = ["components", "create_app"]


def components() -> list[Component]:
    return [
        sso.component.component(),
        seckill.component.component(),
        reviews.component.component(),
        customer_service.component.component(),
        degrade.component.component(authorize=require_admin_or_session),
        # After degrade: its hub reads degrade's board.
        console.component.component(authorize=require_admin_or_session),
    ]


def create_app(settings: Settings | None = None, parts: Sequence[Component] | None = None) -> Starlette:
    """The app of ``parts`` (default: every component); with no settings, read from the environment."""
    if parts is None:
        parts = components()
    if settings is None:
        try:
            settings = Settings.from_env(sections=sections_of(parts))
        except SettingsError as exc:
            print(f"peak: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    configure(
        json=settings.log_json, level=settings.log_level, access=settings.access_log,
        buffer_lines=settings.access_log_buffer_lines,
    )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with open_context(settings, parts, "api") as ctx:
            # Everything made so far (modules, pools, caches) lives as long as the process: keep the cyclic
            # GC from walking it at every older-generation collection. Requests that wait on Redis keep
            # thousands of objects alive at once and trigger those collections: in-process CPU per purchase
            # went from 54 to 36-44 us, per strict validation from 44 to 28-33 us.
            gc.freeze()
            yield {"ctx": ctx}

    routes: list[BaseRoute] = [*health.routes()]
    for part in parts:
        routes.extend(part.routes)
    middleware = [
        Middleware(
            RequestMiddleware,
            max_body_bytes=settings.max_body_bytes,
            body_read_timeout_s=settings.body_read_timeout_s,
        )
    ]
    if settings.trusted_proxies:
        # Behind nginx every peer is the balancer: per-IP limits must see the client it forwards for.
        trusted = [h.strip() for h in settings.trusted_proxies.split(",") if h.strip()]
        middleware.insert(0, Middleware(wrap_asgi_with_proxy_headers, trusted_hosts=trusted))
    for part in parts:
        middleware.extend(part.middleware)
    app = _App(middleware=middleware)
    app.router = SegmentRouter(routes, lifespan=lifespan)
    return app


class _App(Starlette):
    """Starlette with only our middleware: the request middleware renders errors (see kit/middleware.py)."""

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

"""The per-process context: settings, pools and the services components register.

Created once by the lifespan (API), by `peak worker`, or by a CLI command; nothing global.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar, cast

import asyncpg

from kit.component import Component, Role
from kit.db import create_pool
from kit.lua import load_scripts
from kit.redis import RedisClient, create_redis
from kit.settings import Settings

__all__ = ["Context", "context_of", "open_context"]

T = TypeVar("T")
log = logging.getLogger("peak")


class Context:
    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        db: asyncpg.Pool,
        components: Sequence[Component],
        role: Role,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.db = db
        self.components = tuple(components)
        self.role = role
        self._services: dict[type[Any], Any] = {}

    def put(self, service: object, kind: type[Any] | None = None) -> None:
        self._services[kind or type(service)] = service

    def get(self, kind: type[T]) -> T:
        try:
            return cast(T, self._services[kind])
        except KeyError:
            raise LookupError(
                f"no {kind.__name__} service in this process; is its component listed?"
            ) from None

    def find(self, kind: type[T]) -> T | None:
        return cast("T | None", self._services.get(kind))


@contextlib.asynccontextmanager
async def open_context(
    settings: Settings, components: Sequence[Component], role: Role, *, start_services: bool = True
) -> AsyncIterator[Context]:
    redis_url = settings.require("redis_url")
    database_url = settings.require("database_url")
    async with contextlib.AsyncExitStack() as stack:
        redis = create_redis(redis_url, pool_size=settings.redis_pool_size)
        stack.push_async_callback(redis.aclose)
        bound_s = settings.db_acquire_timeout_s
        # Only a request waits on the pool against a clock (kit/db.py); every process connects within it.
        db = await create_pool(
            database_url, size=settings.db_pool_size, connect_timeout_s=bound_s,
            acquire_timeout_s=bound_s if role == "api" else None,
        )  # fmt: skip
        stack.push_async_callback(db.close)
        await load_scripts(redis, [script for c in components for script in c.scripts])
        ctx = Context(settings, redis, db, components, role)
        if start_services:
            for component in components:
                for factory in component.services:
                    await stack.enter_async_context(factory(ctx, role))
        yield ctx


def context_of(request: Any) -> Context:
    """The process context from a Starlette request (put there by the lifespan).

    Read from the scope's state dict: ``request.state`` builds a State object per request, on every hot path."""
    return cast(Context, request.scope["state"]["ctx"])

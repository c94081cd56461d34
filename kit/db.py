"""The PostgreSQL pool."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Connection", "Pool", "create_pool"]

Pool = asyncpg.Pool
# What ``pool.acquire()`` yields and what ``asyncpg.connect()`` returns; functions take either.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


async def _init(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def create_pool(url: str, *, size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=size, init=_init, command_timeout=30, timeout=10
    )
    assert pool is not None
    return pool

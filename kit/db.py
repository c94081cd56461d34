"""The PostgreSQL pool, and what counts as PostgreSQL being out of reach.

Connecting is bounded (``PEAK_DB_ACQUIRE_TIMEOUT_S``), and so is, in an API process, the whole wait for a
connection (a free one from the pool, or a new one connected): while PostgreSQL is down, or too busy to free a
connection, a request that needs it fails within about that bound (a 503 through ``kit.errors``) instead of
queueing behind the pool. Background loops wait for a free connection as long as it takes: their own batches
hold the others, which is no outage.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from kit.errors import POSTGRES_OUTAGES

__all__ = ["Connection", "Pool", "create_pool", "postgres_outage"]

Pool = asyncpg.Pool
# What ``pool.acquire()`` yields and what ``asyncpg.connect()`` returns; functions take either.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

# A statement that runs longer is cancelled (client side): a half-open connection cannot hold a caller forever.
_COMMAND_TIMEOUT_S = 30


def postgres_outage(exc: BaseException) -> bool:
    """Whether PostgreSQL is out of reach or refusing work for now (down, restarting, shutting down, a
    connection cut mid-statement, no connection within the acquire timeout): nothing the statement's data is to
    blame for. The driver's own refusal of a value (an InterfaceError that is also a ValueError) is the data's."""
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        return False
    return isinstance(exc, POSTGRES_OUTAGES)


class _BoundedPool(asyncpg.Pool):
    """asyncpg's pool with a default acquire timeout: ``pool.fetch`` and the like acquire without one."""

    __slots__ = ("_acquire_timeout_s",)
    _acquire_timeout_s: float | None

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext[Any]:
        return super().acquire(timeout=self._acquire_timeout_s if timeout is None else timeout)

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 (asyncpg's)
        """asyncpg resets a connection as it goes back to the pool (one more round trip) and raises if that
        fails; the caller's work is done by then, a transaction committed. PostgreSQL going away at that moment
        made the order writer count a committed batch as failed and leave it queued (CI, test_pg_outage). The
        connection is terminated either way and the pool connects anew when needed: an outage here is not
        the caller's failure."""
        try:
            await super().release(connection, timeout=timeout)
        except Exception as exc:
            if not postgres_outage(exc):
                raise


async def _init(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def create_pool(
    url: str, *, size: int = 10, connect_timeout_s: float = 10.0, acquire_timeout_s: float | None = None
) -> asyncpg.Pool:
    # asyncpg.create_pool with the same arguments, building the subclass (create_pool has no class parameter).
    # No connection floor (min_size 0): asyncpg would restore it in the background while PostgreSQL is down,
    # logging a traceback at each try; the loops that need PostgreSQL say so once (kit/outage.py). The first
    # connection is made at once all the same, so that a wrong URL fails at start.
    pool = _BoundedPool(
        url, min_size=0, max_size=size, max_queries=50_000, max_inactive_connection_lifetime=300.0,
        init=_init, loop=asyncio.get_running_loop(), connection_class=asyncpg.Connection,
        record_class=asyncpg.Record, command_timeout=_COMMAND_TIMEOUT_S, timeout=connect_timeout_s,
    )  # fmt: skip
    pool._acquire_timeout_s = acquire_timeout_s
    await pool
    try:
        async with pool.acquire():
            pass
    except BaseException:
        await pool.close()
        raise
    return pool

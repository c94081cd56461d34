"""The script lane: Lua script calls to one Redis server, packed by hiredis and read on raw connections.

redis-py spends 80-90 µs of CPU on one EVALSHA (command packing, a timeout context per reply, the pool, the
response callbacks); the same call packed by hiredis, written on an asyncio stream and read by a hiredis
Reader costs 30-35 µs (dev VM, syscalls included). On the purchase and strict-validation paths that was the
largest single item of the API's CPU, so script calls go through here (``kit.lua.Script``). On a Redis Cluster each primary has its lane, chosen by the slot of the call's keys from
redis-py's slot map; a call answered with a redirection (MOVED, ASK, ...) or that cannot reach its node is
sent again through redis-py's cluster client, which follows redirections and refreshes the map.

redis-py still opens every connection (TCP or unix socket, TLS, AUTH, SELECT, CLIENT SETINFO), so the lane
connects exactly as the rest of the process does; then it speaks on the connection's streams itself
(redis-py's private ones: ``kit/redis_private.py``). A connection serves one call at a time (its commands
written together, their replies read in order) and goes back to the idle list afterwards. A call that fails
on the connection (refused, reset, closed, timed out) is tried again on a new connection, with the same
retries and backoff as the redis-py client: scripts that must not run twice protect themselves (the purchase
script keeps each call's answers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.backoff import AbstractBackoff, ExponentialBackoff
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from kit.redis_private import streams

__all__ = ["RETRIES", "Lane", "retry_backoff"]

# The process's retry policy for Redis calls, the lanes' and redis-py's alike (kit/redis.py).
RETRIES = 3


def retry_backoff() -> AbstractBackoff:
    """Exponential backoff from 40 ms, capped at half a second."""
    return ExponentialBackoff(cap=0.5, base=0.02)


# The error replies a caller of a script needs to tell apart, as redis-py names them.
_ERRORS: dict[str, type[ResponseError] | type[ConnectionError]] = {
    "NOSCRIPT": NoScriptError,
    "LOADING": BusyLoadingError,  # a ConnectionError: tried again, like redis-py does
    "READONLY": ReadOnlyError,
}
_READ_SIZE = 65536


def _error(message: str) -> Exception:
    kind = _ERRORS.get(message.split(" ", 1)[0], ResponseError)
    return kind(message)


class _Connection:
    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.reader, self.writer = streams(conn)
        self.replies = hiredis.Reader(encoding="utf-8", replyError=_error)
        self.used_at = time.monotonic()

    async def run(self, packed: bytes, count: int) -> list[Any]:
        self.writer.write(packed)
        replies: list[Any] = []
        gets, feed, read = self.replies.gets, self.replies.feed, self.reader.read
        while len(replies) < count:
            reply = gets()
            if reply is False:
                data = await read(_READ_SIZE)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                feed(data)
            elif isinstance(reply, ConnectionError):
                raise reply  # LOADING: this server cannot answer yet
            else:
                replies.append(reply)
        return replies


class Lane:
    """At most ``size`` connections made by ``new_connection`` (a redis-py connection, not yet connected,
    configured as the client's own); each call waits at most ``timeout_s``. A connection left idle for more
    than ``max_idle_s`` is closed rather than used: a firewall or NAT may have dropped it silently, and a call
    on it would wait for the whole timeout (redis-py PINGs such a connection first; a new one costs no more)."""

    def __init__(
        self,
        new_connection: Callable[[], AbstractConnection],
        *,
        size: int,
        timeout_s: float,
        max_idle_s: float = 30.0,
        retries: int = RETRIES,
    ) -> None:
        self._new_connection = new_connection
        self._max_idle_s = max_idle_s
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._permits = asyncio.Semaphore(size)
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff = retry_backoff()
        self._closed = False

    async def execute(self, packed: bytes, count: int) -> list[Any]:
        """Send ``count`` commands packed together; their replies in order, error replies as exceptions
        (``NoScriptError``, ``ResponseError``) in their place. Raises ConnectionError or TimeoutError when
        the server cannot be reached or does not answer in time, after the retries."""
        for failures in range(1, self._retries + 1):
            try:
                return await self._execute_once(packed, count)
            except (ConnectionError, TimeoutError):
                if self._closed:
                    raise
            # The same waits as redis-py's Retry gives the rest of the process's commands.
            await asyncio.sleep(self._backoff.compute(failures))
        return await self._execute_once(packed, count)

    async def _execute_once(self, packed: bytes, count: int) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._permits.acquire()
        except TimeoutError:
            raise ConnectionError(f"no free Redis connection within {self._timeout_s:g} s") from None
        try:
            connection = await self._take()
            try:
                async with asyncio.timeout(self._timeout_s):
                    replies = await connection.run(packed, count)
            except BaseException as exc:
                # Replies may be left unread on it: nobody else can use this connection.
                await self._discard(connection)
                if isinstance(exc, TimeoutError):
                    raise TimeoutError(f"Redis did not answer within {self._timeout_s:g} s") from None
                if isinstance(exc, OSError):
                    raise ConnectionError(f"Redis connection lost: {exc}") from exc
                raise
            connection.used_at = time.monotonic()
            self._idle.append(connection)
            return replies
        finally:
            self._permits.release()

    async def _take(self) -> _Connection:
        stale_before = time.monotonic() - self._max_idle_s
        while self._idle:
            connection = self._idle.pop()
            if connection.used_at >= stale_before:
                return connection
            await self._discard(connection)
        return await self._connect()

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the Redis lane is closed")
        conn = self._new_connection()
        # redis-py's errors on the way: ConnectionError, TimeoutError, AuthenticationError.
        await conn.connect()  # type: ignore[no-untyped-call]
        connection = _Connection(conn)
        self._open.add(connection)
        return connection

    async def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        await connection.conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        for connection in list(self._open):
            await self._discard(connection)

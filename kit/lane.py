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
import builtins
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
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from kit.redis_private import WritesRefused, streams

__all__ = ["RESEND_WINDOW_S", "RETRIES", "Lane", "TooLateToResend", "retry_backoff"]

# The process's retry policy for Redis calls, the lanes' and redis-py's alike (kit/redis.py).
RETRIES = 3
# A call is never sent again later than this after it was first sent: a script that answers a repeated call from
# what its first run kept (reserve.lua: for seckill.keys.REPLAY_MS, 30 s) must keep it longer than this. Without
# the bound, 3 more tries that each wait for a free connection (5 s), connect (5 s) and time out (5 s) could
# send the call again ~45 s after a first run whose answer was lost, and the script would run twice.
RESEND_WINDOW_S = 20.0


def retry_backoff() -> AbstractBackoff:
    """Exponential backoff from 40 ms, capped at half a second."""
    return ExponentialBackoff(cap=0.5, base=0.02)


# The error replies a caller of a script needs to tell apart, as redis-py names them.
_ERRORS: dict[str, type[ResponseError] | type[ConnectionError]] = {
    "NOSCRIPT": NoScriptError,
    "LOADING": BusyLoadingError,  # a ConnectionError: tried again, like redis-py does
    "READONLY": ReadOnlyError,
    # Writes refused (maxmemory reached with noeviction; a failing disk): an outage, not a fault of the call.
    "OOM": OutOfMemoryError,
    "MISCONF": WritesRefused,
}
_READ_SIZE = 65536


class TooLateToResend(TimeoutError):
    """A call that failed was not sent again: RESEND_WINDOW_S have passed since it was first sent."""


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
        resend_window_s: float = RESEND_WINDOW_S,
    ) -> None:
        self._new_connection = new_connection
        self._max_idle_s = max_idle_s
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._permits = asyncio.Semaphore(size)
        self._timeout_s = timeout_s
        self._retries = retries
        self._resend_window_s = resend_window_s
        self._backoff = retry_backoff()
        self._closed = False

    async def execute(self, packed: bytes, count: int) -> list[Any]:
        """Send ``count`` commands packed together; their replies in order, error replies as exceptions
        (``NoScriptError``, ``ResponseError``) in their place. Raises ConnectionError or TimeoutError when
        the server cannot be reached or does not answer in time, after the retries."""
        first_sent: list[float] = []  # when the call was first written, once it was
        for failures in range(1, self._retries + 1):
            try:
                return await self._execute_once(packed, count, first_sent)
            except (ConnectionError, TimeoutError) as exc:
                if self._closed or isinstance(exc, TooLateToResend):
                    raise
            # The same waits as redis-py's Retry gives the rest of the process's commands.
            await asyncio.sleep(self._backoff.compute(failures))
        return await self._execute_once(packed, count, first_sent)

    async def _execute_once(self, packed: bytes, count: int, first_sent: list[float]) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._permits.acquire()
        except builtins.TimeoutError:  # asyncio's; this module's TimeoutError is redis-py's
            raise ConnectionError(f"no free Redis connection within {self._timeout_s:g} s") from None
        try:
            connection = await self._take()
            if first_sent and time.monotonic() - first_sent[0] > self._resend_window_s:
                connection.used_at = time.monotonic()
                self._idle.append(connection)
                raise TooLateToResend(
                    f"not sent again: more than {self._resend_window_s:g} s since it was first sent"
                )
            if not first_sent:
                first_sent.append(time.monotonic())
            try:
                async with asyncio.timeout(self._timeout_s):
                    replies = await connection.run(packed, count)
            except BaseException as exc:
                # Replies may be left unread on it: nobody else can use this connection.
                await self._discard(connection)
                if isinstance(exc, (TimeoutError, builtins.TimeoutError)):
                    raise TimeoutError(f"Redis did not answer within {self._timeout_s:g} s") from None
                if isinstance(exc, OSError):
                    raise ConnectionError(f"Redis connection lost: {exc}") from exc
                if isinstance(exc, RuntimeError) and connection.writer.transport.is_closing():
                    # uvloop's answer to a write on a connection the server reset (asyncio's loop says nothing).
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

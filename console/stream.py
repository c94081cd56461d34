"""One console's server-sent events: ``retry``, the hub's snapshot and changes, a ping every 15 s, and the
caller's credential checked again every PEAK_CONSOLE_SESSION_CHECK_S (a logged-out or demoted admin's stream
ends with an ``end`` event naming why).

Three tasks per stream: the writer (it may block on a client that does not read), a watcher of the client's
disconnect, and the request's own task, which waits until one of them, or the hub (a queue overflowing, the
process stopping), closes the subscriber, then cancels the other two: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from console.hub import Hub, Subscriber, sse
from kit.errors import STORE_OUTAGES, ApiError, ServiceUnavailable

__all__ = ["PING_S", "EventStream"]

PING_S = 15.0
_RETRY = b"retry: 2000\n\n"
_PING = b": ping\n\n"
_FINAL_SEND_S = 1.0
# The session store cannot tell: the stream goes on.
_UNDECIDED: tuple[type[BaseException], ...] = (ServiceUnavailable, *STORE_OUTAGES)

# Checks the caller again: raises what the authorizer raises.
Recheck = Callable[[], Awaitable[object]]


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, hub: Hub, sub: Subscriber, recheck: Recheck, *, check_s: float) -> None:
        self.hub = hub
        self.sub = sub
        self.recheck = recheck
        self.check_s = check_s
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        writer = asyncio.create_task(self._write(send), name="console.stream.writer")
        watcher = asyncio.create_task(self._watch(receive), name="console.stream.watcher")
        try:
            await sub.done.wait()
        finally:
            self.hub.leave(sub)
            writer.cancel()
            watcher.cancel()
            await asyncio.gather(writer, watcher, return_exceptions=True)
        if sub.closed != "gone":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(send({"type": "http.response.body", "body": b""}), _FINAL_SEND_S)

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.sub.close("gone")
                return

    async def _write(self, send: Send) -> None:
        sub = self.sub
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": _RETRY, "more_body": True})
            now = time.monotonic()
            next_ping, next_check = now + PING_S, now + self.check_s
            while not sub.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        sub.wake.wait(), max(0.0, min(next_ping, next_check) - time.monotonic())
                    )
                sub.wake.clear()
                while sub.pending and not sub.closed:
                    await send(
                        {"type": "http.response.body", "body": sub.pending.popleft(), "more_body": True}
                    )
                now = time.monotonic()
                if now >= next_ping:
                    next_ping = now + PING_S
                    await send({"type": "http.response.body", "body": _PING, "more_body": True})
                if now >= next_check and not sub.closed:
                    next_check = now + self.check_s
                    ended = await self._still_allowed()
                    if ended is not None:
                        await send({"type": "http.response.body", "body": ended, "more_body": True})
                        sub.close("ended")
                        return
        except Exception:  # noqa: S110  # the client is gone or stuck: the stream ends either way
            pass
        finally:
            sub.close(sub.closed or "gone")

    async def _still_allowed(self) -> bytes | None:
        """None while the credential still holds (or the session store cannot tell: the stream goes on); the
        ``end`` event otherwise."""
        try:
            await self.recheck()
        except _UNDECIDED:
            return None
        except ApiError as exc:
            return sse("end", {"code": exc.code, "message": exc.message, "status": exc.status_code})
        return None

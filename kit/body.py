"""Request bodies bounded in size and in time, before anything of them is buffered.

The request middleware refuses a declared ``Content-Length`` over the cap before the app runs, and hands the
app a ``receive`` that counts what arrives (a chunked body has no length to check up front) and gives the
whole body a deadline: a client trickling its body in (slowloris) holds a request for at most
``PEAK_BODY_READ_TIMEOUT_S``. Both raise kit errors (413 ``body_too_large``, 408 ``request_timeout``) from
``receive``, so they reach the client through the route's error rendering like any other.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive

from kit.errors import BodyTooLarge, RequestTimeout

__all__ = ["LimitedReceive", "too_large"]


def too_large(max_bytes: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is over {max_bytes} bytes")


class LimitedReceive:
    """``receive`` for a request that may carry a body: at most ``max_bytes``, all of it within ``timeout_s``
    of the first read. Messages after the body (a disconnect) pass through untouched."""

    __slots__ = ("_deadline", "_done", "_max_bytes", "_receive", "_received", "_timeout_s")

    def __init__(self, receive: Receive, max_bytes: int, timeout_s: float) -> None:
        self._receive = receive
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._deadline = 0.0
        self._received = 0
        self._done = False

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()
        if not self._deadline:
            self._deadline = asyncio.get_running_loop().time() + self._timeout_s
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            self._done = True
            raise RequestTimeout(f"the request body did not arrive within {self._timeout_s:g} s") from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._max_bytes:
                self._done = True
                raise too_large(self._max_bytes)
            if not message.get("more_body", False):
                self._done = True
        else:
            self._done = True
        return message

"""The request middleware: request id, errors as JSON bodies, one access-log line and the metrics.

The access line is a tuple queued for kit/access_log.py's writer thread (~0.4 us on the request path instead of the
~16 us of a ``Logger.info``); the lifespan's shutdown writes out what is still queued.

It is the outermost layer and the one place where exceptions become responses (instead of Starlette's
ServerErrorMiddleware and ExceptionMiddleware: each layer costs every request a few microseconds, and every
await of a hot path pays for each layer again when it resumes). Pure ASGI for the same reason.

Its send wrapper is the one that notes the response status, in the scope (``STATUS_KEY``): the middleware of
components, which the app places inside this one, read it there once the app has answered instead of wrapping
``send`` again. A second wrapper cost each core request 0.3 us (a two-layer stack in-process: 1.6 against
1.3 us, CPython 3.11).

It also bounds request bodies (``kit/body.py``): a declared length over ``PEAK_MAX_BODY_BYTES`` is answered 413
before the app runs (and before the components' middleware, so it is no sample for the degradation
controller); any other request that may carry a body gets a ``receive`` that counts it and cuts it off at the
cap or after ``PEAK_BODY_READ_TIMEOUT_S`` (408). A request without a body (no length, not chunked, HTTP/1)
keeps the server's ``receive``: a purchase pays only for the header scan (~0.1 us in-process).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import secrets
import time

from prometheus_client import Counter, Histogram
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.access_log import access
from kit.body import LimitedReceive, too_large
from kit.errors import STORE_OUTAGES, ApiError, error_body, error_response
from kit.metrics import REQUEST_SECONDS, REQUESTS
from kit.responses import dumps

__all__ = ["CLIENT_GONE", "STATUS_KEY", "RequestMiddleware"]

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_INTERNAL = dumps(error_body("internal_error", "an unexpected error occurred; it has been logged"))
log = logging.getLogger("peak")
# Request ids unique across processes without a syscall per request (uuid4 cost ~4 us on the floor path).
_ID_PREFIX = secrets.token_hex(8).encode()
_ID_COUNTER = itertools.count(1)
# Metric labels come from this set: a client inventing methods must not invent time series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_READ_HEADERS = frozenset((b"x-request-id", b"content-length", b"transfer-encoding"))
# The status noted for a client that disconnected before an answer (nginx's convention).
CLIENT_GONE = 499
# The scope key of the status of the response started so far; absent while none has started.
STATUS_KEY = "peak.status"


@functools.cache
def _metrics(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    # labels() takes a lock and builds a key on every call; the children never change, so look them up once.
    return REQUESTS.labels(method, route, str(status)), REQUEST_SECONDS.labels(method, route)


def _flush_at_shutdown(send: Send) -> Send:
    """The lifespan's ``send``, writing the queued access lines out before the server hears the app is done
    (granian's workers leave with ``os._exit``: no atexit handler runs)."""

    async def lifespan_send(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            access.stop()
        await send(message)

    return lifespan_send


class RequestMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int = 65536, body_read_timeout_s: float = 10.0
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout_s = body_read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, _flush_at_shutdown(send) if scope["type"] == "lifespan" else send)
            return
        start = time.perf_counter()
        request_id = b""
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            # One set look-up per header rather than three comparisons (0.2 against 0.1 us for four headers).
            if name in _READ_HEADERS:
                if name == b"x-request-id":
                    if not request_id and _SAFE_ID.match(value):
                        request_id = value
                elif name == b"content-length":
                    if length is None:
                        length = value
                else:
                    chunked = True
        if not request_id:
            request_id = b"%s%x" % (_ID_PREFIX, next(_ID_COUNTER))
        scope["request_id"] = request_id.decode()
        refused: ApiError | None = None
        if length is None:
            # HTTP/1.1 without a length has a body only when chunked; HTTP/2 may send one either way. Only
            # counting what arrives can bound those.
            if chunked or scope.get("http_version") == "2":
                receive = LimitedReceive(receive, self.max_body_bytes, self.body_read_timeout_s)
        elif length != b"0":
            if length.isdigit() and (len(length) > 18 or int(length) > self.max_body_bytes):
                refused = too_large(self.max_body_bytes)
            else:
                # A malformed length is the server's to refuse; what arrives is counted all the same.
                receive = LimitedReceive(receive, self.max_body_bytes, self.body_read_timeout_s)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                scope[STATUS_KEY] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            if refused is not None:
                raise refused
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # Gone before its body was in: no one to answer, and no failure of ours (nor a 500 the
            # degradation controller would count against the core).
            scope.setdefault(STATUS_KEY, CLIENT_GONE)
        except Exception as exc:
            answer = error_response(exc)
            if isinstance(exc, STORE_OUTAGES):
                log.warning(
                    "store unreachable on %s %s [%s]: %r",
                    scope["method"],
                    scope["path"],
                    scope["request_id"],
                    exc,
                )
            started = STATUS_KEY in scope
            if answer is not None and not started:
                await answer(scope, receive, send_with_id)
                return
            # Logged once here with the request id; the client gets a body without details.
            log.exception(
                "unhandled error on %s %s [%s]", scope["method"], scope["path"], scope["request_id"]
            )
            if not started:
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(_INTERNAL)),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _INTERNAL})
            scope[STATUS_KEY] = 500
        finally:
            status: int = scope.get(STATUS_KEY, 0)
            elapsed = time.perf_counter() - start
            matched = scope.get("route")
            route = matched.path if matched is not None else "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            counter, histogram = _metrics(method, route, status)
            counter.inc()
            histogram.observe(elapsed)
            if access.enabled:
                access.add(method, route, status, elapsed, scope["request_id"])

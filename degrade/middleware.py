"""The degradation middleware: on every request, a dict lookup on in-memory state, no Redis, no extra await.

It maps the request to its subsystem by the first path segment, counts in-flight requests, times core
requests for the controller (what counts and what not: ``degrade/signals.py``), and for a shed subsystem
either lets the matched route serve its fallback (the endpoint is marked with ``degrade.client.fallback`` and
sees ``degrade.client.shed_name(request)``) or answers 503 ``degraded`` itself. Every response of a shed subsystem carries ``X-Degraded: <name>``.
A subsystem in ``partial`` mode is shed for the users whose bucket (``degrade/sticky.py``) is below its
percent; the others pass as if it were open. The lookup is the same one either way: ``board.shed[name]`` is 0
while open, so a board with nothing partial costs what it did before. Shed answers are counted in
``board.shed_answers`` on the shed path.

It runs inside the kit's request middleware and reads the status of a core answer where that one's send
wrapper notes it (``kit.middleware.STATUS_KEY``), rather than wrapping ``send`` a second time.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from degrade.board import Board
from degrade.errors import Degraded
from degrade.settings import DegradeSettings
from degrade.signals import BUCKET_CAP, BodyWait, Signals, status_of
from degrade.sticky import bucket
from kit.body import LimitedReceive
from kit.errors import error_body
from kit.middleware import STATUS_KEY
from kit.parking import PARKED_S_KEY, PARKING_KEY
from kit.responses import JSONResponse

__all__ = ["SHED_KEY", "DegradeMiddleware"]

SHED_KEY = "peak.degraded"
FALLBACK_ATTR = "degrade_fallback"
_clock = time.perf_counter


class DegradeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._parts: tuple[Board, Signals] | None = None
        self._retry_after_s = 0

    def _bind(self, scope: Scope) -> tuple[Board, Signals] | None:
        ctx = scope.get("state", {}).get("ctx")
        if ctx is None:
            return None
        board, signals = ctx.find(Board), ctx.find(Signals)
        if board is None or signals is None:
            return None
        if "request_id" not in scope:
            # Without the request middleware no status is noted: every core answer would count as a 5xx.
            raise RuntimeError("DegradeMiddleware must run inside kit.middleware.RequestMiddleware")
        self._retry_after_s = ctx.settings.of(DegradeSettings).retry_after_s
        self._parts = (board, signals)
        return self._parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts = self._parts or self._bind(scope)
        if parts is None:
            await self.app(scope, receive, send)
            return
        board, signals = parts
        path: str = scope["path"]
        end = path.find("/", 1)
        name = board.prefixes.get(path[1:end] if end > 0 else path[1:])
        if name is not None:
            share = board.shed[name]
            if share and (share >= 100 or bucket(scope) < share):
                await self._shed(board, name, scope, receive, send)
                return
        signals.inflight += 1
        scope[PARKING_KEY] = signals
        # The kit bounds a body that may still arrive with its own receive; none: no body to wait for.
        body = BodyWait(receive, signals) if type(receive) is LimitedReceive else None
        if name is None or name not in board.core:
            try:
                await self.app(scope, receive if body is None else body, send)
            finally:
                signals.inflight -= 1
            return
        start = _clock()
        status = 0
        try:
            await self.app(scope, receive if body is None else body, send)
        except BaseException as exc:
            # Not rendered yet (the request middleware will): what it stands for, not a 500 for any of them.
            status = status_of(exc)
            raise
        finally:
            signals.inflight -= 1
            # signals.record, inlined: this is the seckill purchase path. Client errors are no sample.
            if not status:
                status = scope.get(STATUS_KEY, 500)
            if not 400 <= status < 500:
                signals.calls += 1
                if status >= 500:
                    signals.errors += 1
                elapsed = (
                    _clock() - start - (0.0 if body is None else body.waited_s) - scope.get(PARKED_S_KEY, 0.0)
                )
                if len(signals.latencies) < BUCKET_CAP:
                    signals.latencies.append(elapsed)
                else:
                    signals.record_overflow(elapsed)

    async def _shed(self, board: Board, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        board.shed_answers[name] += 1
        route = board.route_for(name, scope)
        endpoint = getattr(route, "endpoint", None)
        header = (b"x-degraded", name.encode())
        if endpoint is not None and getattr(endpoint, FALLBACK_ATTR, False):
            scope[SHED_KEY] = name

            async def send_marked(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), header]
                await send(message)

            await self.app(scope, receive, send_marked)
            return
        if route is not None:
            # The router never saw this request: name its route for the metrics (per-subsystem rates).
            scope["route"] = route
        error = Degraded(name, retry_after_s=self._retry_after_s)
        response = JSONResponse(
            error_body(error.code, error.message),
            status_code=error.status_code,
            headers={**error.headers, "X-Degraded": name},
        )
        await response(scope, receive, send)

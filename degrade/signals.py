"""What the middleware measures on every request and the sampler reads once per interval.

The request side only bumps counters and appends to a list (no lock, no await: one event loop per process);
the sampler rolls the current bucket into a sliding window of buckets.

Only what the server decides counts. A core answer is a latency sample and a call of the error ratio unless it
is a 4xx: a client error (401, 404, 422, ...), a body cut off by the kit (408 too slow, 413 too large) or a
client gone (499, a disconnect) says nothing about the core's health, and a flood of them must neither push
the p99 or the ratio up (the controller would shed for an attacker) nor dilute them (it would miss a real
overload). A 5xx is an error.

Waiting for a request body is the client's time too: a slow client (slowloris) must not look like a busy
server. While a request waits for its body it is not in flight, and the wait is not part of its latency
(``BodyWait``). A request parked on purpose (``kit.parking``: a long poll waiting for news) is neither in
flight nor slow while it waits.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from kit.errors import ApiError
from kit.middleware import CLIENT_GONE

__all__ = ["BUCKET_CAP", "BodyWait", "Sample", "Signals", "status_of"]

# Latencies kept per bucket; beyond this a bucket keeps a uniform sample, which is plenty for a p99.
BUCKET_CAP = 4096


def status_of(exc: BaseException) -> int:
    """The status an exception escaping the app stands for: a kit error's own, 499 for a client gone (a
    disconnect, a cancelled request), 500 for anything else (a failure of the server)."""
    if isinstance(exc, ApiError | HTTPException):
        return exc.status_code
    if isinstance(exc, ClientDisconnect | asyncio.CancelledError):
        return CLIENT_GONE
    return 500


@dataclass(frozen=True)
class Sample:
    at: float
    inflight: int
    p99_ms: float
    lag_ms: float
    cpu: float
    error_ratio: float
    core_calls: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["p99_ms"] = round(self.p99_ms, 3)
        d["lag_ms"] = round(self.lag_ms, 3)
        d["cpu"] = round(self.cpu, 3)
        d["error_ratio"] = round(self.error_ratio, 4)
        return d


class Signals:
    def __init__(self, window_buckets: int) -> None:
        self.inflight = 0
        # Of those in flight: waiting for the client to send (the rest of) its body.
        self.awaiting_body = 0
        # Requests parked on purpose (kit.parking: a long poll); Signals is their ``Parking``.
        self.parked = 0
        self.latencies: list[float] = []
        self.calls = 0
        self.errors = 0
        self._window: collections.deque[tuple[list[float], int, int]] = collections.deque(
            maxlen=max(1, window_buckets)
        )
        self._cpu_at = (time.monotonic(), time.process_time())
        self.last: Sample | None = None

    def record_overflow(self, seconds: float) -> None:
        """A latency beyond the bucket's capacity replaces a random one (reservoir sampling)."""
        slot = random.randrange(self.calls)
        if slot < BUCKET_CAP:
            self.latencies[slot] = seconds

    def roll(self, lag_s: float, *, min_calls: int) -> Sample:
        self._window.append((self.latencies, self.calls, self.errors))
        self.latencies, self.calls, self.errors = [], 0, 0
        calls = sum(c for _, c, _ in self._window)
        errors = sum(e for _, _, e in self._window)
        p99 = 0.0
        ratio = 0.0
        if calls >= min_calls:
            merged = sorted(x for bucket, _, _ in self._window for x in bucket)
            p99 = merged[min(len(merged) - 1, math.ceil(0.99 * len(merged)) - 1)] if merged else 0.0
            ratio = errors / calls
        wall, cpu = time.monotonic(), time.process_time()
        spent = (cpu - self._cpu_at[1]) / max(wall - self._cpu_at[0], 1e-6)
        self._cpu_at = (wall, cpu)
        self.last = Sample(
            at=time.time(),
            inflight=self.inflight - self.awaiting_body - self.parked,
            p99_ms=p99 * 1000,
            lag_ms=max(0.0, lag_s) * 1000,
            cpu=spent,
            error_ratio=ratio,
            core_calls=calls,
        )
        return self.last


class BodyWait:
    """``receive`` of a request whose body may still be arriving: while the app waits for it, the request
    counts as awaiting its body, and the time waited (``waited_s``) is taken off its latency sample."""

    __slots__ = ("_done", "_receive", "_signals", "waited_s")

    def __init__(self, receive: Receive, signals: Signals) -> None:
        self._receive = receive
        self._signals = signals
        self._done = False
        self.waited_s = 0.0

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()
        signals = self._signals
        signals.awaiting_body += 1
        start = time.perf_counter()
        try:
            message = await self._receive()
        except BaseException:
            self._done = True
            raise
        finally:
            signals.awaiting_body -= 1
            self.waited_s += time.perf_counter() - start
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._done = True
        return message

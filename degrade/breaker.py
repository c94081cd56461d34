"""A circuit breaker for outbound calls (JWKS fetch, any HTTP dependency): closed, open, half-open.

Closed: calls pass; over a sliding window of ``window_s`` it trips to open when at least ``min_calls`` calls
finished and either the failed-call ratio reaches ``error_ratio`` or the slow-call ratio (slower than
``slow_call_s``) reaches ``slow_ratio``. Open: calls fail fast with ``BreakerOpen`` for ``open_s``. Half-open:
exactly ``half_open_probes`` calls are let through; all succeeding (and not slow) closes it, any failing opens
it again. A probe that is cancelled gives its slot back, so the breaker cannot stay half-open forever.

    breaker = ctx.get(Breakers).get("jwks")
    async with breaker.guard():
        keys = await fetch_jwks()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from degrade.settings import DegradeSettings
from kit.errors import ServiceUnavailable

__all__ = ["Breaker", "BreakerConfig", "BreakerOpen", "Breakers"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class BreakerOpen(ServiceUnavailable):
    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(
            f"{name} is failing; calls to it are paused for a moment",
            retry_after_s=max(1, int(retry_after_s + 0.999)),
            code="circuit_open",
        )
        self.name = name


@dataclass(frozen=True)
class BreakerConfig:
    error_ratio: float = 0.5
    slow_ratio: float = 0.5
    slow_call_s: float = 1.0
    min_calls: int = 5
    window_s: float = 10.0
    open_s: float = 5.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if not (0 < self.error_ratio <= 1 and 0 < self.slow_ratio <= 1):
            raise ValueError("error_ratio and slow_ratio must be in (0, 1]")
        if self.min_calls < 1 or self.half_open_probes < 1:
            raise ValueError("min_calls and half_open_probes must be at least 1")
        if self.window_s <= 0 or self.open_s <= 0 or self.slow_call_s <= 0:
            raise ValueError("window_s, open_s and slow_call_s must be positive")

    @classmethod
    def from_settings(cls, s: DegradeSettings) -> BreakerConfig:
        return cls(
            error_ratio=s.breaker_error_ratio,
            slow_ratio=s.breaker_slow_ratio,
            slow_call_s=s.breaker_slow_ms / 1000,
            min_calls=s.breaker_min_calls,
            window_s=s.breaker_window_s,
            open_s=s.breaker_open_s,
            half_open_probes=s.breaker_probes,
        )


class Breaker:
    def __init__(
        self, name: str, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state = CLOSED
        self._opened_at = 0.0
        # (finished at, failed, slow) of calls finished while closed, oldest first.
        self._calls: collections.deque[tuple[float, bool, bool]] = collections.deque()
        self._probes_started = 0
        self._probes_passed = 0
        self.trips = 0
        self.rejected = 0
        self.last_trip_reason = ""

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.config.open_s:
            self._state = HALF_OPEN
            self._probes_started = self._probes_passed = 0
        return self._state

    def reconfigure(self, config: BreakerConfig) -> None:
        """New thresholds; the state, the open timer and the recorded calls are kept."""
        self.config = config
        if self.state == CLOSED:
            self._trip_if_due()

    def acquire(self) -> None:
        """Ask to make a call: returns, or raises BreakerOpen. Every acquire must be followed by one record."""
        state = self.state
        if state == OPEN:
            self.rejected += 1
            raise BreakerOpen(self.name, self.config.open_s - (self._clock() - self._opened_at))
        if state == HALF_OPEN:
            if self._probes_started >= self.config.half_open_probes:
                self.rejected += 1
                raise BreakerOpen(self.name, self.config.open_s)
            self._probes_started += 1

    def record(self, *, failed: bool, duration_s: float) -> None:
        slow = duration_s >= self.config.slow_call_s
        now = self._clock()
        if self._state == HALF_OPEN:
            if failed or slow:
                self._open(f"half-open probe {'failed' if failed else 'was slow'}")
                return
            self._probes_passed += 1
            if self._probes_passed >= self.config.half_open_probes:
                self._state = CLOSED
                self._calls.clear()
            return
        if self._state == OPEN:
            return  # a call started before the trip; the verdict is already in
        self._calls.append((now, failed, slow))
        self._trip_if_due()

    def release(self) -> None:
        """A call that ended without a verdict (cancelled): a half-open probe slot becomes free again."""
        if self._state == HALF_OPEN and self._probes_started > self._probes_passed:
            self._probes_started -= 1

    @contextlib.asynccontextmanager
    async def guard(self, *, failure: tuple[type[BaseException], ...] = (Exception,)) -> AsyncIterator[None]:
        self.acquire()
        start = self._clock()
        try:
            yield
        except asyncio.CancelledError:
            self.release()
            raise
        except failure:
            self.record(failed=True, duration_s=self._clock() - start)
            raise
        except BaseException:
            self.release()
            raise
        self.record(failed=False, duration_s=self._clock() - start)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async with self.guard():
            return await fn(*args, **kwargs)

    def _trip_if_due(self) -> None:
        cfg = self.config
        horizon = self._clock() - cfg.window_s
        while self._calls and self._calls[0][0] < horizon:
            self._calls.popleft()
        n = len(self._calls)
        if n < cfg.min_calls:
            return
        failed = sum(1 for _, f, _ in self._calls if f)
        slow = sum(1 for _, _, s in self._calls if s)
        if failed / n >= cfg.error_ratio:
            self._open(f"{failed} of {n} calls failed")
        elif slow / n >= cfg.slow_ratio:
            self._open(f"{slow} of {n} calls were slower than {cfg.slow_call_s:g} s")

    def _open(self, reason: str) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._calls.clear()
        self.trips += 1
        self.last_trip_reason = reason

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "trips": self.trips,
            "rejected": self.rejected,
            "last_trip_reason": self.last_trip_reason or None,
            "config": dataclasses.asdict(self.config),
        }


class Breakers:
    """The breakers of one process by name, created on first use with the configured defaults."""

    def __init__(self, default: BreakerConfig) -> None:
        self.default = default
        self._breakers: dict[str, Breaker] = {}

    def get(self, name: str, config: BreakerConfig | None = None) -> Breaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = Breaker(name, config or self.default)
        elif config is not None and config != breaker.config:
            breaker.reconfigure(config)
        return breaker

    def status(self) -> dict[str, Any]:
        return {name: b.status() for name, b in sorted(self._breakers.items())}

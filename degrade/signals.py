"""What the middleware measures on every request and the sampler reads once per interval.

The request side only bumps counters and appends to a list (no lock, no await: one event loop per process);
the sampler rolls the current bucket into a sliding window of buckets.
"""

from __future__ import annotations

import collections
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BUCKET_CAP", "Sample", "Signals"]

# Latencies kept per bucket; beyond this a bucket keeps a uniform sample, which is plenty for a p99.
BUCKET_CAP = 4096


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
            inflight=self.inflight,
            p99_ms=p99 * 1000,
            lag_ms=max(0.0, lag_s) * 1000,
            cpu=spent,
            error_ratio=ratio,
            core_calls=calls,
        )
        return self.last

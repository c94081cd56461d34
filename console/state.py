"""What a running hub knows: the last of each panel it sent, so a console that joins gets a snapshot consistent
with the changes that follow it (one task writes it; every stream reads the same)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from console.sources import AUDIT_SNAPSHOT, SERIES_MINUTES

__all__ = ["HubState"]

# The signals kept in memory are trimmed this often (points older than the last hour leave).
_TRIM_EVERY_S = 10.0


@dataclass
class HubState:
    stopped: bool = False
    version: int = -1
    redis_failed: bool = False
    switches: dict[str, Any] | None = None
    plans: list[dict[str, Any]] | None = None
    # Newest first, the last AUDIT_SNAPSHOT entries.
    audit: list[dict[str, Any]] = field(default_factory=list)
    audit_last: str | None = None
    series: dict[str, Any] | None = None
    series_last: str | None = None
    breakers: list[dict[str, Any]] | None = None
    feed_values: dict[str, Any] = field(default_factory=dict)
    # Set once the first reading is in; ``poll_now`` asks the Redis reader to read at once.
    redis_read: asyncio.Event = field(default_factory=asyncio.Event)
    feeds_read: asyncio.Event = field(default_factory=asyncio.Event)
    poll_now: asyncio.Event = field(default_factory=asyncio.Event)
    _trimmed_at: float = 0.0

    def add_audit(self, newest_first: list[dict[str, Any]]) -> None:
        self.audit = (newest_first + self.audit)[:AUDIT_SNAPSHOT]
        self.audit_last = newest_first[0]["id"]

    def add_series(self, delta: dict[str, Any]) -> None:
        """Appends a ``read(after=...)`` body. A subsystem point of the interval the last one already covers
        (processes that wrote after the last read) adds to it: the points are sums across processes."""
        if delta.get("last_id"):
            self.series_last = delta["last_id"]
        if self.series is None:
            self.series = delta
            return
        processes = self.series.setdefault("processes", {})
        for pid, points in (delta.get("processes") or {}).items():
            processes.setdefault(pid, []).extend(points)
        subsystems = self.series.setdefault("subsystems", {})
        for name, points in (delta.get("subsystems") or {}).items():
            known: list[list[float]] = subsystems.setdefault(name, [])
            for point in points:
                if known and point and known[-1] and known[-1][0] == point[0]:
                    known[-1] = [
                        known[-1][0],
                        *(_add(a, b) for a, b in zip(known[-1][1:], point[1:], strict=False)),
                    ]
                else:
                    known.append(point)
        self.series["last_id"] = self.series_last
        self._trim()

    def _trim(self) -> None:
        now = time.time()
        if now - self._trimmed_at < _TRIM_EVERY_S or self.series is None:
            return
        self._trimmed_at = now
        oldest_ms = (now - SERIES_MINUTES * 60) * 1000
        for group in ("processes", "subsystems"):
            table: dict[str, list[list[float]]] = self.series.get(group) or {}
            for name in list(table):
                kept = [p for p in table[name] if p and p[0] >= oldest_ms]
                if kept:
                    table[name] = kept
                else:
                    del table[name]

    def snapshot(self, feeds: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "switches": self.switches,
            "plans": self.plans or [],
            "audit": self.audit,
            "series": self.series,
            "breakers": self.breakers or [],
            "processes": [b["process"] for b in self.breakers or []],
            "server_time_ms": int(time.time() * 1000),
        }
        for name in feeds:
            body[name] = self.feed_values.get(name)
        return body


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    return b

"""What a `peak bench` run is asked for (its command line, see loadtest/cli.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchOptions"]


@dataclass(frozen=True)
class BenchOptions:
    duration_s: float = 10.0
    connections: int = 64
    paths: Sequence[str] = ()
    url: str | None = None
    workers: int | None = None
    users: int = 600
    json_path: Path = Path("bench-results.json")
    # Masters of the private Redis Cluster of the second stack (0: no cluster run).
    redis_cluster: int = 0
    # Replicas per master of that cluster (purchases then wait for one: PEAK_SECKILL_DURABILITY).
    redis_replicas: int = 0
    # Stock buckets of the bucketed event measured on the cluster.
    buckets: int = 3
    # Times every path of the main stack is measured (medians are reported).
    rounds: int = 1

    @property
    def inproc_requests(self) -> int:
        """Requests per chunk of the in-process comparisons (loadtest/inproc.py): they scale with --duration
        like the paths do, 20,000 at the default 10 s (a smoke run of 1 s spent 15 s on 20,000)."""
        return max(1_000, round(2_000 * self.duration_s))

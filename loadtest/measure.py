"""One path measured under wrk: its rate and latencies, and on a private stack where the CPU went.

``Result`` is one row of the table and of the JSON.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis

from devstack.redis import RedisClusterServer
from devstack.up import LocalStack
from loadtest import cpu
from loadtest.options import BenchOptions
from loadtest.paths import BenchPath, Seed
from loadtest.wrk_runner import parse_wrk, run_wrk, write_lines

__all__ = ["Result", "measure", "settle_postgres"]


@dataclass
class Result:
    path: str
    what: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    statuses: dict[int, int]
    expected: list[int]
    ratio: float | None = None
    note: str = ""
    # For the purchase on the single Redis: what the Redis primary spent (see redis_cost).
    redis: dict[str, float] = field(default_factory=dict)
    # On a private stack: microseconds of CPU per request by part of the stack (see loadtest/cpu.py).
    cpu_us: dict[str, float] = field(default_factory=dict)
    # The floor's machine CPU per request over this path's (see cpu_ratios).
    cpu_ratio: float | None = None
    # The API processes' CPU per request of this path over theirs per floor request (see cpu_ratios).
    api_cpu_ratio: float | None = None

    @property
    def unexpected(self) -> int:
        return sum(n for code, n in self.statuses.items() if code not in self.expected)


def stack_parts(stack: LocalStack | None) -> dict[int, str]:
    """The root process of each part of a private stack, for loadtest/cpu.py (empty for --url)."""
    if stack is None:
        return {}
    parts = {p.pid: "api" for p in stack.servers} | {p.pid: "workers" for p in stack.workers}
    if isinstance(stack.redis, RedisClusterServer):
        parts |= {p.pid: "redis" for p in stack.redis.procs}
    elif stack.redis is not None and stack.redis.proc is not None:
        parts[stack.redis.proc.pid] = "redis"
    if stack.postgres is not None and stack.postgres.proc is not None:
        parts[stack.postgres.proc.pid] = "postgres"
    if stack.nginx is not None and stack.nginx.proc is not None:
        parts[stack.nginx.proc.pid] = "nginx"
    return parts


def measure(
    path: BenchPath,
    seed: Seed,
    folder: Path,
    options: BenchOptions,
    *,
    stack: LocalStack | None = None,
    redis_url: str | None = None,
) -> Result:
    """One path under wrk. On a private stack (``stack``), PostgreSQL is settled first (see ``settle``) and
    the CPU each part of the stack spent is measured too."""
    settle(stack)
    parts = stack_parts(stack)
    requests_file = write_lines(path.lines(seed), folder, path.name)
    # A second of warm-up, not counted: connections, caches and the coalescing settle first.
    if path.warm_up:
        run_wrk(seed.base_url, requests_file, duration_s=1, connections=options.connections)
    if redis_url is not None:
        with redis.Redis.from_url(redis_url) as r:
            r.config_resetstat()
            cpu_before = _redis_cpu(r)
    usage = cpu.snapshot(parts)
    output = run_wrk(
        seed.base_url, requests_file, duration_s=options.duration_s, connections=options.connections
    )
    usage_after = cpu.snapshot(parts)
    rps, p50, p99, total, statuses = parse_wrk(output)
    result = Result(path.name, path.what, rps, p50, p99, total, statuses, list(path.expected))
    if parts:
        result.cpu_us = cpu.cost_per_request(usage, usage_after, total)
    if redis_url is not None:
        result.redis = redis_cost(redis_url, cpu_before, statuses.get(202, 0), options.duration_s)
    return result


async def _settle(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("VACUUM (ANALYZE) seckill_orders")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def settle(stack: LocalStack | None) -> None:
    """Let PostgreSQL finish the background work a path's orders left (vacuum and statistics of the orders
    table, dirty pages to write) before the next path is measured, instead of autovacuum and the checkpointer
    doing it during that path. Measured: after the order backlog of the paused-workers path it cost the sold-out
    path that followed, and the floor after that, 2 us of PostgreSQL CPU per request (about 4 % of their rps).
    Only for a private stack: a server given by --url is measured as it is."""
    if stack is not None and stack.settings.database_url:
        settle_postgres(stack.settings.database_url)


def settle_postgres(database_url: str) -> None:
    asyncio.run(_settle(database_url))


def _redis_cpu(r: redis.Redis) -> float:
    info: Any = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_cost(url: str, cpu_before: float, purchases: int, duration_s: float) -> dict[str, float]:
    """What one Redis primary spent on the purchases: script calls (EVALSHA, after coalescing), the time
    spent inside them per call and per purchase, and the primary's CPU over the run. A primary runs one script
    at a time, so 1e6 / usec_per_purchase is the most purchases per second one shard can take."""
    with redis.Redis.from_url(url) as r:
        cpu = _redis_cpu(r) - cpu_before
        stats: Any = r.info("commandstats")
    calls = usec = 0.0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        if name in stats:
            calls += float(stats[name]["calls"])
            usec += float(stats[name]["usec"])
    return {
        "script_calls": calls,
        "purchases": float(purchases),
        "purchases_per_call": purchases / calls if calls else 0.0,
        "usec_per_call": usec / calls if calls else 0.0,
        "usec_per_purchase": usec / purchases if purchases else 0.0,
        "script_busy": usec / 1e6 / duration_s,
        "redis_cpu": cpu / duration_s,
    }

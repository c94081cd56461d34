"""The purchase at the usual connections and at 2,048: a crowd of connections must not cost the goodput.

Goodput is the 2xx answers per second; an error is a socket error wrk counts (connect, read, write, timeout)
or an answer that is not a 2xx. The two counts are measured in turns (few, many, many, few), so a slow moment
of the shared machine weighs on both; each figure is the median of its turns.
"""

from __future__ import annotations

import resource
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.options import BenchOptions
from loadtest.paths import Seed
from loadtest.seed import bearer
from loadtest.wrk_runner import Line, parse_wrk, run_wrk, socket_errors, write_lines

__all__ = ["MANY_CONNECTIONS", "measure_crowd", "raise_open_files"]

MANY_CONNECTIONS = 2048
# The larger count must keep this share of the smaller one's goodput, with no errors.
GOODPUT_GOAL = 0.9


def raise_open_files(say: Callable[[str], None]) -> None:
    """The soft limit of open files raised to the hard one, for this process and what it starts (wrk, the
    private stack's servers): 2,048 connections are 2,048 descriptors on each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < MANY_CONNECTIONS + 256:
        say(f"open files are limited to {wanted} (hard limit): {MANY_CONNECTIONS} connections will fail")


def _run(requests_file: Path, seed: Seed, options: BenchOptions, connections: int) -> dict[str, Any]:
    output = run_wrk(seed.base_url, requests_file, duration_s=options.duration_s, connections=connections)
    rps, p50, p99, total, statuses = parse_wrk(output)
    good = sum(n for code, n in statuses.items() if 200 <= code < 300)
    sockets = socket_errors(output)
    return {
        "connections": connections, "goodput": rps * good / total if total else 0.0, "rps": rps,
        "p50_ms": p50, "p99_ms": p99, "requests": total, "statuses": statuses, "socket_errors": sockets,
        "errors": sum(sockets.values()) + (total - good),
    }  # fmt: skip


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "connections": runs[0]["connections"],
        "goodput": statistics.median(r["goodput"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }


def measure_crowd(
    seed: Seed, folder: Path, options: BenchOptions, say: Callable[[str], None]
) -> dict[str, Any]:
    """Purchases of the "crowd" event (its own per-user limits) at --connections and at 2,048."""
    lines: list[Line] = [
        ("POST", f"/seckill/events/{seed.events['crowd']}/orders", bearer(t), "") for t in seed.tokens
    ]
    requests_file = write_lines(lines, folder, "crowd")
    few, many = options.connections, MANY_CONNECTIONS
    run_wrk(seed.base_url, requests_file, duration_s=1, connections=few)  # warm-up, not counted
    turns: dict[int, list[dict[str, Any]]] = {few: [], many: []}
    for connections in (few, many, many, few):
        turns[connections].append(_run(requests_file, seed, options, connections))
    low, high = _merge(turns[few]), _merge(turns[many])
    keeps = high["goodput"] / low["goodput"] if low["goodput"] else 0.0
    met = keeps >= GOODPUT_GOAL and low["errors"] == 0 and high["errors"] == 0
    for row in (low, high):
        say(
            f"purchase at {row['connections']:,} connections: goodput {row['goodput']:,.0f}/s, "
            f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, {row['errors']} errors"
        )
    say(
        f"purchase at {many:,} connections keeps {keeps:.0%} of the goodput at {few:,} "
        f"(goal >= {GOODPUT_GOAL:.0%} with no errors): {'met' if met else 'NOT met'}"
    )
    return {"few": low, "many": high, "keeps": keeps, "goal": GOODPUT_GOAL, "met": met}

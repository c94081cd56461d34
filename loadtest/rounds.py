"""Rounds of measurements merged into one row per path, each round's ratios to the floors around it.

On a shared machine one floor can be off by 20 %: measuring every path several times, each round after a
floor, and taking medians keeps one bad moment from deciding a ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace

from loadtest.measure import Result

__all__ = ["measure_rounds", "merge_rounds"]


def _combine(runs: list[Result], rps: float, note: str) -> Result:
    """Runs of one path as one row: the given rps, median latencies, summed counts, mean CPU per part."""
    statuses: dict[int, int] = {}
    for r in runs:
        for code, count in r.statuses.items():
            statuses[code] = statuses.get(code, 0) + count
    cpu_us = {k: statistics.fmean(r.cpu_us.get(k, 0.0) for r in runs) for k in runs[0].cpu_us}
    redis_cost = {k: statistics.median(r.redis.get(k, 0.0) for r in runs) for k in runs[0].redis}
    return replace(
        runs[0], rps=rps, p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs), requests=sum(r.requests for r in runs),
        statuses=statuses, note=note, cpu_us=cpu_us, redis=redis_cost,
    )  # fmt: skip


def measure_rounds(
    count: int, one_round: Callable[[], list[Result]], say: Callable[[str], None], where: str = ""
) -> tuple[list[Result], list[list[Result]]]:
    """``count`` rounds, each the floor first and then the other paths: (the floors, each round's other
    paths), for ``merge_rounds`` once the closing floor is measured too."""
    floors: list[Result] = []
    rounds: list[list[Result]] = []
    for turn in range(count):
        if count > 1:
            say(f"round {turn + 1} of {count}{where}")
        measured = one_round()
        floors.append(measured[0])
        rounds.append(measured[1:])
    return floors, rounds


def merge_rounds(floors: list[Result], rounds: list[list[Result]]) -> list[Result]:
    """The floor, then one row per path. floors[i] was measured before rounds[i] and floors[i + 1] after it;
    a round's ratios use the mean of those two (on a shared machine one floor can be off by 20 %). A path's row
    takes the median over the rounds of its rps and of its ratios."""
    for i, measured in enumerate(rounds):
        around = (floors[i].rps + floors[i + 1].rps) / 2
        for r in measured:
            r.ratio = r.rps / around if around else None
    floor = _combine(
        floors, statistics.fmean(f.rps for f in floors),
        "mean of " + ", ".join(f"{f.rps:,.0f}" for f in floors) + " rps",
    )  # fmt: skip
    floor.ratio = 1.0
    merged = [floor]
    for runs in zip(*rounds, strict=True):  # the same paths in the same order every round
        row = _combine(list(runs), statistics.median(r.rps for r in runs), "")
        if len(runs) > 1:
            row.note = "median of " + ", ".join(f"{r.rps:,.0f}" for r in runs) + " rps"
        ratios = [r.ratio for r in runs if r.ratio is not None]
        row.ratio = statistics.median(ratios) if ratios else None
        merged.append(row)
    return merged

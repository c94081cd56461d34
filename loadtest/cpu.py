"""Where the CPU of a measurement went: microseconds per request for each part of the private stack.

On one machine every part (API processes, order workers, Redis, PostgreSQL, wrk itself) takes its CPU from the
same cores, so a path's rps alone does not say which part to make cheaper. ``Usage`` reads the processes'
CPU counters from /proc before and after a wrk run; each process is counted in the part whose root process it
descends from (PostgreSQL's backends under the postmaster, granian's workers under the API server). wrk is
counted through this process's reaped children. ``other`` is the rest of the machine's busy time: the kernel's
share of loopback traffic not charged to a process, this process, and anything else running meanwhile.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Usage", "cost_per_request", "snapshot"]

_PROC = Path("/proc")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """CPU seconds so far: by part, of reaped children (wrk), and of the whole machine (busy, all cores)."""

    parts: dict[str, float]
    children: float
    machine: float


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process; None once it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; the fields after it are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * _TICK_S


def _machine_busy() -> float:
    first = (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(v) for v in first]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks[:8]) - idle) * _TICK_S


def snapshot(roots: Mapping[int, str]) -> Usage:
    """CPU used so far by every process descending from one of ``roots`` (pid -> part name)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                stats[int(entry.name)] = found
    parts = dict.fromkeys(roots.values(), 0.0)
    for pid, (_, cpu) in stats.items():
        walk, hops = pid, 0
        while walk not in roots and walk in stats and hops < 64:
            walk, hops = stats[walk][0], hops + 1
        if walk in roots:
            parts[roots[walk]] += cpu
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Usage(parts, children.ru_utime + children.ru_stime, _machine_busy())


def cost_per_request(before: Usage, after: Usage, requests: int) -> dict[str, float]:
    """Microseconds of CPU per request by part, plus ``wrk``, ``other`` and ``total`` (the whole machine).

    A process that exited between the two snapshots takes its CPU with it, so keep the processes alive."""
    if requests <= 0:
        return {}
    per = 1e6 / requests
    cost = {name: max(0.0, after.parts.get(name, 0.0) - spent) * per for name, spent in before.parts.items()}
    cost["wrk"] = (after.children - before.children) * per
    total = (after.machine - before.machine) * per
    cost["other"] = max(0.0, total - sum(cost.values()))
    cost["total"] = total
    return cost

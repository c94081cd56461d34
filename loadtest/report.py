"""What `peak bench` ends with: the audit of the sale events, the tables, and the same figures as JSON."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import httpx

from loadtest.measure import Result
from loadtest.options import BenchOptions
from loadtest.paths import Seed
from loadtest.seed import bearer, iso

__all__ = ["audit", "cpu_ratios", "publish"]


def audit(seed: Seed, *, timeout_s: float = 120.0, say: Callable[[str], None]) -> tuple[bool, str]:
    """Wait for the workers to drain, then check no oversell and reservations == orders for every event."""
    admin = bearer(seed.admin_token)
    deadline = time.monotonic() + timeout_s
    lines, ok = [], True
    with httpx.Client(base_url=seed.base_url, timeout=30) as http:
        for name in [n for n in seed.events if n != "naive"]:
            event = seed.events[name]
            while True:
                stats = http.get(f"/seckill/events/{event}/stats", headers=admin).json()
                if stats["queued"] == 0 or time.monotonic() > deadline:
                    break
                say(f"waiting for the order workers: {stats['queued']} orders still queued for event {event}")
                time.sleep(1)
            # Cancelled orders gave their stock back; everything else reserved is queued, an order or a dead letter.
            reserved = stats["stock_total"] - stats["stock_left"]
            live_orders = stats["orders_pending_payment"] + stats["orders_paid"]
            accounted = live_orders + stats["queued"] + stats["dead_letters"]
            oversold = stats["stock_left"] < 0 or reserved > stats["stock_total"]
            ok = ok and not oversold and reserved == accounted and stats["queued"] == 0
            lines.append(
                f"{name}: stock {stats['stock_total']}, left {stats['stock_left']}, reserved {reserved}, "
                f"orders {live_orders}, queued {stats['queued']}, dead letters {stats['dead_letters']}, "
                f"oversold {'YES' if oversold else 'no'}"
            )
    return ok, "; ".join(lines)


def _table(results: list[Result]) -> str:
    rows = [("path", "what", "rps", "p50 ms", "p99 ms", "ratio", "unexpected")]
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        rows.append(
            (r.path, r.what, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", ratio, str(r.unexpected))
        )
    return _columns(rows)


def cpu_ratios(results: list[Result]) -> None:
    """Each row's CPU ratio: the machine CPU per request of its stack's floor (the floor row before it) over
    its own. Under a saturating load it is what the rps ratio would be without the machine's noise: on the
    shared development VM the floor's rps moved by up to 30 % within one run, its CPU per request by a few %."""
    floor: Result | None = None
    for r in results:
        if r.path.startswith("floor"):
            floor = r
        if floor is not None and floor.cpu_us.get("total") and r.cpu_us.get("total"):
            r.cpu_ratio = floor.cpu_us["total"] / r.cpu_us["total"]


def _cpu_table(results: list[Result]) -> str:
    """Microseconds of CPU per request by part of the stack; empty when nothing was measured (--url)."""
    measured = [r for r in results if r.cpu_us]
    if not measured:
        return ""
    names = [n for n in measured[0].cpu_us if n != "total"]
    rows: list[tuple[str, ...]] = [("CPU us per request", *names, "total", "CPU ratio")]
    for r in measured:
        ratio = "" if r.cpu_ratio is None else f"{r.cpu_ratio:.2f}"
        rows.append(
            (r.path, *(f"{r.cpu_us.get(n, 0.0):.1f}" for n in names), f"{r.cpu_us['total']:.1f}", ratio)
        )
    return _columns(rows)


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def publish(
    results: list[Result],
    extras: dict[str, Any],
    ok: bool,
    audit_line: str,
    options: BenchOptions,
    say: Callable[[str], None],
) -> int:
    """Print the tables and the audit, write the JSON; the exit code (1 on a failed audit or a status that
    was not expected)."""
    cpu_ratios(results)
    naive = next((r for r in results if r.path == "naive"), None)
    say("")
    say(_table(results))
    say(_cpu_table(results))
    if naive is not None and naive.rps:
        purchase = next((r for r in results if r.path == "purchase"), None)
        if purchase is not None:
            say(f"purchase / naive row lock: {purchase.rps / naive.rps:.1f}x")
    say(("AUDIT PASS: " if ok else "AUDIT FAIL: ") + audit_line)
    report = {
        "when": iso(datetime.now(UTC)),
        "cores": os.cpu_count(),
        "duration_s": options.duration_s,
        "connections": options.connections,
        "rounds": options.rounds,
        "results": [asdict(r) | {"unexpected": r.unexpected} for r in results],
        "extras": extras,
        "audit": {"ok": ok, "detail": audit_line},
    }
    options.json_path.write_text(json.dumps(report, indent=2))
    say(f"figures written to {options.json_path}")
    bad = [r.path for r in results if r.unexpected]
    if bad:
        say(f"unexpected statuses on: {', '.join(bad)} (see the JSON for the counts)")
    return 0 if ok and not bad else 1

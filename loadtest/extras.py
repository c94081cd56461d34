"""The measurements beyond one wrk run of a path: purchases with the order workers paused (and the backlog's
drain), polls of orders still queued, the degradation middleware's own cost, and purchases while reviews are
flooded (load shedding).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from devstack.up import LocalStack
from kit.commands import CommandError
from loadtest import inproc
from loadtest.apps import without_degrade_middleware
from loadtest.measure import Result, measure
from loadtest.options import BenchOptions
from loadtest.paths import PATHS, Seed
from loadtest.seed import bearer, buy_one_each, order_status
from loadtest.wrk_runner import Line, parse_wrk, start_wrk, write_lines, wrk_output
from peak.app import components, create_app

__all__ = [
    "SHEDDING_MARKS",
    "measure_degrade_cost",
    "measure_order_queued",
    "measure_queued",
    "measure_shedding",
]


# The controller's marks for the private stack: a core p99 above 25 ms for two half-second samples sheds.
# The defaults (500 ms, 95 % of a core) suit a production box; on a shared 2-core machine two API processes
# never reach 95 % of a core each, so the shedding run would only show the controller idle.
SHEDDING_MARKS = {
    "PEAK_DEGRADE_SAMPLE_S": "0.5",
    "PEAK_DEGRADE_WINDOW_S": "2",
    "PEAK_DEGRADE_HIGH_SAMPLES": "2",
    "PEAK_DEGRADE_STEP_S": "1",
    "PEAK_DEGRADE_P99_HIGH_MS": "25",
    "PEAK_DEGRADE_P99_LOW_MS": "10",
}


def measure_queued(
    stack: LocalStack,
    seed: Seed,
    folder: Path,
    options: BenchOptions,
    say: Callable[[str], None],
) -> tuple[Result, dict[str, Any]]:
    """Purchases with the order workers stopped (SIGSTOP), as while a spike outruns them; then how fast the
    workers, resumed, write the backlog to PostgreSQL. On this one machine the workers and PostgreSQL
    otherwise take their CPU from the API during the measurement."""
    for worker in stack.workers:
        os.killpg(worker.pid, signal.SIGSTOP)
    try:
        result = measure(PATHS["purchase_queued"], seed, folder, options, stack=stack)
    finally:
        for worker in stack.workers:
            os.killpg(worker.pid, signal.SIGCONT)
    event = seed.events["stock"]
    start = time.monotonic()
    with httpx.Client(base_url=seed.base_url, headers=bearer(seed.admin_token), timeout=30) as http:
        backlog = http.get(f"/seckill/events/{event}/stats").json()["queued"]
        queued = backlog
        while queued > 0 and time.monotonic() - start < 300:
            time.sleep(1)
            queued = http.get(f"/seckill/events/{event}/stats").json()["queued"]
    elapsed = time.monotonic() - start
    written = backlog - queued
    drain = {"backlog": backlog, "written": written, "seconds": elapsed, "orders_per_s": written / elapsed}
    say(
        f"order workers wrote a backlog of {backlog:,} orders in {elapsed:.1f} s "
        f"({drain['orders_per_s']:,.0f} orders/s with {len(stack.workers)} worker process(es))"
    )
    return result, drain


def measure_order_queued(stack: LocalStack, seed: Seed, folder: Path, options: BenchOptions) -> Result:
    """Owners polling orders that are still queued: the order workers stopped (SIGSTOP), one new order per
    shopper, polled for the run, then the workers resumed (they write the orders during the next path's
    settling: a few hundred orders)."""
    for worker in stack.workers:
        os.killpg(worker.pid, signal.SIGSTOP)
    try:
        seed.orders["queued"] = buy_one_each(seed.base_url, seed.tokens, seed.events["polled"])
        result = measure(PATHS["order_queued"], seed, folder, options, stack=stack)
        # Still queued at the end, so every poll of the run read a queued order.
        status = order_status(seed.base_url, seed.tokens[-1], seed.orders["queued"][-1])
        if status != "queued":
            raise CommandError(f"an order polled as queued was {status!r} by the end of the run")
        return result
    finally:
        for worker in stack.workers:
            os.killpg(worker.pid, signal.SIGCONT)


def measure_degrade_cost(
    stack: LocalStack, floor_us: float, requests: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """The degradation middleware's own CPU per request, as a share of what a floor request costs the API.

    The app with and without the middleware is driven inside this process (loadtest/inproc.py): compared as
    two servers under wrk, the turns' ratios on the development VM ranged from 0.69 to 1.6 for a difference
    of about 1 %. What granian and the kernel spend is the same with and without it, so the share is the
    in-process difference over ``floor_us``, the API processes' CPU per floor request in this run (what
    bounds an API server's throughput)."""
    settings = stack.settings
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        cpu_us = inproc.cpu_per_request(
            {
                "with": create_app(settings, parts=components()),
                "without": without_degrade_middleware(settings),
            },
            requests=requests,
        )
    finally:
        # create_app set up the server's logging in this process; the bench's own output stays as it was.
        root.handlers[:] = handlers
        root.setLevel(level)
    extra = cpu_us["with"] - cpu_us["without"]
    cost = extra / floor_us if floor_us > 0 else 0.0
    say(
        f"degradation middleware: {extra:.2f} us of CPU per request in-process ({cpu_us['with']:.2f} with it, "
        f"{cpu_us['without']:.2f} without), {cost:.1%} of the API's {floor_us:.1f} us per floor request (goal < 5 %)"
    )
    return {
        "with_us": cpu_us["with"], "without_us": cpu_us["without"], "middleware_us": extra,
        "floor_us": floor_us, "cost": cost,
    }  # fmt: skip


def measure_shedding(
    seed: Seed, folder: Path, options: BenchOptions, say: Callable[[str], None]
) -> dict[str, Any]:
    """Purchases while reviews are flooded: the non-core switches forced open, then left to the controller."""
    flood: list[Line] = [("GET", "/reviews/bench-flooded-sku", {}, "")]
    buyers = PATHS["purchase"].lines(seed)
    found: dict[str, Any] = {}
    with httpx.Client(base_url=seed.base_url, headers=bearer(seed.admin_token), timeout=30) as http:
        for label, mode in (("controller_off", "open"), ("controller_on", "auto")):
            for name in ("reviews", "customer_service"):
                http.put(
                    f"/degrade/switches/{name}", json={"mode": mode, "reason": f"peak bench: {label}"}
                ).raise_for_status()
            flooding = start_wrk(
                seed.base_url,
                write_lines(flood, folder, "flood"),
                duration_s=options.duration_s,
                connections=options.connections,
            )
            buying = start_wrk(
                seed.base_url,
                write_lines(buyers, folder, "buyers"),
                duration_s=options.duration_s,
                connections=max(4, options.connections // 4),
            )
            bought, flooded = (
                parse_wrk(wrk_output(buying, options.duration_s)),
                parse_wrk(wrk_output(flooding, options.duration_s)),
            )
            found[label] = {
                "purchase_rps": bought[0], "purchase_p50_ms": bought[1], "purchase_p99_ms": bought[2],
                "purchase_statuses": bought[4], "reviews_rps": flooded[0], "reviews_statuses": flooded[4],
            }  # fmt: skip
            say(
                f"shedding, {label.replace('_', ' ')}: purchases {bought[0]:,.0f} rps, p50 {bought[1]:.2f} ms, "
                f"p99 {bought[2]:.2f} ms; reviews flood {flooded[0]:,.0f} rps {dict(sorted(flooded[4].items()))}"
            )
        for name in ("reviews", "customer_service"):
            http.put(
                f"/degrade/switches/{name}", json={"mode": "auto", "reason": "peak bench: done"}
            ).raise_for_status()
    return found

"""What the access log costs: the floor of two fresh API servers against the stack's Redis and PostgreSQL,
one with the access log on and one with it off, measured one at a time in pairs (off then on, on then off, ...).
The stack's own server is no fair "off": it has served the seeding and the other paths, and on the shared
development VM two servers started alike differed by more than the log costs. Reported: 1 - the median of the
pairs' rps ratios, and the API processes' CPU per request of each.

On a shared machine both move by more than the goal between two runs a minute apart (pairs' ratios from 0.5
to 1.8 on the development VM at a load of 9), so the verdict is judged like degrade_cost's: the app driven in
this process with the log on and off in alternating chunks (the writer thread's formatting and writes
included), the difference as a share of the API's CPU per floor request (of the "off" server here). What
granian and the kernel spend per request is the same either way.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.processes import free_port, stop_process
from devstack.up import LocalStack, wait_ready
from kit import logs
from loadtest import cpu, inproc
from loadtest.apps import BASELINE_FACTORY
from loadtest.options import BenchOptions
from loadtest.paths import PATHS, Seed
from loadtest.wrk_runner import parse_wrk, run_wrk, write_lines
from peak.app import components, create_app
from peak.serve import server_command

__all__ = ["ACCESS_LOG_GOAL", "measure_access_log_cost"]

# The access log may cost at most this share of the floor.
ACCESS_LOG_GOAL = 0.10
PAIRS = 4


def _floor(base_url: str, requests_file: Path, api: list[int], options: BenchOptions) -> tuple[float, float]:
    """(rps, API CPU microseconds per request) of the floor at ``base_url``, after a second of warm-up."""
    run_wrk(base_url, requests_file, duration_s=1, connections=options.connections)
    parts = dict.fromkeys(api, "api")
    before = cpu.snapshot(parts)
    output = run_wrk(base_url, requests_file, duration_s=options.duration_s, connections=options.connections)
    after = cpu.snapshot(parts)
    rps, _, _, total, _ = parse_wrk(output)
    return rps, cpu.cost_per_request(before, after, total).get("api", 0.0)


def _start(stack: LocalStack, folder: Path, access_log: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    settings = dataclasses.replace(stack.settings, port=port, host="127.0.0.1")
    env = {**stack.env, "PEAK_ACCESS_LOG": access_log, "PEAK_PORT": str(port), "PEAK_HOST": "127.0.0.1",
           "PEAK_PUBLIC_URL": stack.base_url}  # fmt: skip
    log_path = folder / f"access-log-{access_log}-server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            server_command(settings, BASELINE_FACTORY), env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=log, start_new_session=True,
        )  # fmt: skip
    return server, f"http://127.0.0.1:{port}", log_path


def _inproc(stack: LocalStack, folder: Path, requests: int) -> dict[str, float]:
    """CPU microseconds per floor request of the app in this process with the access log on and off, its
    lines written to a file of ``folder`` by the writer thread (flushed inside each measured chunk)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with (folder / "access-log-inproc.log").open("w") as out:
        try:
            app = create_app(dataclasses.replace(stack.settings, access_log=False), parts=components())
            logs.access.setup(out, enabled=False, json=False)

            def switch(on: bool) -> Callable[[], None]:
                return lambda: setattr(logs.access, "enabled", on)

            return inproc.cpu_per_toggle(
                app, {"on": switch(True), "off": switch(False)}, finish=logs.access.flush, requests=requests
            )
        finally:
            logs.access.setup(sys.stderr, enabled=False, json=False)
            root.handlers[:] = handlers
            root.setLevel(level)


def measure_access_log_cost(
    stack: LocalStack, seed: Seed, folder: Path, options: BenchOptions, say: Callable[[str], None]
) -> dict[str, Any]:
    servers = {"off": _start(stack, folder, "0"), "on": _start(stack, folder, "1")}
    try:
        for server, url, _ in servers.values():
            wait_ready(url, server)
        requests_file = write_lines(PATHS["floor"].lines(seed), folder, "access-log-floor")
        seen: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        for turn in range(PAIRS):
            for name in ("off", "on") if turn % 2 == 0 else ("on", "off"):
                server, url, _ = servers[name]
                seen[name].append(_floor(url, requests_file, [server.pid], options))
    finally:
        for server, _, _ in servers.values():
            stop_process(server, timeout_s=8.0)
    in_process = _inproc(stack, folder, options.inproc_requests)
    pairs = list(zip(seen["off"], seen["on"], strict=True))
    cost = 1 - statistics.median(on[0] / off[0] for off, on in pairs if off[0])
    cpu_cost = statistics.median(on[1] / off[1] for off, on in pairs if off[1]) - 1
    rps = {name: statistics.median(r for r, _ in runs) for name, runs in seen.items()}
    cpu_us = {name: statistics.median(c for _, c in runs) for name, runs in seen.items()}
    lines = sum(1 for line in servers["on"][2].read_bytes().splitlines() if b"peak.access" in line)
    line_us = in_process["on"] - in_process["off"]
    share = line_us / cpu_us["off"] if cpu_us["off"] else 0.0
    met = share <= ACCESS_LOG_GOAL
    say(
        f"access log: floor {rps['on']:,.0f} rps with it on, {rps['off']:,.0f} off: costs {cost:.1%} of the "
        f"floor's rps (median of {PAIRS} pairs); API CPU per request {cpu_us['on']:.1f} us on, "
        f"{cpu_us['off']:.1f} us off ({cpu_cost:+.1%}); {lines:,} lines written"
    )
    say(
        f"access log in-process: {line_us:.2f} us of CPU per request ({in_process['on']:.2f} on, "
        f"{in_process['off']:.2f} off), {share:.1%} of the API's {cpu_us['off']:.1f} us per floor request "
        f"(goal <= {ACCESS_LOG_GOAL:.0%}: {'met' if met else 'NOT met'})"
    )
    return {
        "rps_on": rps["on"], "rps_off": rps["off"], "cost": cost, "api_us_on": cpu_us["on"],
        "api_us_off": cpu_us["off"], "cpu_cost": cpu_cost, "lines": lines, "inproc_us_on": in_process["on"],
        "inproc_us_off": in_process["off"], "line_us": line_us, "share": share, "goal": ACCESS_LOG_GOAL,
        "met": met, "runs": seen,
    }  # fmt: skip

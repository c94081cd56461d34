"""`peak bench`: every hot path measured with wrk in one run, as ratios to the same server's hello-world floor.

It starts its own stack (or uses the one at --url), seeds users, events and an introspection client, runs wrk
once per path, prints a table (rps, p50, p99, ratio to the floor), writes the same figures as JSON, and ends with
an audit: nothing oversold, every reservation an order.

With ``--redis-cluster N`` it then stops that stack and starts a second private one on an N-master Redis
Cluster, and measures the purchase paths there too (plus a purchase of an event split into stock buckets); those
rows are named ``<path> (cluster)`` and their ratios are to the cluster stack's own floor.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

from devstack.stack import RedisClusterServer, StackError, free_port
from devstack.up import LocalStack
from kit.settings import Settings
from loadtest import cpu, inproc
from loadtest.apps import without_degrade_middleware
from loadtest.seed import PASSWORD, add_client, bearer, create_event, create_shoppers, iso
from peak.app import components, create_app

__all__ = ["PATHS", "BenchOptions", "Result", "run_bench"]


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
    # Stock buckets of the bucketed event measured on the cluster.
    buckets: int = 3
    # Times every path of the main stack is measured (medians are reported).
    rounds: int = 1


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

    @property
    def unexpected(self) -> int:
        return sum(n for code, n in self.statuses.items() if code not in self.expected)


@dataclass
class Seed:
    """What the paths need: tokens, credentials, event ids."""

    base_url: str
    admin_token: str
    tokens: list[str] = field(default_factory=list)
    usernames: list[str] = field(default_factory=list)
    client_id: str = ""
    client_secret: str = ""
    events: dict[str, str] = field(default_factory=dict)


Line = tuple[str, str, dict[str, str], str]


@dataclass(frozen=True)
class Path_:
    name: str
    what: str
    expected: tuple[int, ...]
    lines: Callable[[Seed], list[Line]]


def _purchase(event: str) -> Callable[[Seed], list[Line]]:
    return lambda s: [("POST", f"/seckill/events/{s.events[event]}/orders", bearer(t), "") for t in s.tokens]


def _introspect(s: Seed) -> list[Line]:
    basic = base64.b64encode(f"{s.client_id}:{s.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
    return [("POST", "/sso/introspect", headers, f"token={t}") for t in s.tokens]


def _login(s: Seed) -> list[Line]:
    headers = {"Content-Type": "application/json"}
    return [
        ("POST", "/sso/login", headers, json.dumps({"username": u, "password": PASSWORD}))
        for u in s.usernames
    ]


PATHS: dict[str, Path_] = {
    p.name: p
    for p in (
        Path_("floor", "hello world (GET /healthz)", (200,), lambda s: [("GET", "/healthz", {}, "")]),
        Path_("purchase", "purchase while stock remains", (202,), _purchase("stock")),
        Path_(
            "purchase_queued",
            "purchase, order workers paused (orders wait in Redis)",
            (202,),
            _purchase("stock"),
        ),
        Path_("sold_out", "purchase after sell-out", (409,), _purchase("sold_out")),
        Path_(
            "validate_strict",
            "strict token validation (GET /sso/userinfo)",
            (200,),
            lambda s: [("GET", "/sso/userinfo", bearer(t), "") for t in s.tokens],
        ),
        Path_("introspect", "introspection (POST /sso/introspect)", (200,), _introspect),
        Path_("login", "password login (argon2id, default cost)", (200,), _login),
        Path_(
            "naive",
            "naive PostgreSQL row-lock purchase (baseline)",
            (202,),
            lambda s: [("POST", f"/bench/naive/{s.events['naive']}/orders", bearer(t), "") for t in s.tokens],
        ),
    )
}

# Measured on the Redis Cluster stack (--redis-cluster), in this order.
CLUSTER_PATHS: dict[str, Path_] = {
    "floor": PATHS["floor"],
    "purchase": PATHS["purchase"],
    "sold_out": PATHS["sold_out"],
    "validate_strict": PATHS["validate_strict"],
    "purchase_buckets": Path_(
        "purchase_buckets", "purchase while stock remains, event split into stock buckets", (202,),
        _purchase("buckets"),
    ),
}  # fmt: skip
CLUSTER_SUFFIX = " (cluster)"


def _wrk_script() -> str:
    return str(resources.files("loadtest").joinpath("wrk", "requests.lua"))


def _write_lines(lines: list[Line], folder: Path, name: str) -> Path:
    path = folder / f"{name}.requests"
    with path.open("w") as f:
        for method, target, headers, body in lines:
            header_text = "|".join(f"{k}: {v}" for k, v in headers.items())
            f.write(f"{method}\t{target}\t{header_text}\t{body}\n")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float, int, dict[int, int]]:
    """(rps, p50 ms, p99 ms, requests, statuses) from `wrk --latency` output with our script's status lines."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    statuses = {int(code): int(n) for code, n in re.findall(r"^status (\d+) (\d+)$", output, re.M)}
    return rps, p50, p99, requests, statuses


def _wrk_argv(base_url: str, requests_file: Path, *, duration_s: float, connections: int) -> list[str]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise StackError("wrk not found: install it with `apt-get install wrk` (`make up` does this as root)")
    return [
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency", "--timeout", "10s",
        "-s", _wrk_script(), base_url, "--", str(requests_file),
    ]  # fmt: skip


def run_wrk(base_url: str, requests_file: Path, *, duration_s: float, connections: int) -> str:
    return _wrk_output(
        subprocess.Popen(
            _wrk_argv(base_url, requests_file, duration_s=duration_s, connections=connections),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        duration_s,
    )


def _wrk_output(proc: subprocess.Popen[str], duration_s: float) -> str:
    try:
        out, err = proc.communicate(timeout=duration_s + 60)
    except BaseException:  # a timeout, Ctrl-C or SIGTERM: no wrk left running
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise StackError(f"wrk failed: {err.strip() or out.strip()}")
    return out


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
    path: Path_,
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
    requests_file = _write_lines(path.lines(seed), folder, path.name)
    # A second of warm-up, not counted: connections, caches and the coalescing settle first.
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


def seed_stack(
    base_url: str, admin_token: str, users: int, env: dict[str, str], *, say: Callable[[str], None]
) -> Seed:
    run_id = secrets.token_hex(3)
    say(f"seeding {users} shoppers, two sale events and an introspection client")
    shoppers = asyncio.run(create_shoppers(base_url, users, prefix=f"bench-{run_id}"))
    seed = Seed(base_url=base_url, admin_token=admin_token)
    seed.usernames = [u for u, _ in shoppers]
    seed.tokens = [t for _, t in shoppers]
    plenty = {"stock": 50_000_000, "per_user_limit": 10_000, "payment_timeout_s": 3600}
    seed.events["stock"] = str(create_event(base_url, admin_token, **plenty)["id"])
    seed.events["sold_out"] = str(create_event(base_url, admin_token, stock=1)["id"])
    bought = httpx.post(
        f"{base_url}/seckill/events/{seed.events['sold_out']}/orders",
        headers=bearer(seed.tokens[0]),
        timeout=30,
    )
    if bought.status_code != 202:
        raise StackError(f"could not sell the sold-out event's last item: {bought.status_code} {bought.text}")
    naive = httpx.post(
        f"{base_url}/bench/naive/events", json={"stock": 50_000_000}, headers=bearer(admin_token), timeout=30
    )
    if naive.status_code == 201:
        seed.events["naive"] = str(naive.json()["id"])
    seed.client_id, seed.client_secret = add_client(env, f"bench-{run_id}")
    return seed


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

EXTRAS = {
    "degrade_cost": "the degradation middleware's CPU per request (the app with and without it, in-process)",
    "shedding": "purchase latency under a flood of reviews traffic, controller off vs on",
}


def _wrk(
    base_url: str, lines: list[Line], folder: Path, name: str, *, duration_s: float, connections: int
) -> subprocess.Popen[str]:
    requests_file = _write_lines(lines, folder, name)
    argv = _wrk_argv(base_url, requests_file, duration_s=duration_s, connections=connections)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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


def measure_degrade_cost(stack: LocalStack, floor_us: float, say: Callable[[str], None]) -> dict[str, Any]:
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
            }
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
            flooding = _wrk(
                seed.base_url,
                flood,
                folder,
                "flood",
                duration_s=options.duration_s,
                connections=options.connections,
            )
            buying = _wrk(
                seed.base_url,
                buyers,
                folder,
                "buyers",
                duration_s=options.duration_s,
                connections=max(4, options.connections // 4),
            )
            bought, flooded = (
                parse_wrk(_wrk_output(buying, options.duration_s)),
                parse_wrk(_wrk_output(flooding, options.duration_s)),
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


def measure_on_cluster(
    options: BenchOptions,
    base_env: dict[str, str],
    folder: Path,
    admin_token: str,
    say: Callable[[str], None],
) -> tuple[list[Result], bool, str]:
    """The purchase paths on a second private stack whose Redis is an N-master cluster."""
    env = {
        **base_env, "PEAK_PORT": str(free_port()), "PEAK_DATA_DIR": str(folder / "cluster-stack"),
        "PEAK_REDIS_URL": "", "PEAK_DATABASE_URL": "", "PEAK_SECRET_KEY": "",
    }  # fmt: skip
    settings = Settings.from_env(env)
    say(f"starting a second private stack on a {options.redis_cluster}-master Redis Cluster")
    stack = LocalStack(
        settings, env=env, say=lambda t: say(f"  {t}"), output=(folder / "cluster-server.log").open("wb"),
        redis_cluster=options.redis_cluster,
    )  # fmt: skip
    try:
        stack.start()
        env.update(stack.env)
        seed = seed_stack(stack.base_url, admin_token, options.users, env, say=say)
        seed.events["buckets"] = str(
            create_event(
                stack.base_url, admin_token, stock=50_000_000, per_user_limit=10_000, payment_timeout_s=3600,
                buckets=options.buckets,
            )["id"]
        )  # fmt: skip

        def one_round() -> list[Result]:
            measured = []
            for name, path in CLUSTER_PATHS.items():
                what = path.what + (f" ({options.buckets} buckets)" if name == "purchase_buckets" else "")
                say(f"measuring {name} on the cluster: {what} ({options.duration_s:g} s)")
                result = measure(path, seed, folder, options, stack=stack)
                result.path, result.what = name + CLUSTER_SUFFIX, what
                measured.append(result)
            return measured

        floors, rounds = measure_rounds(options.rounds, one_round, say, " on the cluster")
        say("measuring floor on the cluster again")
        again = measure(PATHS["floor"], seed, folder, options, stack=stack)
        again.path = floors[0].path
        floors.append(again)
        ok, line = audit(seed, say=say)
        return merge_rounds(floors, rounds), ok, line
    finally:
        stack.stop()


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


def _measure_path(
    name: str,
    stack: LocalStack | None,
    seed: Seed,
    folder: Path,
    options: BenchOptions,
    extras: dict[str, Any],
    say: Callable[[str], None],
) -> Result | None:
    """One path once (None when it cannot be measured here, said why)."""
    path = PATHS[name]
    if name == "naive" and "naive" not in seed.events:
        say("skipping naive: the server was not started with PEAK_BENCH_BASELINE=1")
        return None
    if name == "purchase_queued" and stack is None:
        say("skipping purchase_queued: it pauses the order workers, so it needs the private stack")
        return None
    say(f"measuring {name}: {path.what} ({options.duration_s:g} s, {options.connections} connections)")
    if name == "purchase_queued":
        assert stack is not None
        result, drain = measure_queued(stack, seed, folder, options, say)
        extras.setdefault("order_drain", []).append(drain)
        return result
    if name == "purchase" and stack is not None:
        result = measure(path, seed, folder, options, stack=stack, redis_url=stack.settings.redis_url)
        cost = result.redis
        say(
            f"redis primary on purchase: {cost['script_calls']:,.0f} script calls for "
            f"{cost['purchases']:,.0f} purchases ({cost['purchases_per_call']:.1f} per call), "
            f"{cost['usec_per_call']:.1f} us per call, {cost['usec_per_purchase']:.2f} us per purchase, "
            f"scripts busy {cost['script_busy']:.0%} and CPU {cost['redis_cpu']:.0%} of a core"
        )
        return result
    return measure(path, seed, folder, options, stack=stack)


def run_bench(options: BenchOptions, *, say: Callable[[str], None] = print) -> int:
    chosen = list(options.paths) or [*PATHS, *EXTRAS]
    unknown = [n for n in chosen if n not in PATHS and n not in EXTRAS]
    if unknown:
        raise StackError(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join([*PATHS, *EXTRAS])}")
    names = [n for n in chosen if n in PATHS]
    if "floor" not in names:
        names.insert(0, "floor")
    with tempfile.TemporaryDirectory(prefix="peak-bench-") as tmp:
        folder = Path(tmp)
        admin_token = os.environ.get("PEAK_ADMIN_TOKEN") or secrets.token_urlsafe(24)
        stack: LocalStack | None = None
        env = dict(os.environ)
        if options.url is None:
            port = free_port()
            env.update(
                PEAK_ADMIN_TOKEN=admin_token,
                PEAK_BENCH_BASELINE="1",
                PEAK_PORT=str(port),
                PEAK_REDIS_URL="",
                PEAK_DATABASE_URL="",
                PEAK_SECRET_KEY="",
                PEAK_DATA_DIR=str(folder / "stack"),
                PEAK_ACCESS_LOG="0",
                # Shoppers here are wrk connections: many requests per user per second by design.
                PEAK_SECKILL_USER_RATE_PER_S="1000000",
                PEAK_SECKILL_IP_RATE_PER_S="10000000",
                PEAK_SSO_IP_DAILY_FAILURES="10000000",
                **SHEDDING_MARKS,
            )
            if options.workers:
                env["PEAK_WORKERS"] = str(options.workers)
            settings = Settings.from_env(env)
            say(f"starting a private stack ({settings.workers} API processes) in {folder}")
            stack = LocalStack(
                settings, env=env, say=lambda t: say(f"  {t}"), output=(folder / "server.log").open("wb")
            )
        try:
            if stack is not None:
                settings = stack.start()
                env.update(stack.env)
                base_url = stack.base_url
            else:
                assert options.url is not None
                base_url = options.url.rstrip("/")
                if "PEAK_ADMIN_TOKEN" not in os.environ:
                    raise StackError(
                        "with --url, set PEAK_ADMIN_TOKEN to the server's admin token to seed events"
                    )
            seed = seed_stack(base_url, admin_token, options.users, env, say=say)
            results: list[Result] = []
            extras: dict[str, Any] = {}
            # Logins open sessions; beyond PEAK_SSO_MAX_SESSIONS they end the seeded ones whose tokens the
            # other measurements use, so they come last. The floor is measured once more at the end, and every
            # round's ratios use the mean of the floors around it.
            floors, rounds = measure_rounds(
                options.rounds,
                lambda: [
                    r
                    for n in names
                    if n != "login"
                    and (r := _measure_path(n, stack, seed, folder, options, extras, say)) is not None
                ],
                say,
            )
            if "shedding" in chosen:
                say(f"measuring shedding: {EXTRAS['shedding']} ({options.duration_s:g} s each)")
                extras["shedding"] = measure_shedding(seed, folder, options, say)
            if "login" in names:
                say(
                    f"measuring login: {PATHS['login'].what} ({options.duration_s:g} s, {options.connections} connections)"
                )
                results.append(measure(PATHS["login"], seed, folder, options, stack=stack))
            say("measuring floor again")
            floors.append(measure(PATHS["floor"], seed, folder, options, stack=stack))
            results[:0] = merge_rounds(floors, rounds)
            for r in results:
                if r.ratio is None and results[0].rps:
                    r.ratio = r.rps / results[0].rps  # login, measured once
            if "degrade_cost" in chosen:
                if stack is None:
                    say(
                        "skipping degrade_cost: it runs the app in-process on the private stack's servers (no --url)"
                    )
                else:
                    say(f"measuring degrade_cost: {EXTRAS['degrade_cost']}")
                    extras["degrade_cost"] = measure_degrade_cost(
                        stack, results[0].cpu_us.get("api", 0.0), say
                    )
            ok, audit_line = audit(seed, say=say)
            if options.redis_cluster:
                if stack is None:
                    say(
                        "skipping the cluster run: it starts its own stack, so it needs the private stack (no --url)"
                    )
                else:
                    # One stack at a time: on a small machine the two would take each other's CPU.
                    stack.stop()
                    stack = None
                    on_cluster, cluster_ok, cluster_line = measure_on_cluster(
                        options, env, folder, admin_token, say
                    )
                    results += on_cluster
                    ok = ok and cluster_ok
                    audit_line += f"; on the cluster: {cluster_line}"
                    extras["cluster"] = {"masters": options.redis_cluster, "buckets": options.buckets}
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
        finally:
            if stack is not None:
                stack.stop()


def _options_from(args: Any) -> BenchOptions:
    paths = [p.strip() for p in args.paths.split(",") if p.strip()] if args.paths else []
    return replace(
        BenchOptions(),
        duration_s=args.duration,
        connections=args.connections,
        paths=paths,
        url=args.url,
        workers=args.workers,
        users=args.users,
        json_path=Path(args.json),
        redis_cluster=args.redis_cluster,
        buckets=args.buckets,
        rounds=args.rounds,
    )

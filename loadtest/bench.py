"""`peak bench`: every hot path measured with wrk in one run, as ratios to the same server's hello-world floor.

It starts its own stack (or uses the one at --url), seeds users, events and an introspection client, runs wrk
once per path, prints a table (rps, p50, p99, ratio to the floor), writes the same figures as JSON, and ends with
an audit: nothing oversold, every reservation an order.

With ``--redis-cluster N`` it then stops that stack and starts a second private one on an N-master Redis
Cluster, and measures the purchase paths there too (plus a purchase of an event split into stock buckets); those
rows are named ``<path> (cluster)`` and their ratios are to the cluster stack's own floor.

The private stacks serve ``loadtest.apps:baseline_app``, the app plus the naive baseline the purchase is
compared with; the pieces are in paths.py (what is measured), measure.py and rounds.py (how), extras.py (the
measurements beyond one wrk run) and report.py (what is printed and written).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.processes import free_port
from devstack.up import LocalStack
from kit.commands import CommandError
from kit.settings import Settings
from loadtest.apps import BASELINE_FACTORY
from loadtest.crowd import measure_crowd, raise_open_files
from loadtest.extras import (
    SHEDDING_MARKS,
    measure_degrade_cost,
    measure_order_queued,
    measure_queued,
    measure_shedding,
)
from loadtest.logcost import measure_access_log_cost
from loadtest.measure import Result, measure
from loadtest.options import BenchOptions
from loadtest.paths import CLUSTER_PATHS, CLUSTER_SUFFIX, EXTRAS, PATHS, Seed, seed_stack
from loadtest.report import audit, publish
from loadtest.rounds import measure_rounds, merge_rounds
from loadtest.seed import create_event

__all__ = ["run_bench"]


def run_bench(options: BenchOptions, *, say: Callable[[str], None] = print) -> int:
    chosen = _chosen(options)
    raise_open_files(say)  # before the stack starts: its servers inherit the limit, as wrk does
    with tempfile.TemporaryDirectory(prefix="peak-bench-") as tmp:
        folder = Path(tmp)
        admin_token = os.environ.get("PEAK_ADMIN_TOKEN") or secrets.token_urlsafe(24)
        env = dict(os.environ)
        stack = None if options.url is not None else _private_stack(options, folder, admin_token, env, say)
        try:
            seed = seed_stack(_start(stack, options, env), admin_token, options.users, env, say=say)
            seed.run_s, seed.connections = max(1, round(options.duration_s)), options.connections
            results, extras = _measure_stack(chosen, stack, seed, folder, options, say)
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
            return publish(results, extras, ok, audit_line, options, say)
        finally:
            if stack is not None:
                stack.stop()


def _chosen(options: BenchOptions) -> list[str]:
    """The paths and extras asked for (all by default); an unknown name is an error before anything starts."""
    chosen = list(options.paths) or [*PATHS, *EXTRAS]
    unknown = [n for n in chosen if n not in PATHS and n not in EXTRAS]
    if unknown:
        raise CommandError(
            f"unknown path(s) {', '.join(unknown)}; choose from {', '.join([*PATHS, *EXTRAS])}"
        )
    return chosen


def _private_stack(
    options: BenchOptions, folder: Path, admin_token: str, env: dict[str, str], say: Callable[[str], None]
) -> LocalStack:
    """The stack to measure, not started yet; ``env`` gets its settings, for the commands the seeding runs."""
    env.update(
        PEAK_ADMIN_TOKEN=admin_token,
        PEAK_PORT=str(free_port()),
        PEAK_REDIS_URL="",
        PEAK_DATABASE_URL="",
        PEAK_SECRET_KEY="",
        PEAK_DATA_DIR=str(folder / "stack"),
        PEAK_ACCESS_LOG="0",
        # Tickets are fetched before each run; an hour keeps any run's inside their lifetime.
        PEAK_SECKILL_TICKET_TTL_S="3600",
        # Authorization codes are made for the code exchange before its runs (loadtest/oidc_paths.py).
        PEAK_SSO_CODE_TTL_S="600",
        # Shoppers here are wrk connections: many requests per user per second by design.
        PEAK_SECKILL_USER_RATE_PER_S="1000000",
        PEAK_SECKILL_IP_RATE_PER_S="10000000",
        PEAK_SSO_IP_DAILY_FAILURES="10000000",
        # The seeding signs up every shopper from this one address.
        PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR="0",
        **SHEDDING_MARKS,
    )
    if options.workers:
        env["PEAK_WORKERS"] = str(options.workers)
    settings = Settings.from_env(env)
    say(f"starting a private stack ({settings.workers} API processes) in {folder}")
    return LocalStack(
        settings, env=env, say=lambda t: say(f"  {t}"), output=(folder / "server.log").open("wb"),
        factory=BASELINE_FACTORY,
    )  # fmt: skip


def _start(stack: LocalStack | None, options: BenchOptions, env: dict[str, str]) -> str:
    """The base URL to measure: the private stack, started, or --url."""
    if stack is not None:
        stack.start()
        env.update(stack.env)
        return stack.base_url
    assert options.url is not None
    if "PEAK_ADMIN_TOKEN" not in os.environ:
        raise CommandError("with --url, set PEAK_ADMIN_TOKEN to the server's admin token to seed events")
    return options.url.rstrip("/")


def _measure_stack(
    chosen: list[str],
    stack: LocalStack | None,
    seed: Seed,
    folder: Path,
    options: BenchOptions,
    say: Callable[[str], None],
) -> tuple[list[Result], dict[str, Any]]:
    """Every chosen path and extra on the first stack: the rows (the floor first) and the extras' figures."""
    names = [n for n in chosen if n in PATHS]
    if "floor" not in names:
        names.insert(0, "floor")
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
            if n != "login" and (r := _measure_path(n, stack, seed, folder, options, extras, say)) is not None
        ],
        say,
    )
    if "shedding" in chosen:
        say(f"measuring shedding: {EXTRAS['shedding']} ({options.duration_s:g} s each)")
        extras["shedding"] = measure_shedding(seed, folder, options, say)
    if "purchase_2048" in chosen:
        say(f"measuring purchase_2048: {EXTRAS['purchase_2048']} ({options.duration_s:g} s, 4 turns)")
        extras["purchase_2048"] = measure_crowd(seed, folder, options, say)
    if "access_log_cost" in chosen:
        if stack is None:
            say("skipping access_log_cost: it starts a second API server on the private stack (no --url)")
        else:
            say(f"measuring access_log_cost: {EXTRAS['access_log_cost']} ({options.duration_s:g} s, 4 turns)")
            extras["access_log_cost"] = measure_access_log_cost(stack, seed, folder, options, say)
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
            say("skipping degrade_cost: it runs the app in-process on the private stack's servers (no --url)")
        else:
            say(f"measuring degrade_cost: {EXTRAS['degrade_cost']}")
            extras["degrade_cost"] = measure_degrade_cost(
                stack, results[0].cpu_us.get("api", 0.0), options.inproc_requests, say
            )
    return results, extras


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
        say(
            "skipping naive: the server does not serve it (start it with `granian --factory loadtest.apps:baseline_app`)"
        )
        return None
    if name in ("purchase_queued", "order_queued") and stack is None:
        say(f"skipping {name}: it pauses the order workers, so it needs the private stack")
        return None
    say(f"measuring {name}: {path.what} ({options.duration_s:g} s, {options.connections} connections)")
    if name == "order_queued":
        assert stack is not None
        return measure_order_queued(stack, seed, folder, options)
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
        redis_cluster=options.redis_cluster, replicas=options.redis_replicas, factory=BASELINE_FACTORY,
    )  # fmt: skip
    try:
        stack.start()
        env.update(stack.env)
        seed = seed_stack(stack.base_url, admin_token, options.users, env, say=say)
        seed.events["buckets"] = str(
            create_event(
                stack.base_url, admin_token, stock=50_000_000, per_user_limit=10_000, payment_timeout_s=3600,
                buckets=options.buckets, ticket_required=False,
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

"""`peak bench`, `peak loadtest` and `peak drill`."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx

from kit.commands import CommandError, say
from loadtest.options import BenchOptions
from loadtest.paths import EXTRAS, PATHS
from loadtest.run import run_loadtest

__all__ = ["add_commands"]


def _bench(args: argparse.Namespace) -> int:
    # Every `peak` command builds this parser, `peak worker` too: the bench and the dev stack it drives are
    # loaded only when it runs.
    from loadtest.bench import run_bench

    with _server_trouble(), _sigterm_unwinds():
        return run_bench(_options_from(args), say=say)


def _loadtest(args: argparse.Namespace) -> int:
    with _server_trouble(), _sigterm_unwinds():
        return run_loadtest(args, say=say)


def _drill(args: argparse.Namespace) -> int:
    # The drill starts private servers (devstack): loaded only when it runs, like the bench.
    from loadtest.drill.runner import run_drill

    with _sigterm_unwinds():
        return run_drill(args, say=say)


def _options_from(args: argparse.Namespace) -> BenchOptions:
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
        redis_replicas=args.replicas,
        buckets=args.buckets,
        rounds=args.rounds,
    )


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (`kill`, a CI job's timeout) stops the command as Ctrl-C does, so the private stack it started
    is stopped on the way out instead of being left running."""

    def on_term(signum: int, frame: object) -> None:
        say("stopping (SIGTERM)")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _server_trouble() -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise CommandError(
            f"the server did not answer as expected ({type(exc).__name__}: {exc}); to see its log, "
            "start the stack with `peak up` in another terminal and pass --url"
        ) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _bench_seconds(text: str) -> float:
    # 1 s at least: wrk counts whole seconds. 180 s at most: the code exchange's codes, minted for twice the
    # measurement before it, must still be good (600 s, PEAK_SSO_CODE_TTL_S on the bench's stack) at its end.
    value = float(text)
    if not 1 <= value <= 180:
        raise argparse.ArgumentTypeError(f"must be between 1 and 180 seconds, got {text}")
    return value


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="measure every hot path against the hello-world floor (wrk)")
    bench.add_argument("--duration", type=_bench_seconds, default=10.0, help="seconds per path (default 10)")
    bench.add_argument("--connections", type=_positive, default=64, help="open connections (default 64)")
    bench.add_argument(
        "--paths", default="", help=f"comma-separated subset of: {', '.join([*PATHS, *EXTRAS])}"
    )
    bench.add_argument("--url", default=None, help="measure a running stack instead of starting one")
    bench.add_argument("--workers", type=int, default=None, help="API processes of the private stack")
    bench.add_argument(
        "--users",
        type=int,
        default=BenchOptions.users,
        help=f"shoppers to seed (default {BenchOptions.users})",
    )
    bench.add_argument(
        "--rounds", type=_positive, default=BenchOptions.rounds,
        help="measure every path this many times, each round after a floor, and report medians "
        f"(default {BenchOptions.rounds})",
    )  # fmt: skip
    bench.add_argument("--json", default="bench-results.json", help="where to write the figures")
    bench.add_argument(
        "--redis-cluster", type=int, default=0, metavar="N",
        help="also measure the purchase paths on a second private stack with an N-master Redis Cluster",
    )  # fmt: skip
    bench.add_argument(
        "--replicas", type=int, default=0, metavar="R",
        help="with --redis-cluster: R replicas per master (purchases wait for one unless PEAK_SECKILL_DURABILITY"
        "=local)",
    )  # fmt: skip
    bench.add_argument(
        "--buckets", type=int, default=3, help="stock buckets of the bucketed event measured on the cluster"
    )
    bench.set_defaults(func=_bench)

    load = sub.add_parser("loadtest", help="Double-11 locust scenarios, then PASS/FAIL checks")
    load.add_argument("--url", default=None, help="target a running stack (default: start a private one)")
    load.add_argument("--users", type=int, default=200, help="peak concurrent locust users (default 200)")
    load.add_argument("--spawn-rate", type=float, default=50.0, help="users started per second")
    load.add_argument("--duration", type=float, default=60.0, help="seconds of load (the shape scales to it)")
    load.add_argument("--processes", type=int, default=1, help="locust worker processes (-1: one per core)")
    load.add_argument("--smoke", action="store_true", help="a few seconds with a handful of users (CI)")
    load.add_argument(
        "--seed-out", default=None, help="also write the seed file here (for distributed locust)"
    )
    load.set_defaults(func=_loadtest)

    drill = sub.add_parser(
        "drill", help="fault scenarios against a private stack, each invariant PASS/FAIL (exit 1 on a FAIL)"
    )
    drill.add_argument(
        "--short",
        action="store_true",
        help="a few seconds per scenario (the test suite's run), not full length",
    )
    drill.add_argument(
        "--scenario", action="append", default=[], metavar="NAME", help="run only this one (repeatable)"
    )
    drill.add_argument("--list", action="store_true", help="name every scenario and stop")
    drill.set_defaults(func=_drill)

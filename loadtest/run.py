"""`peak loadtest`: seed, run the Double-11 locust scenarios headless with live progress, then check the results.

Against --url, a running `peak up` stack, or else a private stack it starts and stops (like `peak bench`).
The sale event starts a fifth of the way into the run (the countdown phase first) and needs purchase tickets.
The checks, printed as PASS or FAIL with their numbers: no event oversold; every reservation became exactly one
order; `peak seckill reconcile` is clean; no 5xx other than intentional `degraded` answers; no failure of any
other kind either (every locust failure: unexpected statuses, refused local validations, connection errors;
and every exception a scenario raised), each kind listed; every phase of the sale ran.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from kit.commands import CommandError, load_settings
from kit.settings import Settings
from loadtest.seed import PASSWORD, add_client, bearer, create_event, create_shoppers, iso
from seckill.settings import SeckillSettings
from sso.settings import SsoSettings

if TYPE_CHECKING:
    from devstack.up import LocalStack

__all__ = ["PHASES", "Outcome", "run_loadtest", "verdict"]

Say = Callable[[str], None]

# What every phase of the Double11 shape sends (request names in locust's statistics): the run must show each.
PHASES = {
    "countdown (conditional event views answered 304)": "/seckill/events/{id} (304)",
    "tickets": "/seckill/events/{id}/ticket",
    "purchases": "/seckill/events/{id}/orders",
    "long-polled orders": "/seckill/orders/{id}?wait",
    "keep-alive refreshes": "/sso/token (keep-alive)",
    "local token validations": "TokenValidator.validate",
}
# Seconds from the event's creation to locust's first user (locust starting up), before the countdown's share.
_LOCUST_START_S = 3.0


def _admin_token(base_url: str, env: dict[str, str], prefix: str) -> str:
    """PEAK_ADMIN_TOKEN when set; otherwise a new account given the admin role with `peak sso grant`."""
    if env.get("PEAK_ADMIN_TOKEN"):
        return env["PEAK_ADMIN_TOKEN"]
    ((username, _),) = asyncio.run(create_shoppers(base_url, 1, prefix=f"{prefix}-ops"))
    granted = subprocess.run(
        [sys.executable, "-m", "peak", "sso", "grant", username, "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if granted.returncode != 0:
        raise CommandError(
            f"could not make an admin account ({granted.stderr.strip()}); set PEAK_ADMIN_TOKEN to the server's "
            "admin token, or run next to the `peak up` stack"
        )
    login = httpx.post(f"{base_url}/sso/login", json={"username": username, "password": PASSWORD}, timeout=30)
    login.raise_for_status()
    return str(login.json()["access_token"])


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


class Outcome:
    """What locust recorded: requests by name, and every failure and exception, by kind."""

    def __init__(self, csv_prefix: Path) -> None:
        stats = _rows(Path(f"{csv_prefix}_stats.csv"))
        self.by_name = {
            row["Name"]: int(row["Request Count"]) for row in stats if row["Name"] != "Aggregated"
        }
        total = next((row for row in stats if row["Name"] == "Aggregated"), None)
        self.requests = int(total["Request Count"]) if total else 0
        self.failure_kinds = [
            (int(row["Occurrences"]), f"{row['Method']} {row['Name']}: {row['Error']}")
            for row in _rows(Path(f"{csv_prefix}_failures.csv"))
        ]
        self.exception_kinds = [
            (int(row["Count"]), f"exception: {row['Message']}")
            for row in _rows(Path(f"{csv_prefix}_exceptions.csv"))
        ]
        self.failures = sum(n for n, _ in self.failure_kinds)
        self.exceptions = sum(n for n, _ in self.exception_kinds)
        self.server_errors = sum(n for n, kind in self.failure_kinds if "server error" in kind)

    def kinds(self, most: int = 8) -> Iterator[str]:
        ranked = sorted(self.failure_kinds + self.exception_kinds, reverse=True)
        for n, kind in ranked[:most]:
            yield f"{n:>7}  {kind[:200]}"
        if len(ranked) > most:
            yield f"         ... and {len(ranked) - most} more kinds"


def _drain(base_url: str, admin: str, event_id: str, say: Say, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stats: dict[str, Any] = httpx.get(
            f"{base_url}/seckill/events/{event_id}/stats", headers=bearer(admin), timeout=30
        ).json()
        if stats["queued"] == 0 or time.monotonic() > deadline:
            return stats
        say(f"waiting for the order workers: {stats['queued']} orders still queued")
        time.sleep(1)


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _private_stack(folder: Path, absent: str, say: Say) -> LocalStack:
    """A stack of its own (no --url and no `peak up` running), as `peak bench` starts one."""
    # Every `peak` command builds the parser that imports this module: the dev stack loads only when needed.
    from devstack.processes import free_port
    from devstack.up import LocalStack

    env = {
        **os.environ,
        "PEAK_ADMIN_TOKEN": os.environ.get("PEAK_ADMIN_TOKEN") or secrets.token_urlsafe(24),
        "PEAK_PORT": str(free_port()),
        "PEAK_DATA_DIR": str(folder / "stack"),
        "PEAK_ACCESS_LOG": os.environ.get("PEAK_ACCESS_LOG", "0"),
        # Every locust user comes from this one address: the per-address limits would see one crowd.
        "PEAK_SECKILL_IP_RATE_PER_S": "10000000",
        "PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR": "0",
    }
    settings = Settings.from_env(env)
    say(f"no stack at {absent}: starting a private one in {folder} (stopped at the end)")
    return LocalStack(
        settings, env=env, say=lambda t: say(f"  {t}"), output=(folder / "server.log").open("wb")
    )


def run_loadtest(args: argparse.Namespace, *, say: Say) -> int:
    settings = load_settings()
    base_url = (args.url or settings.public_base_url()).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="peak-loadtest-") as tmp:
        stack = None
        if not _ready(base_url):
            if args.url:
                raise CommandError(
                    f"{args.url} is not ready; start the stack with `peak up` or leave out --url"
                )
            stack = _private_stack(Path(tmp), base_url, say)
        try:
            if stack is not None:
                stack.start()
                settings = Settings.from_env(stack.env)
                base_url = stack.base_url
            return _run(args, settings, base_url, Path(tmp), say)
        finally:
            if stack is not None:
                stack.stop()


def _run(args: argparse.Namespace, settings: Settings, base_url: str, tmp: Path, say: Say) -> int:
    env = {**settings.environ}
    for name in ("redis_url", "database_url"):
        value = getattr(settings, name)
        if value:
            env[f"PEAK_{name.upper()}"] = value
    users = 8 if args.smoke else args.users
    duration = 8.0 if args.smoke else args.duration
    run_id = secrets.token_hex(3)
    prefix = f"load-{run_id}"
    say(f"seeding {max(users, 20)} shoppers, a sale event and an introspection client on {base_url}")
    admin = _admin_token(base_url, env, prefix)
    shoppers = asyncio.run(create_shoppers(base_url, max(users, 20), prefix=prefix))
    client_id, client_secret = add_client(env, prefix)
    openid = httpx.get(f"{base_url}/.well-known/openid-configuration", timeout=10).json()
    payment = settings.of(SeckillSettings).payment_secrets()
    # Created last: its countdown is a fifth of the run, from locust's start.
    starts_at = datetime.now(UTC) + timedelta(seconds=_LOCUST_START_S + 0.2 * duration)
    event = create_event(
        base_url, admin, stock=max(5, users // 2), per_user_limit=1, payment_timeout_s=60,
        starts_at=iso(starts_at), ticket_required=True, admission_spread_ms=int(min(3000, duration * 50)),
    )  # fmt: skip
    seed_file = tmp / "seed.json"
    seed_text = json.dumps(
        {
            "usernames": [u for u, _ in shoppers],
            "password": PASSWORD,
            "event_id": str(event["id"]),
            "price": int(event["price"]),
            "starts_at": iso(starts_at),
            "sku": event["sku"],
            "admin_token": admin,
            "client_id": client_id,
            "client_secret": client_secret,
            "issuer": openid["issuer"],
            "audience": settings.of(SsoSettings).audience,
            "payment_secret": payment[0].decode() if payment else "",
        }
    )
    seed_file.touch(mode=0o600)
    seed_file.write_text(seed_text)
    if args.seed_out:
        Path(args.seed_out).write_text(seed_text)
    if not payment:
        say("PEAK_PAYMENT_SECRET is not set here: shoppers will not pay (the callback must be signed)")
    csv_prefix = tmp / "locust"
    locustfile = str(resources.files("loadtest").joinpath("locustfile.py"))
    argv = [
        sys.executable, "-m", "locust", "-f", locustfile, "--headless", "--host", base_url,
        "--csv", str(csv_prefix), "--loglevel", "WARNING", "--exit-code-on-error", "0",
    ]  # fmt: skip
    if args.processes != 1:
        argv += ["--processes", str(args.processes)]
    env.update(
        PEAK_LOADTEST_SEED=str(seed_file),
        PEAK_LOADTEST_DURATION_S=str(duration),
        PEAK_LOADTEST_USERS=str(users),
        PEAK_LOADTEST_SPAWN_RATE=str(args.spawn_rate),
        # A run is far shorter than an access token lives: every shopper refreshes about four times.
        PEAK_LOADTEST_KEEPALIVE_S=str(max(1.0, duration / 4)),
    )
    say(f"running the Double11 shape: {users} users at the peak, {duration:g} s (locust's progress follows)")
    result = subprocess.run(argv, env=env, check=False, timeout=duration + 300)
    if result.returncode != 0:
        raise CommandError(f"locust exited with code {result.returncode}; its output is above")
    outcome = Outcome(csv_prefix)
    stats = _drain(base_url, admin, str(event["id"]), say)
    reconcile = subprocess.run(
        [sys.executable, "-m", "peak", "seckill", "reconcile", str(event["id"])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return verdict(outcome, stats, reconcile, say)


def verdict(
    outcome: Outcome, stats: dict[str, Any], reconcile: subprocess.CompletedProcess[str], say: Say
) -> int:
    reserved = stats["stock_total"] - stats["stock_left"]
    orders = stats["orders_pending_payment"] + stats["orders_paid"]
    missing = [phase for phase, name in PHASES.items() if outcome.by_name.get(name, 0) == 0]
    checks = [
        ("no event oversold", stats["stock_left"] >= 0 and reserved <= stats["stock_total"],
         f"stock {stats['stock_total']}, left {stats['stock_left']}"),
        ("every reservation became exactly one order",
         stats["queued"] == 0 and reserved == orders + stats["dead_letters"],
         f"reserved {reserved}, orders {orders} (+{stats['orders_cancelled']} cancelled, stock returned), "
         f"queued {stats['queued']}, dead letters {stats['dead_letters']}"),
        ("reconcile is clean", reconcile.returncode == 0, reconcile.stdout.strip().replace("\n", "; ")),
        ("no 5xx but intentional `degraded`", outcome.server_errors == 0,
         f"{outcome.server_errors} server errors in {outcome.requests} requests"),
        ("no failure of any kind", outcome.failures == 0 and outcome.exceptions == 0,
         f"{outcome.failures} failed requests or validations, {outcome.exceptions} exceptions in the scenarios"),
        ("every phase of the sale ran", not missing,
         "; ".join(f"{p} {outcome.by_name.get(n, 0)}" for p, n in PHASES.items())),
        ("load was applied", outcome.requests > 0, f"{outcome.requests} requests"),
    ]  # fmt: skip
    for name, ok, detail in checks:
        say(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    if outcome.failure_kinds or outcome.exception_kinds:
        say("failures by kind (occurrences):")
        for line in outcome.kinds():
            say(line)
    passed = all(ok for _, ok, _ in checks)
    say("PASS" if passed else "FAIL")
    return 0 if passed else 1

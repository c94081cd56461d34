"""`peak loadtest`: seed, run the Double-11 locust scenarios headless with live progress, then check the results.

The checks, printed as PASS or FAIL with their numbers: no event oversold; every reservation became exactly one
order; `peak seckill reconcile` is clean; no 5xx other than intentional `degraded` answers.
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
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from kit.commands import CommandError, load_settings
from loadtest.seed import PASSWORD, add_client, bearer, create_event, create_shoppers
from sso.settings import SsoSettings

__all__ = ["run_loadtest"]

Say = Callable[[str], None]


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


def _server_errors(csv_prefix: Path) -> int:
    path = Path(f"{csv_prefix}_failures.csv")
    if not path.exists():
        return 0
    with path.open() as f:
        return sum(int(row["Occurrences"]) for row in csv.DictReader(f) if "server error" in row["Error"])


def _requests(csv_prefix: Path) -> tuple[int, int]:
    path = Path(f"{csv_prefix}_stats.csv")
    if not path.exists():
        return 0, 0
    with path.open() as f:
        total = next((row for row in csv.DictReader(f) if row["Name"] == "Aggregated"), None)
    if total is None:
        return 0, 0
    return int(total["Request Count"]), int(total["Failure Count"])


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


def run_loadtest(args: argparse.Namespace, *, say: Say) -> int:
    settings = load_settings()
    base_url = (args.url or settings.public_base_url()).rstrip("/")
    try:
        httpx.get(f"{base_url}/readyz", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise CommandError(
            f"{base_url} is not ready ({exc}); start the stack with `peak up` or pass --url"
        ) from None
    env = {**os.environ}
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
    stock = max(5, users // 2)
    event = create_event(base_url, admin, stock=stock, per_user_limit=1, payment_timeout_s=60)
    client_id, client_secret = add_client(env, prefix)
    openid = httpx.get(f"{base_url}/.well-known/openid-configuration", timeout=10).json()
    with tempfile.TemporaryDirectory(prefix="peak-loadtest-") as tmp:
        seed_file = Path(tmp) / "seed.json"
        seed_text = json.dumps(
            {
                "usernames": [u for u, _ in shoppers],
                "password": PASSWORD,
                "event_id": str(event["id"]),
                "sku": event["sku"],
                "admin_token": admin,
                "client_id": client_id,
                "client_secret": client_secret,
                "issuer": openid["issuer"],
                "audience": settings.of(SsoSettings).audience,
            }
        )
        seed_file.write_text(seed_text)
        if args.seed_out:
            Path(args.seed_out).write_text(seed_text)
        csv_prefix = Path(tmp) / "locust"
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
        )
        say(
            f"running the Double11 shape: {users} users at the peak, {duration:g} s (locust's progress follows)"
        )
        result = subprocess.run(argv, env=env, check=False, timeout=duration + 300)
        if result.returncode != 0:
            raise CommandError(f"locust exited with code {result.returncode}; its output is above")
        requests, failures = _requests(csv_prefix)
        server_errors = _server_errors(csv_prefix)
    stats = _drain(base_url, admin, str(event["id"]), say)
    reconcile = subprocess.run(
        [sys.executable, "-m", "peak", "seckill", "reconcile", str(event["id"])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    reserved = stats["stock_total"] - stats["stock_left"]
    orders = stats["orders_pending_payment"] + stats["orders_paid"]
    checks = [
        ("no event oversold", stats["stock_left"] >= 0 and reserved <= stats["stock_total"],
         f"stock {stats['stock_total']}, left {stats['stock_left']}"),
        ("every reservation became exactly one order",
         stats["queued"] == 0 and reserved == orders + stats["dead_letters"],
         f"reserved {reserved}, orders {orders} (+{stats['orders_cancelled']} cancelled, stock returned), "
         f"queued {stats['queued']}, dead letters {stats['dead_letters']}"),
        ("reconcile is clean", reconcile.returncode == 0, reconcile.stdout.strip().replace("\n", "; ")),
        ("no 5xx but intentional `degraded`", server_errors == 0,
         f"{server_errors} server errors in {requests} requests ({failures} failures in all)"),
        ("load was applied", requests > 0, f"{requests} requests"),
    ]  # fmt: skip
    for name, ok, detail in checks:
        say(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    passed = all(ok for _, ok, _ in checks)
    say("PASS" if passed else "FAIL")
    return 0 if passed else 1

"""The paths `peak bench` measures, as request lines for wrk, and the data they need (``seed_stack``)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from kit.commands import CommandError
from loadtest.seed import PASSWORD, add_client, bearer, create_event, create_shoppers
from loadtest.wrk_runner import Line

__all__ = ["CLUSTER_PATHS", "CLUSTER_SUFFIX", "EXTRAS", "PATHS", "BenchPath", "Seed", "seed_stack"]


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


@dataclass(frozen=True)
class BenchPath:
    """One measured path: its name in the table and JSON, what it is, the statuses it should answer."""

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


PATHS: dict[str, BenchPath] = {
    p.name: p
    for p in (
        BenchPath("floor", "hello world (GET /healthz)", (200,), lambda s: [("GET", "/healthz", {}, "")]),
        BenchPath("purchase", "purchase while stock remains", (202,), _purchase("stock")),
        BenchPath(
            "purchase_queued",
            "purchase, order workers paused (orders wait in Redis)",
            (202,),
            _purchase("stock"),
        ),
        BenchPath("sold_out", "purchase after sell-out", (409,), _purchase("sold_out")),
        BenchPath(
            "validate_strict",
            "strict token validation (GET /sso/userinfo)",
            (200,),
            lambda s: [("GET", "/sso/userinfo", bearer(t), "") for t in s.tokens],
        ),
        BenchPath("introspect", "introspection (POST /sso/introspect)", (200,), _introspect),
        BenchPath("login", "password login (argon2id, default cost)", (200,), _login),
        BenchPath(
            "naive",
            "naive PostgreSQL row-lock purchase (baseline)",
            (202,),
            lambda s: [("POST", f"/bench/naive/{s.events['naive']}/orders", bearer(t), "") for t in s.tokens],
        ),
    )
}

# Measured on the Redis Cluster stack (--redis-cluster), in this order.
CLUSTER_PATHS: dict[str, BenchPath] = {
    "floor": PATHS["floor"],
    "purchase": PATHS["purchase"],
    "sold_out": PATHS["sold_out"],
    "validate_strict": PATHS["validate_strict"],
    "purchase_buckets": BenchPath(
        "purchase_buckets", "purchase while stock remains, event split into stock buckets", (202,),
        _purchase("buckets"),
    ),
}  # fmt: skip
CLUSTER_SUFFIX = " (cluster)"

# Measurements beyond one wrk run of a path (loadtest/extras.py), chosen with --paths like the paths.
EXTRAS = {
    "degrade_cost": "the degradation middleware's CPU per request (the app with and without it, in-process)",
    "shedding": "purchase latency under a flood of reviews traffic, controller off vs on",
}


def seed_stack(
    base_url: str, admin_token: str, users: int, env: dict[str, str], *, say: Callable[[str], None]
) -> Seed:
    """Shoppers, the sale events and an introspection client; the naive event only where the server mounts
    the baseline (loadtest/apps.py)."""
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
        raise CommandError(
            f"could not sell the sold-out event's last item: {bought.status_code} {bought.text}"
        )
    naive = httpx.post(
        f"{base_url}/bench/naive/events", json={"stock": 50_000_000}, headers=bearer(admin_token), timeout=30
    )
    if naive.status_code == 201:
        seed.events["naive"] = str(naive.json()["id"])
    seed.client_id, seed.client_secret = add_client(env, f"bench-{run_id}")
    return seed

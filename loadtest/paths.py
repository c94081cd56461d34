"""The paths `peak bench` measures, as request lines for wrk, and the data they need (``seed_stack``).

wrk cycles through a path's lines one request after the other, so a path with one line per shopper sends each
request as some shopper with that shopper's own data (order, ticket): an owner polling their order, a buyer
with their ticket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from kit.commands import CommandError
from loadtest.oidc_paths import REDIRECT_URI, exchange_lines, hop_lines
from loadtest.seed import (
    PASSWORD,
    add_client,
    bearer,
    buy_one_each,
    create_event,
    create_signed_in,
    fetch_tickets,
    iso,
    order_status,
    wait_written,
)
from loadtest.wrk_runner import Line

__all__ = ["CLUSTER_PATHS", "CLUSTER_SUFFIX", "EXTRAS", "PATHS", "BenchPath", "Seed", "seed_stack"]


@dataclass
class Seed:
    """What the paths need: tokens, credentials, event ids."""

    base_url: str
    admin_token: str
    tokens: list[str] = field(default_factory=list)
    usernames: list[str] = field(default_factory=list)
    # The shoppers' session cookies (peak_sid), in the order of ``tokens``: the SSO hop's live sessions.
    cookies: list[str] = field(default_factory=list)
    # The introspection client, also an OpenID Connect client (confidential) redirecting to REDIRECT_URI, its
    # ID tokens ES256.
    client_id: str = ""
    client_secret: str = ""
    # A second OpenID Connect client, registered with the default ID token algorithm (RS256).
    rs256_client_id: str = ""
    rs256_client_secret: str = ""
    events: dict[str, str] = field(default_factory=dict)
    # The ETag of the upcoming event's view (its countdown page), for the conditional request.
    etag: str = ""
    # One order per shopper, in the order of ``tokens``: "written" in PostgreSQL at seed time, "queued" made
    # while the order workers are paused (loadtest/extras.py).
    orders: dict[str, list[str]] = field(default_factory=dict)
    # A measured run's length (s) and connections: the code exchange makes its codes for that long
    # (loadtest/oidc_paths.py).
    run_s: float = 10.0
    connections: int = 64


@dataclass(frozen=True)
class BenchPath:
    """One measured path: its name in the table and JSON, what it is, the statuses it should answer."""

    name: str
    what: str
    expected: tuple[int, ...]
    lines: Callable[[Seed], list[Line]]
    # Whether a second of wrk, not counted, comes first; not for lines good once (the code exchange: the wrk
    # run making its codes warms the server up instead).
    warm_up: bool = True


def _purchase(event: str) -> Callable[[Seed], list[Line]]:
    return lambda s: [("POST", f"/seckill/events/{s.events[event]}/orders", bearer(t), "") for t in s.tokens]


def _introspect(s: Seed) -> list[Line]:
    basic = base64.b64encode(f"{s.client_id}:{s.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
    return [("POST", "/sso/introspect", headers, f"token={t}") for t in s.tokens]


def _as_shoppers(method: str, target: Callable[[Seed], str]) -> Callable[[Seed], list[Line]]:
    return lambda s: [(method, target(s), bearer(t), "") for t in s.tokens]


def _orders(kind: str) -> Callable[[Seed], list[Line]]:
    return lambda s: [
        ("GET", f"/seckill/orders/{order}", bearer(t), "")
        for t, order in zip(s.tokens, s.orders[kind], strict=True)
    ]


def _ticketed_purchase(s: Seed) -> list[Line]:
    """Each shopper's purchase with their own ticket, fetched now: a run needs them valid only for its own
    length, whatever PEAK_SECKILL_TICKET_TTL_S the server has (the private stack sets an hour)."""
    event = s.events["ticketed"]
    tickets = fetch_tickets(s.base_url, s.tokens, event)
    return [
        ("POST", f"/seckill/events/{event}/orders", {**bearer(t), "X-Purchase-Ticket": k}, "")
        for t, k in zip(s.tokens, tickets, strict=True)
    ]


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
            "event_view",
            "event view of a sale on with stock (GET /seckill/events/{id})",
            (200,),
            lambda s: [("GET", f"/seckill/events/{s.events['stock']}", {}, "")],
        ),
        BenchPath(
            "event_view_304",
            "event view, conditional, of an upcoming event (If-None-Match: 304)",
            (304,),
            lambda s: [("GET", f"/seckill/events/{s.events['upcoming']}", {"If-None-Match": s.etag}, "")],
        ),
        BenchPath(
            "order_queued",
            "owner polls an order still queued, workers paused (GET /seckill/orders/{id})",
            (200,),
            _orders("queued"),
        ),
        BenchPath(
            "order_written",
            "owner polls an order in PostgreSQL, pending payment (GET /seckill/orders/{id})",
            (200,),
            _orders("written"),
        ),
        BenchPath(
            "sso_session",
            "current session (GET /sso/session, bearer)",
            (200,),
            _as_shoppers("GET", lambda s: "/sso/session"),
        ),
        BenchPath(
            "ticket",
            "purchase ticket of a started ticketed event (GET /seckill/events/{id}/ticket)",
            (200,),
            _as_shoppers("GET", lambda s: f"/seckill/events/{s.events['ticketed']}/ticket"),
        ),
        BenchPath(
            "purchase_ticket",
            "purchase with X-Purchase-Ticket while stock remains",
            (202,),
            _ticketed_purchase,
        ),
        BenchPath(
            "sso_hop",
            "single sign-on hop (GET /sso/authorize, live session cookie: 302 with a code)",
            (302,),
            lambda s: hop_lines(s.client_id, s.cookies),
        ),
        BenchPath(
            "code_exchange",
            "authorization code exchange (POST /sso/token, PKCE, client_secret_basic; a fresh code each;"
            " ES256 ID token)",
            (200,),
            lambda s: exchange_lines(
                s.base_url, s.client_id, s.client_secret, s.cookies, run_s=s.run_s, connections=s.connections
            ),
            warm_up=False,
        ),
        BenchPath(
            "code_exchange_rs256",
            "the code exchange of a client with the default RS256 ID tokens",
            (200,),
            lambda s: exchange_lines(
                s.base_url,
                s.rs256_client_id,
                s.rs256_client_secret,
                s.cookies,
                run_s=s.run_s,
                connections=s.connections,
            ),
            warm_up=False,
        ),
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
    "purchase_2048": "purchase goodput and p99 at --connections and at 2,048 connections, errors counted",
    "access_log_cost": "the floor of two fresh API servers, access log on and off, and the log's CPU in-process",
}


def seed_stack(
    base_url: str, admin_token: str, users: int, env: dict[str, str], *, say: Callable[[str], None]
) -> Seed:
    """Shoppers (with their session cookies), the sale events and a client (introspection and OpenID Connect);
    the naive event only where the server mounts the baseline (loadtest/apps.py)."""
    run_id = secrets.token_hex(3)
    say(f"seeding {users} shoppers, the sale events, their orders and an introspection client")
    shoppers = asyncio.run(create_signed_in(base_url, users, prefix=f"bench-{run_id}"))
    seed = Seed(base_url=base_url, admin_token=admin_token)
    seed.usernames = [u for u, _, _ in shoppers]
    seed.tokens = [t for _, t, _ in shoppers]
    seed.cookies = [c for _, _, c in shoppers]
    # Unticketed events keep measuring the purchase as before tickets; the ticketed one is its own path.
    plenty = {
        "stock": 50_000_000,
        "per_user_limit": 10_000,
        "payment_timeout_s": 3600,
        "ticket_required": False,
    }
    for name in ("stock", "crowd", "written", "polled"):
        seed.events[name] = str(create_event(base_url, admin_token, **plenty)["id"])
    seed.events["ticketed"] = str(
        create_event(base_url, admin_token, **{**plenty, "ticket_required": True, "admission_spread_ms": 0})[
            "id"
        ]
    )
    later = datetime.now(UTC) + timedelta(hours=2)
    seed.events["upcoming"] = str(
        create_event(
            base_url, admin_token, **plenty, starts_at=iso(later), ends_at=iso(later + timedelta(hours=1))
        )["id"]
    )
    shown = httpx.get(f"{base_url}/seckill/events/{seed.events['upcoming']}", timeout=30)
    if shown.status_code != 200 or not shown.headers.get("etag"):
        raise CommandError(f"the event view answered {shown.status_code} without an ETag: {shown.text}")
    seed.etag = shown.headers["etag"]
    seed.orders["written"] = buy_one_each(base_url, seed.tokens, seed.events["written"])
    wait_written(base_url, admin_token, seed.events["written"], say=say)
    status = order_status(base_url, seed.tokens[-1], seed.orders["written"][-1])
    if status != "pending_payment":
        raise CommandError(f"a written order of the bench is {status!r}, not pending_payment")
    seed.events["sold_out"] = str(create_event(base_url, admin_token, stock=1, ticket_required=False)["id"])
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
    seed.client_id, seed.client_secret = add_client(
        env, f"bench-{run_id}", "--redirect-uri", REDIRECT_URI, "--id-token-signed-response-alg", "ES256"
    )
    seed.rs256_client_id, seed.rs256_client_secret = add_client(
        env, f"bench-{run_id}-rs256", "--redirect-uri", REDIRECT_URI
    )
    return seed

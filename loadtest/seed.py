"""Data the benchmark and the load scenarios need, created through the public API (and the CLI for clients)."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from kit.commands import CommandError

__all__ = [
    "PASSWORD", "add_client", "bearer", "buy_one_each", "create_event", "create_shoppers", "create_signed_in",
    "fetch_tickets", "iso", "order_status", "wait_written",
]  # fmt: skip

PASSWORD = "peak-loadtest-password-0123"  # noqa: S105 - the seeded shoppers' password, printed nowhere else


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def create_shoppers(
    base_url: str, count: int, *, prefix: str, concurrency: int = 16
) -> list[tuple[str, str]]:
    """(username, access token) of ``count`` new shoppers, registered and logged in concurrently."""
    return [
        (u, t) for u, t, _ in await create_signed_in(base_url, count, prefix=prefix, concurrency=concurrency)
    ]


async def create_signed_in(
    base_url: str, count: int, *, prefix: str, concurrency: int = 16
) -> list[tuple[str, str, str]]:
    """(username, access token, session cookie) of ``count`` new shoppers, registered and logged in
    concurrently."""
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, i: int) -> tuple[str, str, str]:
        username = f"{prefix}-{i}"
        async with gate:
            created = await http.post("/sso/users", json={"username": username, "password": PASSWORD})
            if created.status_code == 429:
                raise CommandError(
                    f"the server refused to sign up shopper {username} ({created.text}): a load test signs up "
                    "every shopper from this address; start the server with PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR=0"
                )
            if created.status_code != 201:
                raise CommandError(
                    f"could not create shopper {username}: {created.status_code} {created.text}"
                )
            login = await http.post("/sso/login", json={"username": username, "password": PASSWORD})
            if login.status_code != 200:
                raise CommandError(f"could not log {username} in: {login.status_code} {login.text}")
            return username, str(login.json()["access_token"]), login.cookies.get("peak_sid") or ""

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        return list(await asyncio.gather(*(one(http, i) for i in range(count))))


def create_event(base_url: str, admin_token: str, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body = {
        "sku": f"sku-{secrets.token_hex(4)}",
        "title": "Double-11 flash sale",
        "price": 9900,
        "stock": 100,
        "starts_at": iso(now - timedelta(seconds=5)),
        "ends_at": iso(now + timedelta(hours=2)),
        **fields,
    }
    answer = httpx.post(f"{base_url}/seckill/events", json=body, headers=bearer(admin_token), timeout=30)
    if answer.status_code != 201:
        raise CommandError(f"could not create a sale event: {answer.status_code} {answer.text}")
    created: dict[str, Any] = answer.json()
    return created


async def _each(
    base_url: str, tokens: Sequence[str], call: Callable[[httpx.AsyncClient, str], Awaitable[str]]
) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(http: httpx.AsyncClient, token: str) -> str:
        async with gate:
            return await call(http, token)

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        return list(await asyncio.gather(*(one(http, t) for t in tokens)))


def buy_one_each(base_url: str, tokens: Sequence[str], event_id: str) -> list[str]:
    """One order of the event for each shopper (an unticketed event); their order ids, in order."""

    async def buy(http: httpx.AsyncClient, token: str) -> str:
        answer = await http.post(f"/seckill/events/{event_id}/orders", headers=bearer(token))
        if answer.status_code != 202:
            raise CommandError(f"could not buy from event {event_id}: {answer.status_code} {answer.text}")
        return str(answer.json()["order_id"])

    return asyncio.run(_each(base_url, tokens, buy))


def fetch_tickets(base_url: str, tokens: Sequence[str], event_id: str) -> list[str]:
    """Each shopper's purchase ticket of a started ticketed event, in order."""

    async def fetch(http: httpx.AsyncClient, token: str) -> str:
        answer = await http.get(f"/seckill/events/{event_id}/ticket", headers=bearer(token))
        if answer.status_code != 200:
            raise CommandError(
                f"could not get a ticket of event {event_id}: {answer.status_code} {answer.text}"
            )
        return str(answer.json()["ticket"])

    return asyncio.run(_each(base_url, tokens, fetch))


def order_status(base_url: str, token: str, order_id: str) -> str:
    answer = httpx.get(f"{base_url}/seckill/orders/{order_id}", headers=bearer(token), timeout=30)
    if answer.status_code != 200:
        raise CommandError(f"could not read order {order_id}: {answer.status_code} {answer.text}")
    return str(answer.json()["status"])


def wait_written(
    base_url: str, admin_token: str, event_id: str, *, timeout_s: float = 120, say: Callable[[str], None]
) -> None:
    """Until the order workers have written every queued order of the event to PostgreSQL."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, headers=bearer(admin_token), timeout=30) as http:
        while (queued := http.get(f"/seckill/events/{event_id}/stats").json()["queued"]) > 0:
            if time.monotonic() > deadline:
                raise CommandError(f"{queued} orders of event {event_id} still queued after {timeout_s:g} s")
            say(f"waiting for the order workers: {queued} orders of event {event_id} still queued")
            time.sleep(0.5)


def add_client(env: Mapping[str, str], name: str, *options: str) -> tuple[str, str]:
    """Register a client with `peak sso add-client NAME OPTIONS...`; (client id, secret)."""
    result = subprocess.run(
        [sys.executable, "-m", "peak", "sso", "add-client", name, *options],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        raise CommandError(
            f"`peak sso add-client {name}` failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    secret = lines[-1]
    if not re.fullmatch(r"[A-Za-z0-9_\-.~+/=]{16,}", secret):
        raise CommandError(
            f"`peak sso add-client` printed no secret on its last line: {result.stdout.strip()}"
        )
    return name, secret

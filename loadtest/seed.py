"""Data the benchmark and the load scenarios need, created through the public API (and the CLI for clients)."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from kit.commands import CommandError

__all__ = ["PASSWORD", "add_client", "bearer", "create_event", "create_shoppers", "iso"]

PASSWORD = "peak-loadtest-password-0123"  # noqa: S105 - the seeded shoppers' password, printed nowhere else


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def create_shoppers(
    base_url: str, count: int, *, prefix: str, concurrency: int = 16
) -> list[tuple[str, str]]:
    """(username, access token) of ``count`` new shoppers, registered and logged in concurrently."""
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, i: int) -> tuple[str, str]:
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
            return username, str(login.json()["access_token"])

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


def add_client(env: Mapping[str, str], name: str) -> tuple[str, str]:
    """Register an introspection client with `peak sso add-client`; (client id, secret)."""
    result = subprocess.run(
        [sys.executable, "-m", "peak", "sso", "add-client", name],
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

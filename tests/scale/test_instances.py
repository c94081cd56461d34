"""Two API instances behind nginx (`peak up --instances 2`): any instance serves any user, through HTTP only.

A user logs in on one instance and is known on the other; a purchase and its per-user limit hold across
instances; a switch flipped on one is obeyed by the other; and a rush through the balancer sells exactly the
stock. The instances share nothing but Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack.processes import free_port
from tests.conftest import Servers, clean
from tests.support import alive_in, sessions_started_by, start_peak, wait_http

ADMIN = {"Authorization": "Bearer scale-admin-token"}
PASSWORD = "scale-out-Passphrase-2026!"

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    balancer: str
    instances: list[str]


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("instances")
    port = free_port()
    env = {
        **servers.env(),
        "PEAK_DATA_DIR": str(folder / "stack"),
        "PEAK_PORT": str(port),
        "PEAK_WORKERS": "1",
        "PEAK_ADMIN_TOKEN": ADMIN["Authorization"].split()[1],
        # Every request through nginx comes from this machine: per-IP limits would throttle the test.
        "PEAK_SECKILL_IP_RATE_PER_S": "10000000",
        "PEAK_SECKILL_USER_RATE_PER_S": "1000",
        # The switches here are flipped by the tests alone, not by the controller under a loaded machine (its
        # own tests are tests/degrade/test_controller.py).
        "PEAK_DEGRADE_CONTROLLER": "0",
    }
    # The suites before this one leave their state in the session's Redis (in the cluster pass, tests/seckill
    # left reviews shed): the stack starts on clean servers, as every test on make_settings does.
    clean(servers)
    log = folder / "up.log"
    proc = start_peak("up", "--instances", "2", env=env, log=log)
    sessions: set[int] = set()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=90)
        instances = (folder / "stack" / "instances").read_text().split()
        for url in instances:  # the balancer answers as soon as one instance does
            wait_http(f"{url}/readyz", timeout_s=90)
        sessions = sessions_started_by(proc.pid)
        yield Stack(f"http://127.0.0.1:{port}", instances)
    finally:
        _stop(proc)
    assert alive_in(sessions | {proc.pid}) == [], log.read_text()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(40)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        yield client


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def _user(http: httpx.AsyncClient, base: str) -> dict[str, str]:
    """A new user registered and logged in through ``base``: the bearer header."""
    username = _name("scale")
    made = await http.post(f"{base}/sso/users", json={"username": username, "password": PASSWORD})
    assert made.status_code == 201, made.text
    login = await http.post(f"{base}/sso/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def _event(http: httpx.AsyncClient, base: str, *, stock: int, limit: int = 1) -> int:
    now = dt.datetime.now(dt.UTC)
    body = {
        "sku": _name("SKU-"),
        "title": "Scale-out phone",
        "price": 99_900,
        "stock": stock,
        "starts_at": (now - dt.timedelta(minutes=1)).isoformat(),
        "ends_at": (now + dt.timedelta(hours=1)).isoformat(),
        "per_user_limit": limit,
        "ticket_required": False,
    }
    made = await http.post(f"{base}/seckill/events", json=body, headers=ADMIN)
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


async def _settled_stats(http: httpx.AsyncClient, base: str, event_id: int) -> dict[str, Any]:
    """The event's stats once the order writer has stored every queued order."""
    stats: dict[str, Any] = {}
    for _ in range(150):
        answer = await http.get(f"{base}/seckill/events/{event_id}/stats", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        stats = answer.json()
        if stats["queued"] == 0 and stats["reserved"] == stats["orders_pending_payment"]:
            return stats
        await asyncio.sleep(0.1)
    raise AssertionError(f"orders did not settle: {stats}")


async def test_log_in_on_one_instance_validate_and_buy_on_the_other(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    one, other = stack.instances
    bearer = await _user(http, one)
    session = await http.get(f"{other}/sso/session", headers=bearer)
    assert session.status_code == 200, session.text
    event_id = await _event(http, one, stock=5, limit=1)
    bought = await http.post(f"{other}/seckill/events/{event_id}/orders", headers=bearer)
    assert bought.status_code == 202, bought.text
    # The per-user limit lives in Redis, not in the instance that sold.
    again = await http.post(f"{one}/seckill/events/{event_id}/orders", headers=bearer)
    assert again.status_code == 409 and again.json()["error"]["code"] == "limit_reached", again.text
    stats = await _settled_stats(http, one, event_id)
    assert (stats["stock_left"], stats["orders_pending_payment"], stats["drift"]) == (4, 1, 0)
    # Logging out on one instance ends the session everywhere.
    assert (await http.post(f"{one}/sso/logout", headers=bearer)).status_code == 204
    for _ in range(50):
        if (await http.get(f"{other}/sso/session", headers=bearer)).status_code == 401:
            break
        await asyncio.sleep(0.1)
    assert (await http.get(f"{other}/sso/session", headers=bearer)).status_code == 401


async def test_a_switch_flipped_on_one_instance_is_obeyed_by_the_other(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    one, other = stack.instances

    async def modes(base: str) -> dict[str, str]:
        listing = await http.get(f"{base}/degrade/switches", headers=ADMIN)
        assert listing.status_code == 200, listing.text
        return {s["name"]: s["effective"] for s in listing.json()["switches"]}

    before = await modes(other)
    assert before["reviews"] == "open", before
    flip = {"mode": "shed", "reason": "scale-out test"}
    changed = await http.put(f"{one}/degrade/switches/reviews", json=flip, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    try:
        seen = before
        for _ in range(50):
            seen = await modes(other)
            if seen["reviews"] == "shed":
                break
            await asyncio.sleep(0.1)
        assert seen["reviews"] == "shed", seen
    finally:
        back = {"mode": "open", "reason": "scale-out test over"}
        assert (
            await http.put(f"{other}/degrade/switches/reviews", json=back, headers=ADMIN)
        ).status_code == 200
    for _ in range(50):
        if (await modes(one))["reviews"] == "open":
            break
        await asyncio.sleep(0.1)
    assert (await modes(one))["reviews"] == "open"


async def test_a_rush_through_the_balancer_sells_exactly_the_stock(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    users, stock = 150, 40
    gate = asyncio.Semaphore(40)

    async def make_user() -> dict[str, str]:
        async with gate:
            return await _user(http, stack.balancer)

    bearers = await asyncio.gather(*(make_user() for _ in range(users)))
    event_id = await _event(http, stack.balancer, stock=stock, limit=1)
    url = f"{stack.balancer}/seckill/events/{event_id}/orders"
    # Every user tries twice at once: 300 simultaneous purchases spread over both instances.
    answers = await asyncio.gather(*(http.post(url, headers=b) for b in bearers for _ in range(2)))
    codes = collections.Counter(
        a.status_code if a.status_code != 409 else a.json()["error"]["code"] for a in answers
    )
    assert codes[202] == stock, codes
    assert set(codes) <= {202, "sold_out", "limit_reached"}, codes
    buyers = [a.request.headers["authorization"] for a in answers if a.status_code == 202]
    assert len(set(buyers)) == stock, "one user got two items"
    stats = await _settled_stats(http, stack.balancer, event_id)
    assert (stats["stock_left"], stats["orders_pending_payment"], stats["drift"]) == (0, stock, 0), stats

"""The password-hashing queue is bounded (503 `busy` at once when full) and serves logins before registrations."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from kit.settings import Settings
from sso.errors import HashingBusy
from sso.passwords import Kind, Passwords
from sso.settings import SsoSettings
from tests.sso.conftest import PASSWORD, error_code, register, sso_app

# The default argon2id cost (about 20 ms a hash here), so that the pool is really busy.
REAL_COST = {"PEAK_SSO_ARGON2_MEMORY_KIB": "19456", "PEAK_SSO_ARGON2_TIME_COST": "2"}


async def test_the_queue_is_bounded_and_registrations_get_half() -> None:
    passwords = Passwords(Settings.from_env({"PEAK_SSO_HASH_QUEUE": "6"}).of(SsoSettings))
    try:
        release = asyncio.Event()
        order: list[str] = []

        async def hold(kind: Kind, name: str) -> None:
            async with passwords.turn(kind):
                order.append(name)
                await release.wait()

        capacity = passwords.pool_size + 6
        signups = [asyncio.create_task(hold("signup", f"s{i}")) for i in range(capacity // 2)]
        await asyncio.sleep(0)
        with pytest.raises(HashingBusy):
            async with passwords.turn("signup"):
                pass
        logins = [asyncio.create_task(hold("login", f"l{i}")) for i in range(capacity - capacity // 2)]
        await asyncio.sleep(0)
        with pytest.raises(HashingBusy):
            async with passwords.turn("login"):
                pass
        # A login that gives up while waiting leaves the line.
        logins[-1].cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*signups, *logins[:-1])
        # The pool's threads went to the first registrations; every waiting login went before the others.
        waiting = order[passwords.pool_size :]
        assert waiting[: len(logins) - 1] == [f"l{i}" for i in range(len(logins) - 1)]
        assert sorted(order) == sorted(
            [f"s{i}" for i in range(capacity // 2)] + [f"l{i}" for i in range(len(logins) - 1)]
        )
        async with passwords.turn("login"):
            pass
    finally:
        passwords.close()


async def test_a_full_queue_answers_503_busy_at_once(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_HASH_QUEUE="4", PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR="0", **REAL_COST)
    async with sso_app(settings) as app:
        await register(app.http, "alice")

        async def timed(i: int) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            body = {"username": "alice" if i % 2 else f"new{i}", "password": PASSWORD}
            response = await app.http.post("/sso/login" if i % 2 else "/sso/users", json=body)
            return response, time.monotonic() - started

        answers = await asyncio.gather(*(timed(i) for i in range(100)))
        statuses = Counter(r.status_code for r, _ in answers)
        assert set(statuses) <= {200, 201, 503} and statuses[503] > 50, statuses
        busy = [(r, s) for r, s in answers if r.status_code == 503]
        assert {error_code(r) for r, _ in busy} == {"busy"} and {
            r.headers["retry-after"] for r, _ in busy
        } == {"1"}
        slowest_busy = max(s for _, s in busy)
        slowest_done = max(s for r, s in answers if r.status_code != 503)
        print(f"100 at once, queue 4: {dict(statuses)}; busy within {slowest_busy * 1000:.0f} ms, "
              f"the rest within {slowest_done * 1000:.0f} ms")  # fmt: skip
        assert slowest_busy < slowest_done


async def test_a_flood_of_registrations_does_not_stall_logins(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR="0", PEAK_SSO_HASH_QUEUE="400", **REAL_COST)
    async with sso_app(settings) as app:
        await asyncio.gather(*(register(app.http, f"shopper{i}") for i in range(10)))
        flood = [
            asyncio.create_task(
                app.http.post("/sso/users", json={"username": f"flood{i}", "password": PASSWORD})
            )
            for i in range(150)
        ]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        logins = await asyncio.gather(
            *(
                app.http.post("/sso/login", json={"username": f"shopper{i}", "password": PASSWORD})
                for i in range(10)
            )
        )
        logins_s = time.monotonic() - started
        flood_answers = await asyncio.gather(*flood)
        flood_s = time.monotonic() - started
        print(
            f"10 logins during 150 registrations: {logins_s * 1000:.0f} ms; the registrations {flood_s * 1000:.0f} ms"
        )
        assert [r.status_code for r in logins] == [200] * 10
        assert Counter(r.status_code for r in flood_answers) == {201: 150}
        # The logins went ahead of the registrations waiting in line.
        assert logins_s < flood_s / 3

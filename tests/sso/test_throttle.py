from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from kit.settings import Settings
from tests.sso.conftest import PASSWORD, error_code, login, register, sso_app


async def _attempt(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/sso/login", json={"username": username, "password": password})


async def _fail(client: httpx.AsyncClient, username: str, times: int) -> list[int]:
    return [(await _attempt(client, username, "wrong password!")).status_code for _ in range(times)]


async def test_account_locks_after_ten_failures_until_the_window_ends(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    assert await _fail(client, "alice", 10) == [401] * 10
    locked = await _attempt(client, "alice", PASSWORD)
    assert (locked.status_code, error_code(locked)) == (429, "too_many_attempts")
    assert 890 <= int(locked.headers["retry-after"]) <= 900
    # Other accounts are not affected.
    await register(client, "bob")
    await login(client, "bob")


async def test_the_lock_looks_the_same_for_unknown_accounts(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    await _fail(client, "alice", 10)
    await _fail(client, "nobody", 10)
    real = await _attempt(client, "alice", "wrong password!")
    ghost = await _attempt(client, "nobody", "wrong password!")
    assert real.status_code == ghost.status_code == 429
    assert real.json() == ghost.json()
    assert real.headers["retry-after"] == ghost.headers["retry-after"]


async def test_the_window_ends_and_a_success_resets_the_count(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_ACCOUNT_WINDOW_S="2", PEAK_SSO_ACCOUNT_MAX_FAILURES="3")
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        await _fail(app.http, "alice", 2)
        await login(app.http, "alice")
        assert await _fail(app.http, "alice", 3) == [401] * 3
        assert (await _attempt(app.http, "alice", PASSWORD)).status_code == 429
        await asyncio.sleep(2.2)
        await login(app.http, "alice")


async def test_simultaneous_guesses_cannot_slip_past_the_account_limit(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    answers = await asyncio.gather(*(_attempt(client, "alice", f"guess number {i}") for i in range(100)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 10 + [429] * 90


async def test_client_ip_daily_budget(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_IP_DAILY_FAILURES="5")
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        for i in range(5):
            assert (await _attempt(app.http, f"someone{i}", "wrong password!")).status_code == 401
        spent = await _attempt(app.http, "alice", PASSWORD)
        assert (spent.status_code, error_code(spent)) == (429, "too_many_attempts")
        assert 86300 <= int(spent.headers["retry-after"]) <= 86400


async def test_many_people_behind_one_address_can_log_in_together(client: httpx.AsyncClient) -> None:
    users = [f"user{i}" for i in range(150)]
    await asyncio.gather(*(register(client, u) for u in users))
    await asyncio.gather(*(login(client, u) for u in users))


async def test_throttling_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_THROTTLE="0")
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        assert await _fail(app.http, "alice", 15) == [401] * 15
        await login(app.http, "alice")

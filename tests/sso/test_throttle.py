from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from kit.redis import create_redis
from kit.settings import Settings
from sso import devices, keys
from sso.errors import ThrottleUnavailable
from sso.service import Sso
from sso.settings import SsoSettings
from sso.throttle import LoginThrottle, network_of
from tests.sso.conftest import PASSWORD, App, error_code, login, register, sso_app

# The in-process client connects from 10.1.2.3; trusting it as a balancer lets a test speak for any address.
FROM_ANYWHERE = {"PEAK_TRUSTED_PROXIES": "10.1.2.3", "PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR": "0"}


async def _attempt(
    client: httpx.AsyncClient, username: str, password: str, *, ip: str = "", device: str = ""
) -> httpx.Response:
    headers = {"X-Forwarded-For": ip} if ip else {}
    if device:
        headers["Cookie"] = f"{devices.COOKIE}={device}"
    return await client.post("/sso/login", json={"username": username, "password": password}, headers=headers)


async def _fail(client: httpx.AsyncClient, username: str, times: int, *, ip: str = "") -> list[int]:
    return [(await _attempt(client, username, "wrong password!", ip=ip)).status_code for _ in range(times)]


async def _device_of(client: httpx.AsyncClient, username: str, *, ip: str = "") -> str:
    """Log in once (a known device from now on): the device cookie's value; the cookie jar is emptied."""
    response = await _attempt(client, username, PASSWORD, ip=ip)
    assert response.status_code == 200, response.text
    value = response.cookies[devices.COOKIE]
    client.cookies.clear()
    return value


async def test_one_network_holds_only_its_own_unknown_devices(make_settings: Callable[..., Settings]) -> None:
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await register(app.http, "alice")
        device = await _device_of(app.http, "alice", ip="198.51.100.1")
        # Five failures from one network hold that network's unknown devices for the window...
        assert await _fail(app.http, "alice", 5, ip="203.0.113.1") == [401] * 5
        held = await _attempt(app.http, "alice", PASSWORD, ip="203.0.113.1")
        assert (held.status_code, error_code(held)) == (429, "too_many_attempts")
        assert 890 <= int(held.headers["retry-after"]) <= 900
        # ...but one network alone cannot hold the account for anyone else.
        assert (await _attempt(app.http, "alice", "wrong password!", ip="203.0.113.2")).status_code == 401
        await _fail(app.http, "alice", 4, ip="203.0.113.2")
        # Ten failures from unknown devices hold every unknown device of the account until the window ends.
        everywhere = await _attempt(app.http, "alice", PASSWORD, ip="192.0.2.77")
        assert (everywhere.status_code, error_code(everywhere)) == (429, "too_many_attempts")
        assert 890 <= int(everywhere.headers["retry-after"]) <= 900
        # The owner's known device is held by nothing of that, from any network, on the first try.
        for ip in ("198.51.100.1", "203.0.113.1", "192.0.2.77"):
            assert (await _attempt(app.http, "alice", PASSWORD, ip=ip, device=device)).status_code == 200
        # Other accounts are not affected.
        await register(app.http, "bob")
        await login(app.http, "bob")


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
        app.http.cookies.clear()  # an unknown device again: the account's counters apply
        assert await _fail(app.http, "alice", 3) == [401] * 3
        assert (await _attempt(app.http, "alice", PASSWORD)).status_code == 429
        await asyncio.sleep(2.2)
        await login(app.http, "alice")


async def test_simultaneous_guesses_cannot_slip_past_the_account_limits(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await register(app.http, "alice")
        one_network = await asyncio.gather(
            *(_attempt(app.http, "alice", f"guess number {i}", ip="203.0.113.9") for i in range(100))
        )
        assert sorted(a.status_code for a in one_network) == [401] * 5 + [429] * 95
        many = await asyncio.gather(
            *(_attempt(app.http, "alice", f"guess {i}", ip=f"198.51.100.{i}") for i in range(100))
        )
        # The account allows ten per window from unknown devices: five are left.
        assert sorted(a.status_code for a in many) == [401] * 5 + [429] * 95


async def test_past_its_daily_budget_a_network_slows_unknown_devices_and_never_known_ones(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(PEAK_SSO_IP_DAILY_FAILURES="5", PEAK_SSO_IP_MAX_DELAY_S="3", **FROM_ANYWHERE)
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        await register(app.http, "bob")
        device = await _device_of(app.http, "alice", ip="203.0.113.5")
        for i in range(5):
            assert (
                await _attempt(app.http, f"someone{i}", "wrong password!", ip="203.0.113.5")
            ).status_code == 401
        # The budget is spent, yet the next unknown device gets in on its first try; the one after it waits.
        assert (await _attempt(app.http, "bob", PASSWORD, ip="203.0.113.5")).status_code == 200
        app.http.cookies.clear()
        waits = await _attempt(app.http, "bob", PASSWORD, ip="203.0.113.5")
        assert (waits.status_code, error_code(waits)) == (429, "too_many_attempts")
        assert int(waits.headers["retry-after"]) == 1
        # A cookie that is no device of the account waits like no cookie; refused attempts count for nobody.
        for forged in (devices.new_token(), device):
            refused = await _attempt(app.http, "bob", PASSWORD, ip="203.0.113.5", device=forged)
            assert refused.status_code == 429
        assert await app.ctx.redis.get(keys.account_failures("bob")) in (None, "0")
        assert await app.ctx.redis.get(keys.account_network_failures("bob", "203.0.113.5")) in (None, "0")
        assert await app.ctx.redis.get(keys.network_failures("203.0.113.5")) == "5"
        # A known device is never held by the network's budget, even at once.
        for _ in range(3):
            assert (
                await _attempt(app.http, "alice", PASSWORD, ip="203.0.113.5", device=device)
            ).status_code == 200
        # The delay grows with the failures beyond the budget, up to PEAK_SSO_IP_MAX_DELAY_S.
        delays = []
        for _ in range(4):
            await asyncio.sleep(float(waits.headers["retry-after"]) + 0.05)
            assert (
                await _attempt(app.http, "nobody", "wrong password!", ip="203.0.113.5")
            ).status_code == 401
            waits = await _attempt(app.http, "bob", PASSWORD, ip="203.0.113.5")
            assert waits.status_code == 429
            delays.append(int(waits.headers["retry-after"]))
        assert delays == [1, 2, 3, 3]
        # Other networks are not affected.
        assert (await _attempt(app.http, "bob", PASSWORD, ip="203.0.113.6")).status_code == 200


async def test_the_lockout_repro_the_owner_with_a_device_cookie_gets_in_at_once(
    make_settings: Callable[..., Settings],
) -> None:
    """Issue 15: 100 failed logins for made-up names from one address used to lock its real users out for a day."""
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await register(app.http, "owner")
        device = await _device_of(app.http, "owner", ip="100.64.0.1")
        made_up = [
            await _attempt(app.http, f"madeup{i}", "wrong password!", ip="100.64.0.1") for i in range(100)
        ]
        assert Counter(r.status_code for r in made_up) == {401: 100}
        owner = await _attempt(app.http, "owner", PASSWORD, ip="100.64.0.1", device=device)
        assert owner.status_code == 200, owner.text


async def test_ten_thousand_failures_from_a_thousand_addresses_do_not_lock_out_the_owners_device(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await register(app.http, "owner")
        device = await _device_of(app.http, "owner", ip="192.0.2.200")
        gate = asyncio.Semaphore(200)

        async def guess(i: int) -> int:
            async with gate:
                ip = f"10.{i % 1000 // 250}.{i % 250}.{i % 7 + 1}"
                return (await _attempt(app.http, "owner", f"guess {i}", ip=ip)).status_code

        started = time.monotonic()
        answers = Counter(await asyncio.gather(*(guess(i) for i in range(10_000))))
        print(f"10,000 guesses from 1,000 addresses: {time.monotonic() - started:.1f} s, {dict(answers)}")
        assert answers == {401: 10, 429: 9_990}
        # Unknown devices of the account are held everywhere; the owner's device gets in on the first try.
        assert (await _attempt(app.http, "owner", PASSWORD, ip="192.0.2.201")).status_code == 429
        assert (
            await _attempt(app.http, "owner", PASSWORD, ip="192.0.2.201", device=device)
        ).status_code == 200


async def test_two_thousand_concurrent_wrong_logins_from_one_address_are_held_to_the_budget(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(PEAK_SSO_HASH_QUEUE="5000", **FROM_ANYWHERE)
    async with sso_app(settings) as app:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(_attempt(app.http, f"name{i}", "wrong password!", ip="203.0.113.50") for i in range(2000))
        )
        elapsed_s = time.monotonic() - started
        counted = Counter(a.status_code for a in answers)
        pool = app.ctx.get(Sso).passwords.pool_size
        print(f"2,000 wrong logins at once in {elapsed_s:.1f} s: {dict(counted)}; hashing pool {pool}")
        assert set(counted) == {401, 429}
        # Exactly the budget (100) is checked; past it the gate lets one unknown device try at once, then one
        # after 1 s, 2 s, 4 s ... (a run under 3 s: at most two, this machine's pool size).
        gate_passes = 1 + int(math.log2(1 + elapsed_s))
        assert 100 < counted[401] <= 100 + gate_passes


async def test_ipv6_clients_are_counted_per_64(make_settings: Callable[..., Settings]) -> None:
    assert (
        network_of("2001:db8:1:2::1") == network_of("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    )
    assert network_of("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert network_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert network_of("192.0.2.1") == "192.0.2.1"
    assert keys.network_failures(network_of("a{b}")) == "sso:{t:n:a_b_}:f"  # no way into another slot
    settings = make_settings(PEAK_SSO_IP_DAILY_FAILURES="4", PEAK_SSO_IP_MAX_DELAY_S="60", **FROM_ANYWHERE)
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        # Four addresses of one /64 spend one budget; a fifth of them waits after the gate's one pass.
        for i in range(1, 5):
            assert (
                await _attempt(app.http, "x" * 3 + str(i), "wrong password!", ip=f"2001:db8:1:2::{i}")
            ).status_code == 401
        assert (
            await _attempt(app.http, "nobody", "wrong password!", ip="2001:db8:1:2::99")
        ).status_code == 401
        assert (await _attempt(app.http, "alice", PASSWORD, ip="2001:db8:1:2::5")).status_code == 429
        assert (await _attempt(app.http, "alice", PASSWORD, ip="2001:db8:1:3::5")).status_code == 200


async def test_name_variants_share_one_budget_and_find_the_account(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await register(app.http, "Alice")
        # NFKC then lower case: the fullwidth and upper-case spellings are the same account and the same budget.
        variants = ["alice", "ALICE", "\uff21\uff4c\uff49\uff43\uff45", "aLiCe", "Alice"]
        answers = [
            (await _attempt(app.http, name, "wrong password!", ip=f"198.51.100.{i}")).status_code
            for i, name in enumerate(variants * 2)
        ]
        assert answers == [401] * 10
        assert (await _attempt(app.http, "alice", PASSWORD, ip="198.51.100.99")).status_code == 429
        assert await app.ctx.redis.get(keys.account_failures("alice")) == "10"
    async with sso_app(make_settings()) as app:
        await register(app.http, "Bob")
        response = await _attempt(app.http, "\uff22\uff4f\uff42", PASSWORD)
        assert response.status_code == 200, response.text


async def test_many_people_behind_one_address_can_log_in_together(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(PEAK_SSO_IP_DAILY_FAILURES="10", **FROM_ANYWHERE)
    async with sso_app(settings) as app:
        users = [f"user{i}" for i in range(150)]
        gate = asyncio.Semaphore(32)

        async def signup(name: str) -> None:
            async with gate:
                await register(app.http, name)

        await asyncio.gather(*(signup(u) for u in users))
        # Attempts count until they succeed, but at most the hashing pool's size is undecided at a time:
        # 150 people logging in at once from one address never spend a budget of 10.
        logins = await asyncio.gather(*(_attempt(app.http, u, PASSWORD, ip="100.64.1.1") for u in users))
        assert [r.status_code for r in logins] == [200] * 150
        known = {u: r.cookies[devices.COOKIE] for u, r in zip(users, logins, strict=True)}
        app.http.cookies.clear()
        # An attacker spends the address's budget: the crowd's known devices still all get in at once.
        await _fail(app.http, "victim", 10, ip="100.64.1.1")
        again = await asyncio.gather(
            *(_attempt(app.http, u, PASSWORD, ip="100.64.1.1", device=known[u]) for u in users)
        )
        assert [r.status_code for r in again] == [200] * 150


async def test_a_device_that_fails_too_often_loses_its_privilege(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await register(app.http, "alice")
        device = await _device_of(app.http, "alice")
        await _fail(app.http, "alice", 10, ip="203.0.113.1")
        await _fail(app.http, "alice", 10, ip="203.0.113.2")
        # Five failures of its own (PEAK_SSO_DEVICE_MAX_FAILURES) are allowed; a success clears them.
        for _ in range(5):
            assert (await _attempt(app.http, "alice", "wrong password!", device=device)).status_code == 401
        assert (await _attempt(app.http, "alice", PASSWORD, device=device)).status_code == 429
        # Now an unknown device like any other: the account's lock holds it.
        assert (await _attempt(app.http, "alice", PASSWORD, device=device)).status_code == 429


async def test_a_device_cookie_is_worth_nothing_for_another_account_or_forged(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await register(app.http, "alice")
        await register(app.http, "mallory")
        mallorys = await _device_of(app.http, "mallory")
        await _fail(app.http, "alice", 5, ip="203.0.113.1")
        await _fail(app.http, "alice", 5, ip="203.0.113.2")
        for forged in (mallorys, devices.new_token(), "not-a-token", "x" * 5000, f"{mallorys}.{'A' * 22}"):
            assert (await _attempt(app.http, "alice", PASSWORD, device=forged)).status_code == 429


async def test_the_device_cookie(make_settings: Callable[..., Settings]) -> None:
    for secure in ("0", "1"):
        async with sso_app(make_settings(PEAK_COOKIE_SECURE=secure)) as app:
            await register(app.http, f"alice{secure}")
            response = await _attempt(app.http, f"alice{secure}", PASSWORD)
            [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith(devices.COOKIE)]
            parts = {p.strip().split("=")[0].lower() for p in cookie.split(";")}
            assert {"httponly", "path", "max-age", "samesite"} <= parts and "Path=/sso" in cookie
            assert "SameSite=lax" in cookie and ("secure" in parts) == (secure == "1")
            assert f"alice{secure}" not in cookie and PASSWORD not in cookie
            # Redis keeps the token's digest only.
            token = response.cookies[devices.COOKIE]
            stored = await app.ctx.redis.hgetall(keys.devices(f"alice{secure}"))
            assert f"s:{devices.digest(token)}" in stored and not any(token in f for f in stored)
            if secure == "1":
                continue  # httpx sends no Secure cookie to http://
            # The cookie remembers the last few accounts of the browser.
            await register(app.http, f"bob{secure}")
            both = (await _attempt(app.http, f"bob{secure}", PASSWORD)).cookies[devices.COOKIE]
            assert both.split(".")[1] == token


async def test_a_client_that_never_keeps_its_cookie_cannot_grow_the_device_list(app: App) -> None:
    await register(app.http, "alice")
    for _ in range(keys.DEVICES_KEPT + 5):
        await login(app.http, "alice")
        app.http.cookies.clear()
    stored: dict[str, str] = await app.ctx.redis.hgetall(keys.devices("alice"))  # type: ignore[assignment]
    assert len([f for f in stored if f.startswith("s:")]) == keys.DEVICES_KEPT


async def test_wrong_old_passwords_count_like_failed_logins(make_settings: Callable[..., Settings]) -> None:
    async with sso_app(make_settings()) as app:
        await register(app.http, "alice")
        tokens = await login(app.http, "alice")
        app.http.cookies.clear()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        body = {"old_password": "not the password", "new_password": "a brand new password"}
        statuses = [
            (await app.http.post("/sso/password", json=body, headers=auth)).status_code for _ in range(6)
        ]
        assert statuses == [401] * 5 + [429]
        held = await app.http.post("/sso/password", json={**body, "old_password": PASSWORD}, headers=auth)
        assert (held.status_code, error_code(held)) == (429, "too_many_attempts")
        # The same counters as logins: the account's unknown devices on this network are held too.
        assert (await _attempt(app.http, "alice", PASSWORD)).status_code == 429


async def test_throttling_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_THROTTLE="0")
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        assert await _fail(app.http, "alice", 15) == [401] * 15
        await login(app.http, "alice")


async def test_without_redis_logins_wait_rather_than_go_unthrottled() -> None:
    redis = create_redis("redis://127.0.0.1:1", timeout_s=1.0)
    throttle = LoginThrottle(redis, Settings.from_env({}).of(SsoSettings))
    try:
        with pytest.raises(ThrottleUnavailable):
            await throttle.check("alice", "192.0.2.1", [])
        with pytest.raises(ThrottleUnavailable):
            await throttle.check("alice", "192.0.2.1", [devices.new_token()])
        with pytest.raises(ThrottleUnavailable):
            await throttle.signup("192.0.2.1")
    finally:
        await redis.aclose()


async def test_without_postgresql_the_attempt_is_given_back(app: App) -> None:
    await register(app.http, "alice")
    device = await _device_of(app.http, "alice")
    await app.ctx.db.close()
    for cookie in ("", device):
        for _ in range(12):
            gone = await _attempt(app.http, "alice", PASSWORD, device=cookie)
            assert (gone.status_code, error_code(gone)) == (503, "unavailable"), gone.text
    assert await app.ctx.redis.get(keys.account_failures("alice")) in (None, "0")
    assert await app.ctx.redis.get(keys.network_failures("10.1.2.3")) in (None, "0")
    assert (
        await app.http.post("/sso/users", json={"username": "bob", "password": PASSWORD})
    ).status_code == 503

"""GET /sso/session: one coalesced round trip (check, slide and read), by bearer token and by cookie; and the
keep-alive a shopper waiting on the countdown page relies on (refresh before the access token expires)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import httpx

from devstack.processes import free_port
from kit.redis import RedisClient, create_redis
from kit.settings import Settings
from sso import keys
from sso.client import TokenValidator, session_check
from sso.service import Sso
from sso.sessions import Sessions
from sso.settings import SsoSettings
from tests.conftest import Servers
from tests.sso.conftest import App, bearer, cli, error_code, login, register, signed_in, sso_app
from tests.support import retried_on_503

# Commands the test app sends on its own meanwhile (the revocation journal poll, the cluster client's slot
# map) or that the test sends.
_BACKGROUND = {"cmdstat_zrangebyscore", "cmdstat_info", "cmdstat_ping", "cmdstat_cluster|nodes",
               "cmdstat_cluster|slots", "cmdstat_cluster|shards", "cmdstat_command", "cmdstat_readonly",
               # the connections this test opens to each primary to read its counters
               "cmdstat_hello", "cmdstat_client|setinfo", "cmdstat_select",
               # a replica's acknowledgements to its primary (the test cluster has one per primary)
               "cmdstat_replconf", "cmdstat_psync"}  # fmt: skip


async def _nodes(redis: RedisClient) -> list[Any]:
    """One client per primary (the suite may run on a cluster)."""
    if hasattr(redis, "get_primaries"):
        return [create_redis(f"redis://{n.host}:{n.port}/0") for n in redis.get_primaries()]
    return [redis]


async def _commands(redis: RedisClient) -> dict[str, int]:
    counts: dict[str, int] = {}
    nodes = await _nodes(redis)
    try:
        for node in nodes:
            stats: dict[str, Any] = await node.info("commandstats")
            for name, stat in stats.items():
                if name not in _BACKGROUND:
                    counts[name] = counts.get(name, 0) + int(stat["calls"])
    finally:
        for node in nodes:
            if node is not redis:
                await node.aclose()
    return counts


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"peak_sid={value}"}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


async def test_a_session_read_is_one_round_trip_by_token_and_by_cookie(app: App) -> None:
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")  # keeps the cookie too
    cookie = app.http.cookies["peak_sid"]
    app.http.cookies.clear()
    await app.http.get("/sso/session", headers=bearer(tokens))  # the token is now verified and cached

    async def read(headers: dict[str, str]) -> dict[str, int]:
        before = await _commands(app.ctx.redis)
        response = await app.http.get("/sso/session", headers=headers)
        after = await _commands(app.ctx.redis)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == tokens["session_id"]
        delta = _delta(before, after)
        # The slide (HSET, PEXPIRE) only when the last one is a second old or more (test_slide_step).
        slid = {k: delta.pop(k) for k in ("cmdstat_hset", "cmdstat_pexpire") if k in delta}
        assert slid in ({}, {"cmdstat_hset": 1, "cmdstat_pexpire": 1}), slid
        return delta

    # By cookie: one EVALSHA, and inside it the script's own HMGET (Redis counts a script's commands too): no
    # ZRANGE of the session index, no second call.
    for _ in range(3):
        assert await read(_cookie(cookie)) == {"cmdstat_evalsha": 1, "cmdstat_hmget": 1}
    # By token: the touch script (the revoked-marker's EXISTS and the HMGET inside it), then, for half a
    # second after it, the same two commands sent as they are, without the script (sso.client.session_check).
    for _ in range(2):
        await asyncio.sleep(session_check.READ_WINDOW_MS / 1000 + 0.05)
        touch = {"cmdstat_evalsha": 1, "cmdstat_hmget": 1, "cmdstat_exists": 1}
        assert await read(bearer(tokens)) == touch
        touched = time.monotonic()
        for _ in range(3):
            delta = await read(bearer(tokens))
            if time.monotonic() - touched < session_check.READ_WINDOW_MS / 1000 - 0.1:
                assert delta == {"cmdstat_hmget": 1, "cmdstat_exists": 1}
            else:  # a slow machine: the window may have passed, and a touch is due again
                assert delta in ({"cmdstat_hmget": 1, "cmdstat_exists": 1}, touch)


async def test_the_answer_is_the_session_just_slid(app: App) -> None:
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    app.http.cookies.clear()
    key = keys.session(user["id"], tokens["session_id"])
    # As if idle for almost 15 minutes.
    await app.ctx.redis.hset(key, "last_seen_at", str(int(time.time() * 1000) - 895_000))
    await app.ctx.redis.pexpire(key, 5_000)
    response = await app.http.get("/sso/session", headers={**bearer(tokens), "User-Agent": "shop-app/1.0"})
    session = response.json()
    assert response.status_code == 200 and session["current"] is True
    assert 899_000 < await app.ctx.redis.pttl(key) <= 900_000
    assert int(await app.ctx.redis.hget(key, "last_seen_at") or 0) // 1000 == session["last_seen_at"]
    assert session["idle_expires_at"] - session["last_seen_at"] in (899, 900, 901)
    assert (
        session["user_id"] == user["id"]
        and session["username"] == "alice"
        and session["roles"] == ["shopper"]
    )
    assert session["user_agent"] == "python-httpx/" + httpx.__version__  # the login's, not this request's
    assert set(session) == {"id", "created_at", "last_seen_at", "idle_expires_at", "absolute_expires_at", "ip",
                            "user_agent", "current", "user_id", "username", "roles"}  # fmt: skip


async def test_a_repeated_read_by_token_answers_what_a_fresh_read_would(servers: Servers, app: App) -> None:
    """After a session's first read its fixed fields come from memory and the strict check's touch slides it:
    the answer is the one SESSION_READ gives (the cookie path always reads it), roles included."""
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    cookie = app.http.cookies["peak_sid"]
    app.http.cookies.clear()
    first = (await app.http.get("/sso/session", headers=bearer(tokens))).json()
    assert app.ctx.get(Sso).sessions.known(tokens["session_id"]) is not None
    await asyncio.sleep(1.1)
    again = (await app.http.get("/sso/session", headers=bearer(tokens))).json()
    fresh = (await app.http.get("/sso/session", headers=_cookie(cookie))).json()
    moving = ("last_seen_at", "idle_expires_at")
    assert (
        {k: v for k, v in again.items() if k not in moving}
        == {k: v for k, v in fresh.items() if k not in moving}
        == {k: v for k, v in first.items() if k not in moving}
    )
    assert (
        again["last_seen_at"] > first["last_seen_at"]
        and abs(again["last_seen_at"] - fresh["last_seen_at"]) <= 1
    )
    assert again["idle_expires_at"] - again["last_seen_at"] in (
        898,
        899,
        900,
        901,
    )  # up to 1.5 s early: session_check.slid_within_ms
    # An account change after the token was issued: the roles now, as the strict check answers them.
    cli(servers, "grant", "alice", "admin")
    await asyncio.sleep(0.1)
    assert (await app.http.get("/sso/session", headers=bearer(tokens))).json()["roles"] == [
        "admin",
        "shopper",
    ]
    # Ended elsewhere: refused, like a first read.
    await app.http.post("/sso/logout", headers=bearer(tokens))
    ended = await app.http.get("/sso/session", headers=bearer(tokens))
    assert ended.status_code == 401, ended.text


async def test_idle_expiry_never_passes_the_absolute_end(make_settings: Callable[..., Settings]) -> None:
    async with sso_app(make_settings(PEAK_SSO_IDLE_TIMEOUT_S="4", PEAK_SSO_ABSOLUTE_TIMEOUT_S="5")) as app:
        tokens = await signed_in(app.http, "alice")
        await asyncio.sleep(1.5)  # now + 4 s of idle time would pass the absolute end
        session = (await app.http.get("/sso/session", headers=bearer(tokens))).json()
        assert session["idle_expires_at"] <= session["absolute_expires_at"] == session["created_at"] + 5


async def test_slide_step(app: App) -> None:
    """A crowd of checks of one session within a second slides it once: nothing more is written (or
    replicated); a second later a check slides it again, and no answer promises an idle end past Redis's."""
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    app.http.cookies.clear()
    key = keys.session(user["id"], tokens["session_id"])
    await app.http.get("/sso/session", headers=bearer(tokens))
    await asyncio.sleep(1.1)
    before = await _commands(app.ctx.redis)
    crowd = [app.http.get(path, headers=bearer(tokens)) for path in ("/sso/session", "/sso/userinfo") * 150]
    answers = await asyncio.gather(*crowd)
    after = await _commands(app.ctx.redis)
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
    assert _delta(before, after).get("cmdstat_pexpire", 0) <= 2, _delta(before, after)  # at most one a second
    slid_at = int(await app.ctx.redis.hget(key, "last_seen_at") or 0)
    expires_at_ms = int(time.time() * 1000) + await app.ctx.redis.pttl(key)
    for a in answers[::2]:
        assert a.json()["idle_expires_at"] <= expires_at_ms // 1000 + 1
    await asyncio.sleep(1.1)
    again = (await app.http.get("/sso/session", headers=bearer(tokens))).json()
    assert int(await app.ctx.redis.hget(key, "last_seen_at") or 0) >= slid_at + 1000
    assert 899_000 < await app.ctx.redis.pttl(key) <= 900_000
    # The earliest the idle end can be: slid up to 1.5 s before (session_check.slid_within_ms), never later.
    assert again["idle_expires_at"] - again["last_seen_at"] in (898, 899)


async def test_three_hundred_concurrent_reads_of_different_sessions_each_get_their_own(app: App) -> None:
    users = [f"shopper{i}" for i in range(60)]
    await asyncio.gather(*(register(app.http, u) for u in users))
    logins = await asyncio.gather(*(login(app.http, u) for u in users))
    app.http.cookies.clear()
    before = await _commands(app.ctx.redis)
    answers = await asyncio.gather(
        *(app.http.get("/sso/session", headers=bearer(logins[i % 60])) for i in range(300))
    )
    after = await _commands(app.ctx.redis)
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        assert (answer.json()["id"], answer.json()["username"]) == (
            logins[i % 60]["session_id"],
            users[i % 60],
        )
    # Coalesced: reads of one token in a batch share a command, so never more commands than requests.
    assert _delta(before, after).get("cmdstat_evalsha", 0) <= 300


async def test_forged_cookies_read_with_the_real_one_are_refused(app: App) -> None:
    """Reads by cookie are batched but never share an answer: the cookie is an argument, not a key."""
    await register(app.http, "alice")
    await login(app.http, "alice")
    real = app.http.cookies["peak_sid"]
    app.http.cookies.clear()
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    requests = [real if i % 2 else forged for i in range(200)]

    answers = await asyncio.gather(*(app.http.get("/sso/session", headers=_cookie(c)) for c in requests))
    for cookie, answer in zip(requests, answers, strict=True):
        if cookie == real:
            assert answer.status_code == 200, answer.text
        else:
            assert (answer.status_code, error_code(answer)) == (401, "unauthenticated")


async def test_ended_sessions_and_revoked_tokens_are_refused_and_remembered(app: App) -> None:
    user = await register(app.http, "alice")
    tokens, other = await login(app.http, "alice"), await login(app.http, "alice")
    app.http.cookies.clear()
    # Ended behind the validator's back: no announcement, only the read can tell.
    await app.ctx.redis.delete(keys.session(user["id"], other["session_id"]))
    gone = await app.http.get("/sso/session", headers=bearer(other))
    assert (gone.status_code, error_code(gone)) == (401, "unauthenticated")
    validator = app.ctx.get(TokenValidator)
    assert other["session_id"] in validator.revocations.ended_sessions  # refused from memory from now on
    # A revoked access token: its session lives on, the token does not.
    assert (await app.http.post("/sso/revoke", data={"token": tokens["access_token"]})).status_code == 200
    refused = await app.http.get("/sso/session", headers=bearer(tokens))
    assert (refused.status_code, error_code(refused)) == (401, "unauthenticated")


async def test_hostile_credentials_are_401_never_500(app: App) -> None:
    tokens = await signed_in(app.http, "alice")
    for header in ("Bearer ", "Bearer x", "Bearer " + "a" * 9000, "Bearer " + tokens["access_token"][:-3] + "abc",
                   "Basic Zm9vOmJhcg==", "Bearer a.b.c"):  # fmt: skip
        answer = await app.http.get("/sso/session", headers={"Authorization": header})
        assert answer.status_code in (401, 422), (header[:20], answer.text)
    for cookie in ("x", "a" * 5000, "v1.....", tokens["refresh_token"], tokens["access_token"]):
        answer = await app.http.get("/sso/session", headers=_cookie(cookie))
        assert answer.status_code == 401, (cookie[:20], answer.text)


async def test_redis_gone_is_503_by_token_and_by_cookie(app: App) -> None:
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    cookie = app.http.cookies["peak_sid"]
    app.http.cookies.clear()
    sso = app.ctx.get(Sso)
    kept = sso.sessions
    gone = create_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    sso.sessions = Sessions(gone, app.ctx.settings.of(SsoSettings))
    try:
        by_token = await app.http.get("/sso/session", headers=bearer(tokens))
        by_cookie = await app.http.get("/sso/session", headers=_cookie(cookie))
    finally:
        sso.sessions = kept
        await gone.aclose()
    for answer in (by_token, by_cookie):
        assert (answer.status_code, error_code(answer)) == (503, "unavailable"), answer.text
    # And once Redis is back, the same credentials work: nothing was remembered as ended.
    assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200


# -- the keep-alive on the countdown page ----------------------------------------------------------------------


async def _refresh(http: httpx.AsyncClient, tokens: dict[str, Any]) -> httpx.Response:
    return await http.post(
        "/sso/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )


async def test_refreshing_keeps_a_waiting_session_past_the_idle_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(PEAK_SSO_IDLE_TIMEOUT_S="2", PEAK_SSO_ABSOLUTE_TIMEOUT_S="60")
    async with sso_app(settings) as app:
        kept, left = await signed_in(app.http, "waiting"), await signed_in(app.http, "asleep")
        for _ in range(4):  # 4.8 s on the countdown page, more than twice the idle timeout
            await asyncio.sleep(1.2)
            answer = await _refresh(app.http, kept)
            assert answer.status_code == 200, answer.text
            kept = answer.json()
        assert (await app.http.get("/sso/session", headers=bearer(kept))).status_code == 200
        assert (await app.http.get("/sso/session", headers=bearer(left))).status_code == 401
        late = await _refresh(app.http, left)
        assert (late.status_code, error_code(late)) == (401, "invalid_grant")


async def test_three_hundred_shoppers_refresh_at_the_sale_start(app: App) -> None:
    users = [f"buyer{i}" for i in range(300)]
    gate = asyncio.Semaphore(32)  # the set-up: signing up is bounded by the hashing queue (503 busy beyond)

    async def arrive(username: str) -> dict[str, Any]:
        async with gate:
            await register(app.http, username)
            return await login(app.http, username)

    logins = await asyncio.gather(*(arrive(u) for u in users))
    app.http.cookies.clear()
    # A keep-alive cadence (every 80 % of expires_in) is one refresh per 12 minutes: three in a row here,
    # everyone at the same moment, stay far under PEAK_SSO_REFRESH_MAX per window.
    # A 503 (a loaded machine's Redis replies read past their timeout) tells the client to try again, and a
    # retried refresh within the grace gets the same pair (the test below): what a page does.
    current = list(logins)
    for _ in range(3):
        answers = await asyncio.gather(
            *(retried_on_503(functools.partial(_refresh, app.http, t), pause_s=0.2) for t in current)
        )
        for answer in answers:
            assert answer.status_code == 200, answer.text
        current = [a.json() for a in answers]
    reads = await asyncio.gather(
        *(
            retried_on_503(functools.partial(app.http.get, "/sso/session", headers=bearer(t)), pause_s=0.2)
            for t in current
        )
    )
    assert [r.status_code for r in reads] == [200] * 300
    assert [r.json()["username"] for r in reads] == users
    assert app.ctx.settings.of(SsoSettings).refresh_max >= 3


async def test_a_retried_refresh_within_the_grace_gets_the_same_pair(app: App) -> None:
    tokens = await signed_in(app.http, "alice")
    first, retried = await asyncio.gather(_refresh(app.http, tokens), _refresh(app.http, tokens))
    assert first.status_code == retried.status_code == 200
    assert first.json()["refresh_token"] == retried.json()["refresh_token"]
    assert (await app.http.get("/sso/session", headers=bearer(first.json()))).status_code == 200

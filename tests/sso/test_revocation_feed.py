"""GET /sso/revocations, the revocation feed for validators without Redis, and ``sso.client`` following it."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from kit.redis import create_redis
from kit.settings import Settings, SettingsError
from loadtest.faultproxy import FaultProxy
from sso import keys, scripts
from sso.client import TokenValidator, jwks_from_url
from sso.client.feed import RevocationFeed
from sso.feed import Cursor, Feed
from sso.service import Sso
from sso.settings import SsoSettings
from tests.conftest import TEST_REDIS, Servers
from tests.sso.conftest import PASSWORD, App, bearer, error_code, login, register, sso_app

ADMIN_TOKEN = "feed-admin-token-0123456789abcdef"


async def _client(app: App, name: str = "feed") -> tuple[str, dict[str, str]]:
    clients = app.ctx.get(Sso).clients
    secret = await clients.add(name)
    assert secret is not None
    await clients.reload()  # as `peak sso add-client` makes every process do
    await app.ctx.redis.publish(keys.CHANGES_CHANNEL, "c")
    basic = base64.b64encode(f"{name}:{secret}".encode()).decode()
    return secret, {"Authorization": f"Basic {basic}"}


async def _redis_calls(app: App, command: str) -> int:
    stats: dict[str, Any] = await app.ctx.redis.info("commandstats")
    entry = stats.get(f"cmdstat_{command}", {})
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


async def test_the_feed_answers_from_a_cursor_pages_and_refuses_hostile_input(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(PEAK_ADMIN_TOKEN=ADMIN_TOKEN)) as app:
        _, basic = await _client(app)
        http = app.http
        user = await register(http, "alice")
        first, second, third = [await login(http, "alice") for _ in range(3)]
        http.cookies.clear()
        start = await http.get("/sso/revocations", headers=basic)
        assert start.status_code == 200, start.text
        assert start.headers["cache-control"] == "no-store"
        cursor = start.json()["cursor"]
        assert (await http.post("/sso/logout", headers=bearer(first))).status_code == 204
        body = (await http.get("/sso/revocations", params={"since": cursor}, headers=basic)).json()
        assert [e["sid"] for e in body["revoked"]] == [first["session_id"]]
        assert abs(body["revoked"][0]["at"] - time.time() * 1000) < 5000 and body["more"] is False
        # Nothing is answered twice; an admin (token or admin-role bearer) may read the feed too.
        again = await http.get("/sso/revocations", params={"since": body["cursor"]}, headers={
            "Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
        assert again.status_code == 200 and again.json()["revoked"] == [] and again.json()["jti"] == []

        # A page never splits a millisecond's entries; an entry written later in that millisecond is answered.
        journal, now_ms = keys.journal(user["id"]), int(time.time() * 1000)
        await app.ctx.redis.zadd(journal, {"s:same-1": now_ms, "s:same-2": now_ms, "s:same-3": now_ms})
        page = (await http.get("/sso/revocations", params={"since": again.json()["cursor"], "limit": 1},
                               headers=basic)).json()  # fmt: skip
        assert sorted(e["sid"] for e in page["revoked"]) == ["same-1", "same-2", "same-3"]
        await app.ctx.redis.zadd(journal, {"s:same-0": now_ms})
        later = (await http.get("/sso/revocations", params={"since": page["cursor"]}, headers=basic)).json()
        assert "same-0" in [e["sid"] for e in later["revoked"]]
        # A revoked token and an account change are in the feed as well.
        assert (await http.post("/sso/revoke", data={"token": second["access_token"]})).status_code == 200
        await app.ctx.redis.zadd(journal, {f"u:{user['id']}:7": int(time.time() * 1000)})
        rest = (await http.get("/sso/revocations", params={"since": later["cursor"]}, headers=basic)).json()
        assert rest["jti"] and rest["accounts"][-1] == {"sub": user["id"], "version": 7,
                                                         "at": rest["accounts"][-1]["at"]}  # fmt: skip

        # Paging: limit 1 over two milliseconds answers one, says there is more, then the other.
        await app.ctx.redis.zadd(journal, {"s:p-1": now_ms + 1000, "s:p-2": now_ms + 2000})
        one = (await http.get("/sso/revocations", params={"since": rest["cursor"], "limit": 1},
                              headers=basic)).json()  # fmt: skip
        assert [e["sid"] for e in one["revoked"]] == ["p-1"] and one["more"] is True
        two = (
            await http.get("/sso/revocations", params={"since": one["cursor"], "limit": 1}, headers=basic)
        ).json()
        assert [e["sid"] for e in two["revoked"]] == ["p-2"]

        # Credentials: none, a wrong secret, a shopper's token.
        assert (await http.get("/sso/revocations")).status_code == 401
        wrong = {"Authorization": "Basic " + base64.b64encode(b"feed:nope").decode()}
        assert error_code(await http.get("/sso/revocations", headers=wrong)) == "invalid_client"
        assert (await http.get("/sso/revocations", headers=bearer(third))).status_code == 403

        # Hostile cursors, limits and waits: 4xx, never a 500, never a long wait.
        now_ms = int(time.time() * 1000)
        expired = Cursor(now_ms - keys.REVOKED_JOURNAL_KEEP_S * 1000, Cursor.start(now_ms).marks).encode()
        gone = await http.get("/sso/revocations", params={"since": expired, "wait": 30}, headers=basic)
        assert gone.status_code == 410 and error_code(gone) == "cursor_expired"
        future = Cursor(now_ms + 3_600_000, Cursor.start(now_ms).marks).encode()
        short = Cursor(now_ms, Cursor.start(now_ms).marks[:3]).encode()
        encode = base64.urlsafe_b64encode
        hostile: list[dict[str, str]] = [
            {"since": "garbage"}, {"since": "A" * 5000}, {"since": future}, {"since": short},
            {"since": encode(b"1.1." + b".".join([b"1-1"] * 16)).decode() + "!"},
            {"since": encode(("1." + str(now_ms) + ".-1-0" * 16).encode()).decode()},
            {"since": encode(("1." + str(now_ms) + "." + ".".join(["9" * 40 + "-0"] * 16)).encode()).decode()},
            {"since": encode("1.٣.٣-٣".encode()).decode()},
            {"limit": "0"}, {"limit": "10001"}, {"limit": "abc"}, {"limit": "9" * 50},
            {"wait": "31"}, {"wait": "-1"}, {"wait": "1e9"}, {"since": cursor + "\x00"},
        ]  # fmt: skip
        for params in hostile:
            response = await http.get("/sso/revocations", params=params, headers=basic)
            assert 400 <= response.status_code < 500, (params, response.status_code, response.text)
            assert "error" in response.json()


async def test_long_polls_park_on_one_subscription_and_answer_a_logout_at_once(
    app: App, servers: Servers
) -> None:
    """2,000 long polls cost no CPU while nothing changes; a logout answers all of them, sharing reads."""
    _, basic = await _client(app)
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    app.http.cookies.clear()
    cursor = (await app.http.get("/sso/revocations", headers=basic)).json()["cursor"]
    numsub = dict(await app.ctx.redis.pubsub_numsub(keys.CHANGES_CHANNEL))[keys.CHANGES_CHANNEL]
    feed = app.ctx.get(Feed)
    polls = [
        asyncio.ensure_future(
            app.http.get("/sso/revocations", params={"since": cursor, "wait": 20}, headers=basic)
        )
        for _ in range(2000)
    ]
    deadline = time.monotonic() + 30
    while feed.parked < len(polls):
        assert time.monotonic() < deadline, f"only {feed.parked} polls parked"
        await asyncio.sleep(0.05)
    reads_before = await _redis_calls(app, "zrangebyscore")
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(1.0)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    print(f"2000 parked polls: {cpu:.3f} s CPU in {wall:.2f} s")
    # The process's own background (the validator's journal poll, the channel listener) is all that runs.
    assert cpu < 0.3 * wall
    assert dict(await app.ctx.redis.pubsub_numsub(keys.CHANGES_CHANNEL))[keys.CHANGES_CHANNEL] == numsub
    assert not any(p.done() for p in polls)
    logout_at = time.monotonic()
    assert (await app.http.post("/sso/logout", headers=bearer(tokens))).status_code == 204
    answers = await asyncio.gather(*polls)
    took = time.monotonic() - logout_at
    reads = (await _redis_calls(app, "zrangebyscore")) - reads_before
    print(f"2000 polls answered {took:.2f} s after the logout, with {reads} journal reads")
    assert all(a.status_code == 200 for a in answers)
    assert all([e["sid"] for e in a.json()["revoked"]] == [tokens["session_id"]] for a in answers)
    assert took < 10
    # Polls woken together with the same cursor share a read (16 shards per read; the poll adds a few).
    assert reads < 16 * 40


class _CountingFeed(RevocationFeed):
    """The feed, counting the answers it has applied (one per poll answered)."""

    answers = 0

    async def follow(self, apply: Callable[[list[str]], None], on_gap: Callable[[], None]) -> None:
        def counted(words: list[str]) -> None:
            self.answers += 1
            apply(words)

        await super().follow(counted, on_gap)


async def _refused_within(validator: TokenValidator, token: str, limit_s: float) -> float:
    start = time.monotonic()
    while True:
        try:
            await validator.validate(token)
        except Exception:
            return time.monotonic() - start
        assert time.monotonic() - start < limit_s, "the validator still accepts the token"
        await asyncio.sleep(0.01)


async def test_a_validator_without_redis_follows_the_feed_of_a_real_server(app: App, served: str) -> None:
    """A logout in another process reaches a long poll and a feed-following validator within a second, also
    after the feed was out of reach for a while."""
    secret, basic = await _client(app, "validator")
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        assert (
            await http.post("/sso/users", json={"username": "alice", "password": PASSWORD})
        ).status_code == 201
        sessions = [(await http.post("/sso/login", json={"username": "alice", "password": PASSWORD})).json()
                    for _ in range(4)]  # fmt: skip
        user_id = (await http.get("/sso/session", headers=bearer(sessions[0]))).json()["user_id"]
        # A raw long poll: the session is ended by this test process, not by the server.
        start = await http.get("/sso/revocations", headers=basic)
        while start.status_code == 401:  # until the server has reloaded its clients ("c" message)
            await asyncio.sleep(0.05)
            start = await http.get("/sso/revocations", headers=basic)
        cursor = start.json()["cursor"]
        poll = asyncio.ensure_future(
            http.get("/sso/revocations", params={"since": cursor, "wait": 10}, headers=basic)
        )
        await asyncio.sleep(0.3)
        assert not poll.done()
        ended_at = time.monotonic()
        await app.ctx.get(Sso).sessions.end(user_id, "one", sessions[0]["session_id"])
        answer = await poll
        took = time.monotonic() - ended_at
        print(f"long poll answered {took * 1000:.0f} ms after a logout in another process")
        assert [e["sid"] for e in answer.json()["revoked"]] == [sessions[0]["session_id"]] and took < 3

        # The validator: keys from the JWKS URL, revocations from the feed through a proxy; no Redis at all.
        host, _, port = served.removeprefix("http://").partition(":")
        async with FaultProxy(host, int(port)) as proxy:
            base = f"http://127.0.0.1:{proxy.port}"
            feed = _CountingFeed(
                f"{base}/sso/revocations", client_id="validator", client_secret=secret, wait_s=5
            )
            validator = TokenValidator(issuer=served, audience="peak", keys=jwks_from_url(f"{served}/.well-known/jwks.json"),
                                       revocation_feed=feed)  # fmt: skip
            async with validator.running():
                # Started after the first logout: it knows it from the feed's start.
                for refused in (sessions[0],):
                    await _refused_within(validator, refused["access_token"], 0.5)
                assert (await validator.validate(sessions[1]["access_token"])).username == "alice"
                assert (await http.post("/sso/logout", headers=bearer(sessions[1]))).status_code == 204
                took = await _refused_within(validator, sessions[1]["access_token"], 3.0)
                print(f"feed validator refused a logged-out token {took * 1000:.0f} ms after the logout")
                # The feed out of reach: the poll in flight answers (another logout), the next ones are reset.
                # Cut once that poll is on its way (one more request passed on than answered): a loaded machine
                # once cut it before the validator had sent it, and the logout never came.
                deadline = time.monotonic() + 5
                while proxy.counts["requests"] <= feed.answers:
                    assert time.monotonic() < deadline, "the validator sent no poll after its answer"
                    await asyncio.sleep(0.01)
                proxy.reset_rate = 1.0
                await app.ctx.get(Sso).sessions.end(user_id, "one", sessions[3]["session_id"])
                await _refused_within(validator, sessions[3]["access_token"], 3.0)
                await asyncio.sleep(0.3)
                await app.ctx.get(Sso).sessions.end(user_id, "one", sessions[2]["session_id"])
                await asyncio.sleep(1.0)
                # Cut off, the validator goes on with what it knows; once the feed answers it catches up.
                assert (await validator.validate(sessions[2]["access_token"])).username == "alice"
                assert proxy.counts["resets_before"] + proxy.counts["resets_after"] > 0
                proxy.heal()
                took = await _refused_within(validator, sessions[2]["access_token"], 8.0)
                print(
                    f"after a 1.3 s feed outage, a logout made meanwhile counted {took * 1000:.0f} ms after it"
                )


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the proxy stands in front of one redis-server")
async def test_the_feed_answers_503_while_redis_is_gone_and_catches_up_after(
    servers: Servers, make_settings: Callable[..., Settings]
) -> None:
    redis_port = int(servers.redis.url.rsplit(":", 1)[1].split("/")[0])
    async with (
        FaultProxy("127.0.0.1", redis_port) as proxy,
        sso_app(make_settings(PEAK_REDIS_URL=proxy.url())) as app,
    ):
        _, basic = await _client(app)
        await register(app.http, "alice")
        tokens = await login(app.http, "alice")
        app.http.cookies.clear()
        cursor = (await app.http.get("/sso/revocations", headers=basic)).json()["cursor"]
        proxy.reset_rate = 1.0
        down = await app.http.get("/sso/revocations", params={"since": cursor}, headers=basic)
        assert down.status_code == 503 and error_code(down) == "unavailable", down.text
        # The session ends meanwhile (another process, straight to Redis): nobody here is told.
        user_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
        direct = create_redis(servers.redis.url)
        try:
            assert await scripts.end_sessions(direct, user_id, "one", tokens["session_id"])
        finally:
            await direct.aclose()
        proxy.heal()
        # Back: the cursor from before the outage answers what happened during it.
        deadline = time.monotonic() + 10
        while True:
            back = await app.http.get("/sso/revocations", params={"since": cursor, "wait": 2}, headers=basic)
            if back.status_code == 200:
                break
            assert back.status_code == 503 and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert [e["sid"] for e in back.json()["revoked"]] == [tokens["session_id"]]


def test_the_feed_setting_needs_its_client_credentials(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match="PEAK_SSO_REVOCATION_FEED_CLIENT"):
        make_settings(PEAK_SSO_REVOCATION_FEED="http://127.0.0.1:9/sso/revocations").of(SsoSettings)
    settings = make_settings(
        PEAK_SSO_REVOCATION_FEED="http://127.0.0.1:9/sso/revocations",
        PEAK_SSO_REVOCATION_FEED_CLIENT="workers",
        PEAK_SSO_REVOCATION_FEED_SECRET="s" * 32,
    ).of(SsoSettings)
    assert settings.revocation_feed_client == "workers"

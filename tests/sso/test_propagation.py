"""A logout reaches non-strict validators in other processes within a second."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

import sso.sessions
from kit.redis import create_pubsub_client, create_redis
from kit.settings import Settings
from sso import keys, scripts
from sso.client import TokenValidator, jwks_from_url
from sso.service import Sso
from tests.conftest import Servers
from tests.sso.conftest import App, bearer, login, register, sso_app
from tests.support import REPO


class Remote:
    """tests/sso/remote_validator.py running in its own process."""

    def __init__(self, servers: Servers, jwks: dict[str, object]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sso.remote_validator"],
            env={**os.environ, **servers.env(), "SSO_TEST_JWKS": orjson.dumps(jwks).decode()},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        assert self._read() == "ready"

    def _read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def answer(self, token: str, *, strict: bool = False) -> str:
        """``ok <username> <roles>`` or ``no``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(("strict " if strict else "") + token + "\n")
        self.proc.stdin.flush()
        return self._read()

    def check(self, token: str) -> str:
        """``ok <username>`` or ``no``, non-strictly."""
        return " ".join(self.answer(token).split()[:2])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
async def remote(servers: Servers, app: App) -> AsyncIterator[Remote]:
    jwks = (await app.http.get("/.well-known/jwks.json")).json()
    process = await asyncio.to_thread(Remote, servers, jwks)
    try:
        yield process
    finally:
        process.close()


async def _rejected_within(remote: Remote, token: str, limit_s: float) -> float:
    start = time.monotonic()
    while await asyncio.to_thread(remote.check, token) != "no":
        assert time.monotonic() - start < limit_s, "the other process still accepts the token"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_logout_reaches_a_validator_in_another_process(app: App, remote: Remote) -> None:
    await register(app.http, "alice")
    tokens, other = await login(app.http, "alice"), await login(app.http, "alice")
    assert await asyncio.to_thread(remote.check, tokens["access_token"]) == "ok alice"
    assert await asyncio.to_thread(remote.check, other["access_token"]) == "ok alice"
    assert (await app.http.post("/sso/logout", headers=bearer(tokens))).status_code == 204
    await _rejected_within(remote, tokens["access_token"], 1.0)
    # Only that session: the same user's other session is untouched.
    assert await asyncio.to_thread(remote.check, other["access_token"]) == "ok alice"


async def test_logout_everywhere_and_revocation_reach_another_process(app: App, remote: Remote) -> None:
    await register(app.http, "alice")
    sessions = [await login(app.http, "alice") for _ in range(3)]
    for tokens in sessions:
        assert await asyncio.to_thread(remote.check, tokens["access_token"]) == "ok alice"
    app.http.cookies.clear()
    assert (await app.http.delete("/sso/sessions", headers=bearer(sessions[0]))).status_code == 204
    for tokens in sessions:
        await _rejected_within(remote, tokens["access_token"], 1.0)
    fresh = await login(app.http, "alice")
    assert await asyncio.to_thread(remote.check, fresh["access_token"]) == "ok alice"
    assert (await app.http.post("/sso/revoke", data={"token": fresh["access_token"]})).status_code == 200
    await _rejected_within(remote, fresh["access_token"], 1.0)


async def test_a_lost_message_is_caught_by_the_journal(app: App, remote: Remote) -> None:
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    assert await asyncio.to_thread(remote.check, tokens["access_token"]) == "ok alice"
    # The session ends and its journal entry is written, but the pub/sub message never arrives.
    user_id = (await app.http.get("/sso/session", headers=bearer(tokens))).json()["user_id"]
    await app.ctx.redis.delete(keys.session(user_id, tokens["session_id"]))
    await app.ctx.redis.zadd(keys.journal(user_id), {f"s:{tokens['session_id']}": int(time.time() * 1000)})
    await _rejected_within(remote, tokens["access_token"], 2.0)


async def test_a_validator_started_later_knows_earlier_logouts(servers: Servers, app: App) -> None:
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    await app.http.post("/sso/logout", headers=bearer(tokens))
    jwks = (await app.http.get("/.well-known/jwks.json")).json()
    late = await asyncio.to_thread(Remote, servers, jwks)
    try:
        assert await asyncio.to_thread(late.check, tokens["access_token"]) == "no"
    finally:
        late.close()


@pytest.mark.slow
async def test_logout_on_a_real_server_reaches_a_jwks_url_validator(
    settings: Settings, servers: Servers, served: str
) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        assert (
            await http.post("/sso/users", json={"username": "alice", "password": "correct horse battery"})
        ).status_code == 201
        tokens = (
            await http.post("/sso/login", json={"username": "alice", "password": "correct horse battery"})
        ).json()
        redis = create_redis(servers.redis.url)
        validator = TokenValidator(
            issuer=served, audience="peak", keys=jwks_from_url(f"{served}/.well-known/jwks.json"),
            redis=redis, redis_url=servers.redis.url,
        )  # fmt: skip
        try:
            async with validator.running():
                assert (await validator.validate(tokens["access_token"])).username == "alice"
                assert (await validator.validate(tokens["access_token"], strict=True)).username == "alice"
                assert (await http.post("/sso/logout", headers=bearer(tokens))).status_code == 204
                start = time.monotonic()
                while True:
                    try:
                        await validator.validate(tokens["access_token"])
                    except Exception:
                        break
                    assert time.monotonic() - start < 1.0
                    await asyncio.sleep(0.02)
        finally:
            await redis.aclose()


async def test_ending_a_session_announces_it_in_the_same_script_call(servers: Servers, app: App) -> None:
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    listener = create_pubsub_client(servers.redis.url)
    try:
        async with listener.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(keys.CHANGES_CHANNEL)
            # The bare script call, nothing around it: the end, the journal entry and the message are one step.
            assert await scripts.end_sessions(app.ctx.redis, user["id"], "one", tokens["session_id"]) == [
                tokens["session_id"]
            ]
            message = None
            deadline = time.monotonic() + 2
            while message is None and time.monotonic() < deadline:
                message = await pubsub.get_message(timeout=0.2)
            assert message is not None and message["data"] == f"s:{tokens['session_id']}"
    finally:
        await listener.aclose()
    assert await app.ctx.redis.zscore(keys.journal(user["id"]), f"s:{tokens['session_id']}") is not None


class _SlowClock:
    """A writer whose clock is an hour behind."""

    @staticmethod
    def time() -> float:
        return time.time() - 3600


async def test_the_journal_is_scored_by_the_redis_clock(
    app: App, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    assert await asyncio.to_thread(remote.check, tokens["access_token"]) == "ok alice"
    monkeypatch.setattr(sso.sessions, "time", _SlowClock)
    await app.ctx.get(Sso).sessions.end(user["id"], "all")
    score = await app.ctx.redis.zscore(keys.journal(user["id"]), f"s:{tokens['session_id']}")
    seconds, micros = await app.ctx.redis.time()
    assert score is not None and abs(score - (seconds * 1000 + micros // 1000)) < 5000
    await _rejected_within(remote, tokens["access_token"], 1.0)


async def test_a_login_beyond_the_maximum_announces_the_session_it_ends(
    make_settings: Callable[..., Settings], servers: Servers
) -> None:
    async with sso_app(make_settings(PEAK_SSO_MAX_SESSIONS="1")) as app:
        await register(app.http, "alice")
        first = await login(app.http, "alice")
        jwks = (await app.http.get("/.well-known/jwks.json")).json()
        other = await asyncio.to_thread(Remote, servers, jwks)
        try:
            assert await asyncio.to_thread(other.check, first["access_token"]) == "ok alice"
            await login(app.http, "alice")
            await _rejected_within(other, first["access_token"], 1.0)
        finally:
            other.close()

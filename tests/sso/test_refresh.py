"""Refresh token rotation (issue 15): a retried call gets the same answer, the grace, reuse after it, the
bounded memory of used tokens, the per-session rate limit, and access tokens that never outlive the session."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest

from kit.redis import create_redis
from kit.settings import Settings
from sso import keys, scripts
from sso.errors import RefreshTokenReused
from sso.service import Sso
from sso.sessions import USED_KEPT
from sso.tokens import OpaqueToken
from tests.conftest import TEST_REDIS, Servers
from tests.sso.conftest import App, bearer, error_code, signed_in, sso_app


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/sso/token", data={"grant_type": "refresh_token", "refresh_token": token})


def _claims(tokens: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return claims


def _rotation_args(app: App, token: OpaqueToken, now_ms: int) -> dict[str, Any]:
    sso = app.ctx.get(Sso)
    successor = token.successor(sso.sessions._rotation_key or b"")
    return dict(
        user_id=token.user_id, session_id=token.session_id, presented_digest=token.digest,
        successor_digest=successor.digest, now_ms=now_ms, idle_ms=900_000, grace_ms=0, used_kept=USED_KEPT,
        max_rotations=10, window_ms=60_000,
    )  # fmt: skip


async def test_the_script_run_twice_with_the_same_arguments_answers_the_same(app: App) -> None:
    # What the lane does when it lost the reply: the very same call again, after the first one ran.
    tokens = await signed_in(app.http, "alice")
    token = OpaqueToken.parse(tokens["refresh_token"])
    assert token is not None
    args = _rotation_args(app, token, int(time.time() * 1000))
    first = await scripts.rotate_refresh(app.ctx.redis, **args)
    second = await scripts.rotate_refresh(app.ctx.redis, **args)
    assert first == second and first.username == "alice"
    assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200
    # With the grace at 0, a later presentation (another call, a later now) is a reuse, as before.
    with pytest.raises(RefreshTokenReused):
        await scripts.rotate_refresh(app.ctx.redis, **{**args, "now_ms": args["now_ms"] + 1})
    assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 401


class DropOneReply:
    """A TCP proxy in front of Redis that, once armed, closes the connection carrying the next reply instead of
    passing it on: the command ran, its answer is lost, and the client's lane tries again."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.armed = False
        self.dropped = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
        finally:
            server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self._port)

        async def upstream() -> None:
            while data := await client_r.read(65536):
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while data := await redis_r.read(65536):
                if self.armed:
                    self.armed = False
                    self.dropped += 1
                    return
                client_w.write(data)
                await client_w.drain()

        with contextlib.suppress(OSError):
            await asyncio.wait(
                [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        for writer in (client_w, redis_w):
            writer.close()


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the proxy stands in front of one redis-server")
async def test_a_rotation_whose_reply_was_lost_is_retried_by_the_lane_and_answered_the_same(
    servers: Servers, app: App
) -> None:
    tokens = await signed_in(app.http, "alice")
    port = int(servers.redis.url.rsplit(":", 1)[1].split("/")[0])
    proxy = DropOneReply(port)
    async with proxy.running() as url:
        redis = create_redis(url)
        try:
            sessions = app.ctx.get(Sso).sessions
            through_proxy = type(sessions)(
                redis, app.ctx.get(Sso).settings, rotation_key=sessions._rotation_key
            )
            await scripts.list_sessions(redis, "00000000-0000-0000-0000-000000000000")  # a lane connection
            proxy.armed = True
            refreshed = await through_proxy.rotate_refresh(tokens["refresh_token"])
        finally:
            await redis.aclose()
    assert proxy.dropped == 1
    # The script ran twice; the second run saw the token it had just rotated and answered the same.
    stored = await app.ctx.redis.hget(keys.session(refreshed.user_id, refreshed.session_id), "refresh")
    assert stored == refreshed.refresh_token.digest
    assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200
    assert (await _refresh(app.http, str(refreshed.refresh_token))).status_code == 200


async def test_within_the_grace_a_replay_gets_the_same_pair_and_after_it_a_reuse(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(PEAK_SSO_REFRESH_GRACE_S="1")) as app:
        tokens = await signed_in(app.http, "alice")
        first = await _refresh(app.http, tokens["refresh_token"])
        await asyncio.sleep(0.3)
        again = await _refresh(app.http, tokens["refresh_token"])
        assert first.status_code == again.status_code == 200
        # The very same pair: the same refresh token, the same access token (same jti, iat, exp).
        assert first.json() == again.json()
        pair = first.json()
        assert (await app.http.get("/sso/session", headers=bearer(pair))).status_code == 200
        await asyncio.sleep(1.0)
        late = await _refresh(app.http, tokens["refresh_token"])
        assert (late.status_code, error_code(late)) == (401, "invalid_grant")
        assert (await app.http.get("/sso/session", headers=bearer(pair))).status_code == 401


async def test_a_replay_of_an_older_token_is_still_a_reuse(app: App) -> None:
    tokens = await signed_in(app.http, "alice")
    second = (await _refresh(app.http, tokens["refresh_token"])).json()
    third = (await _refresh(app.http, second["refresh_token"])).json()
    # Not the token rotated last: a reuse even within the grace.
    reused = await _refresh(app.http, tokens["refresh_token"])
    assert (reused.status_code, error_code(reused)) == (401, "invalid_grant")
    assert (await app.http.get("/sso/session", headers=bearer(third))).status_code == 401


async def test_used_tokens_are_remembered_up_to_a_bound(make_settings: Callable[..., Settings]) -> None:
    async with sso_app(make_settings(PEAK_SSO_REFRESH_MAX="1000", PEAK_SSO_REFRESH_GRACE_S="0")) as app:
        tokens = await signed_in(app.http, "alice")
        chain = [tokens["refresh_token"]]
        for _ in range(USED_KEPT + 8):
            response = await _refresh(app.http, chain[-1])
            assert response.status_code == 200, response.text
            chain.append(response.json()["refresh_token"])
        token = OpaqueToken.parse(chain[-1])
        assert token is not None
        used = await app.ctx.redis.hget(keys.session(token.user_id, token.session_id), "used")
        assert used is not None and len(used) == 32 * USED_KEPT
        # The oldest are forgotten: refused, but no longer taken for a theft.
        forgotten = await _refresh(app.http, chain[0])
        assert (forgotten.status_code, error_code(forgotten)) == (401, "invalid_grant")
        assert (await _refresh(app.http, chain[-1])).status_code == 200
        # One remembered is a reuse: the session ends.
        remembered = await _refresh(app.http, chain[-5])
        assert remembered.status_code == 401
        assert (await app.ctx.redis.exists(keys.session(token.user_id, token.session_id))) == 0


async def test_refresh_is_rate_limited_per_session(make_settings: Callable[..., Settings]) -> None:
    async with sso_app(make_settings(PEAK_SSO_REFRESH_MAX="3", PEAK_SSO_REFRESH_WINDOW_S="2")) as app:
        tokens = await signed_in(app.http, "alice")
        other = await app.http.post(
            "/sso/login", json={"username": "alice", "password": "correct horse battery"}
        )
        other_tokens = other.json()
        current = tokens["refresh_token"]
        for _ in range(3):
            response = await _refresh(app.http, current)
            assert response.status_code == 200
            previous, current = current, response.json()["refresh_token"]
        # Replays of the last rotation are answered and do not count.
        assert (await _refresh(app.http, previous)).json()["refresh_token"] == current
        refused = await _refresh(app.http, current)
        assert (refused.status_code, error_code(refused)) == (429, "too_many_refreshes")
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        # The token is still good once the window has passed, and other sessions were never limited.
        assert (await _refresh(app.http, other_tokens["refresh_token"])).status_code == 200
        await asyncio.sleep(2.1)
        assert (await _refresh(app.http, current)).status_code == 200


async def test_access_tokens_never_outlive_the_session(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_IDLE_TIMEOUT_S="30", PEAK_SSO_ABSOLUTE_TIMEOUT_S="60")
    async with sso_app(settings) as app:
        tokens = await signed_in(app.http, "alice")
        session = (await app.http.get("/sso/session", headers=bearer(tokens))).json()
        claims = _claims(tokens)
        assert claims["exp"] <= session["absolute_expires_at"] < claims["iat"] + 900
        assert tokens["expires_in"] == claims["exp"] - claims["iat"] <= 60
        await asyncio.sleep(1.1)
        refreshed = (await _refresh(app.http, tokens["refresh_token"])).json()
        assert _claims(refreshed)["exp"] <= session["absolute_expires_at"]
        assert refreshed["expires_in"] <= 59


async def test_refresh_answers_for_hostile_tokens(app: App) -> None:
    tokens = await signed_in(app.http, "alice")
    user_id, sid, _ = tokens["refresh_token"].split(".")
    for garbage in (f"{user_id}.{sid}.", f"{user_id}.{sid}.x" * 40, f"{user_id}.{{x}}.y", f"{user_id}.{sid}.é",
                    f"{user_id.upper()}.{sid}.abc", f"{user_id}.{sid}.{'z' * 43}"):  # fmt: skip
        response = await _refresh(app.http, garbage)
        assert (response.status_code, error_code(response)) == (401, "invalid_grant"), garbage
    nul = await _refresh(app.http, "\x00.\x00.\x00")  # the request schema refuses control characters
    assert (nul.status_code, error_code(nul)) == (422, "invalid_request")
    # None of that touched the session.
    assert (await _refresh(app.http, tokens["refresh_token"])).status_code == 200

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from kit.errors import Unauthorized
from kit.settings import Settings
from sso import keys
from sso.client import TokenValidator
from sso.service import Sso
from tests.conftest import Servers
from tests.sso.conftest import App, bearer, cli, error_code, forge, issuer, login, register, sso_app


async def add_client(app: App, name: str = "seckill") -> httpx.BasicAuth:
    sso = app.ctx.get(Sso)
    secret = await sso.clients.add(name)
    assert secret is not None  # a confidential client
    await sso.clients.reload()
    return httpx.BasicAuth(name, secret)


async def introspect(app: App, token: str, auth: httpx.BasicAuth) -> dict[str, object]:
    response = await app.http.post("/sso/introspect", data={"token": token}, auth=auth)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, object] = response.json()
    return body


async def test_add_client_prints_the_secret_once_and_stores_a_hash(servers: Servers, app: App) -> None:
    output = cli(servers, "add-client", "reviews")
    secret = output.strip().splitlines()[-1]
    assert len(secret) >= 43
    stored = await app.ctx.db.fetchval("SELECT secret_sha256 FROM sso_clients WHERE name = 'reviews'")
    assert stored and secret not in stored
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    # The running app hears of the new client without a restart: by the CLI's announcement, which its listener
    # task handles (a reload from PostgreSQL) while these requests run, or else by the reload of an unknown name
    # (at most once a second). So within about a second, not at once: the CLI ran blocking this event loop.
    auth = httpx.BasicAuth("reviews", secret)
    deadline = time.monotonic() + 3
    while (
        await app.http.post("/sso/introspect", data={"token": tokens["access_token"]}, auth=auth)
    ).status_code == 401:
        assert time.monotonic() < deadline, "the new client is still unknown 3 s after add-client"
        await asyncio.sleep(0.05)
    body = await introspect(app, tokens["access_token"], auth)
    assert body["active"] is True


async def test_introspection_needs_client_credentials(app: App) -> None:
    auth = await add_client(app)
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    wrong = [httpx.BasicAuth("seckill", "wrong"), httpx.BasicAuth("nobody", "x")]
    for response in [
        await app.http.post("/sso/introspect", data={"token": tokens["access_token"]}),
        *[
            await app.http.post("/sso/introspect", data={"token": tokens["access_token"]}, auth=a)
            for a in wrong
        ],
    ]:
        assert (response.status_code, error_code(response)) == (401, "invalid_client")
        assert response.headers["www-authenticate"].startswith("Basic")
    bearer_only = await app.http.post(
        "/sso/introspect", data={"token": tokens["access_token"]}, headers=bearer(tokens)
    )
    assert bearer_only.status_code == 401
    assert (await introspect(app, tokens["access_token"], auth))["active"] is True


async def test_active_answer(app: App) -> None:
    auth = await add_client(app)
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    body = await introspect(app, tokens["access_token"], auth)
    assert {"active", "sub", "sid", "username", "exp", "iat", "iss", "aud", "token_type", "client_id"} <= set(
        body
    )
    assert body["active"] is True and body["sub"] == user["id"] and body["sid"] == tokens["session_id"]
    assert body["username"] == "alice" and body["aud"] == "peak" and body["token_type"] == "Bearer"
    assert body["iss"] == issuer(app) and body["client_id"] == "peak"
    assert isinstance(body["exp"], int) and isinstance(body["iat"], int) and body["exp"] > body["iat"]


async def test_inactive_answers_are_exactly_active_false(app: App) -> None:
    auth = await add_client(app)
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    now = int(time.time())
    payload_tampered = tokens["access_token"].split(".")
    payload_tampered[1] = payload_tampered[1][:-4] + (
        "AAAA" if not payload_tampered[1].endswith("AAAA") else "BBBB"
    )
    inactive = {
        "expired": await forge(app, tokens, exp=now - 120, iat=now - 1000, nbf=now - 1000),
        "tampered": ".".join(payload_tampered),
        "unknown key": await forge(app, tokens, header={"kid": "no-such-key"}),
        "garbage": "not-a-token",
        "empty-ish": "a.b.c",
    }
    for name, token in inactive.items():
        assert await introspect(app, token, auth) == {"active": False}, name
    await app.http.post("/sso/logout", headers=bearer(tokens))
    assert await introspect(app, tokens["access_token"], auth) == {"active": False}


async def test_introspection_slides_the_session(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_IDLE_TIMEOUT_S="2")
    async with sso_app(settings) as app:
        auth = await add_client(app)
        await register(app.http, "alice")
        tokens = await login(app.http, "alice")
        for _ in range(3):
            await asyncio.sleep(1.2)
            assert (await introspect(app, tokens["access_token"], auth))["active"] is True
        await asyncio.sleep(2.3)
        assert await introspect(app, tokens["access_token"], auth) == {"active": False}


async def test_two_hundred_concurrent_introspections(app: App) -> None:
    auth = await add_client(app)
    users = [f"user{i}" for i in range(20)]
    await asyncio.gather(*(register(app.http, u) for u in users))
    logins = await asyncio.gather(*(login(app.http, u) for u in users))
    answers = await asyncio.gather(
        *(introspect(app, logins[i % 20]["access_token"], auth) for i in range(200))
    )
    assert [a["username"] for a in answers] == [users[i % 20] for i in range(200)]


async def test_revocation_answers_200_even_for_unknown_tokens(app: App) -> None:
    auth = await add_client(app)
    for token in ("unknown", "a.b.c", "00000000-0000-0000-0000-000000000000.s.x"):
        assert (await app.http.post("/sso/revoke", data={"token": token}, auth=auth)).status_code == 200
        assert (await app.http.post("/sso/revoke", data={"token": token})).status_code == 200
    wrong = await app.http.post("/sso/revoke", data={"token": "x"}, auth=httpx.BasicAuth("seckill", "nope"))
    assert (wrong.status_code, error_code(wrong)) == (401, "invalid_client")
    assert (await app.http.post("/sso/revoke", data={})).status_code == 422


async def test_revoking_a_refresh_token_ends_its_session(app: App) -> None:
    auth = await add_client(app)
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    # A refresh token that only looks like this session's changes nothing.
    forged = tokens["refresh_token"].rsplit(".", 1)[0] + ".forged-secret"
    assert (await app.http.post("/sso/revoke", data={"token": forged})).status_code == 200
    assert (await introspect(app, tokens["access_token"], auth))["active"] is True
    revoked = await app.http.post(
        # A wrong hint is only a hint (RFC 7009 2.1): the token is still found and revoked.
        "/sso/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "access_token"},
        auth=auth,
    )
    assert revoked.status_code == 200
    assert await introspect(app, tokens["access_token"], auth) == {"active": False}


async def test_revoking_an_access_token_keeps_the_session(app: App) -> None:
    auth = await add_client(app)
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    app.http.cookies.clear()
    assert (await app.http.post("/sso/revoke", data={"token": tokens["access_token"]})).status_code == 200
    assert await introspect(app, tokens["access_token"], auth) == {"active": False}
    validator = app.ctx.get(TokenValidator)
    for strict in (False, True):
        with pytest.raises(Unauthorized, match=r"revoked|ended"):
            await validator.validate(tokens["access_token"], strict=strict)
    assert await app.ctx.redis.exists(keys.revoked_token(user["id"], _jti(tokens["access_token"])))
    refreshed = await app.http.post(
        "/sso/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert (await introspect(app, refreshed.json()["access_token"], auth))["active"] is True


def _jti(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def test_a_new_secret_replaces_the_old_one(app: App) -> None:
    old = await add_client(app)
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    assert (await introspect(app, tokens["access_token"], old))["active"] is True
    new = await add_client(app)
    refused = await app.http.post("/sso/introspect", data={"token": tokens["access_token"]}, auth=old)
    assert (refused.status_code, error_code(refused)) == (401, "invalid_client")
    assert (await introspect(app, tokens["access_token"], new))["active"] is True


async def test_introspection_accepts_json_too(app: App) -> None:
    auth = await add_client(app)
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    response = await app.http.post("/sso/introspect", json={"token": tokens["access_token"]}, auth=auth)
    assert response.json()["active"] is True

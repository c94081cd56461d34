from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from kit.errors import Unauthorized
from kit.settings import Settings
from sso.client import TokenValidator
from tests.conftest import Servers
from tests.sso.conftest import (
    App,
    bearer,
    cli,
    error_code,
    issuer,
    login,
    register,
    signed_in,
    signing_key,
    sso_app,
)


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/sso/token", data={"grant_type": "refresh_token", "refresh_token": token})


async def test_access_token_header_and_claims(app: App) -> None:
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    header = jwt.get_unverified_header(tokens["access_token"])
    # PEAK_SSO_ALGORITHM's default.
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt" and header["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "username", "roles"} <= set(claims)
    assert claims["sub"] == user["id"] and claims["sid"] == tokens["session_id"]
    assert claims["username"] == "alice" and claims["roles"] == ["shopper"]
    assert claims["aud"] == "peak" and claims["iss"] == issuer(app)
    assert claims["exp"] - claims["iat"] == tokens["expires_in"] == 900
    assert abs(claims["iat"] - time.time()) < 5 and claims["nbf"] <= claims["iat"]
    jwks = (await app.http.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [header["kid"]]
    assert jwks["keys"][0]["alg"] == "ES256" and jwks["keys"][0]["use"] == "sig"


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
async def test_other_algorithms_are_selectable(
    make_settings: Callable[..., Settings], algorithm: str
) -> None:
    settings = make_settings(PEAK_SSO_ALGORITHM=algorithm)
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        tokens = await login(app.http, "alice")
        assert jwt.get_unverified_header(tokens["access_token"])["alg"] == algorithm
        assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200
        principal = await app.ctx.get(TokenValidator).validate(tokens["access_token"])
        assert principal.username == "alice"


async def test_token_lifetime_is_configurable(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_ACCESS_TOKEN_TTL_S="60")
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        tokens = await login(app.http, "alice")
        claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == tokens["expires_in"] == 60


async def test_refresh_rotates_and_reuse_ends_the_session(app: App) -> None:
    first = await signed_in(app.http, "alice")
    response = await _refresh(app.http, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["session_id"] == first["session_id"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert response.headers["cache-control"] == "no-store"
    third = (await _refresh(app.http, second["refresh_token"])).json()
    assert (await app.http.get("/sso/session", headers=bearer(third))).status_code == 200
    # The first token again: someone replays it, so nobody keeps the session.
    reused = await _refresh(app.http, first["refresh_token"])
    assert (reused.status_code, error_code(reused)) == (401, "invalid_grant")
    assert (await app.http.get("/sso/session", headers=bearer(third))).status_code == 401
    latest = await _refresh(app.http, third["refresh_token"])
    assert (latest.status_code, error_code(latest)) == (401, "invalid_grant")


async def test_refresh_tokens_are_stored_only_as_hashes(app: App) -> None:
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    from sso import keys

    stored = await app.ctx.redis.hgetall(keys.session(user["id"], tokens["session_id"]))
    secret = tokens["refresh_token"].rsplit(".", 1)[1]
    assert len(secret) >= 22
    assert not any(secret in value or secret in field for field, value in stored.items())


async def test_the_same_refresh_token_presented_200_times_at_once(app: App) -> None:
    tokens = await signed_in(app.http, "alice")
    answers = await asyncio.gather(*(_refresh(app.http, tokens["refresh_token"]) for _ in range(200)))
    # One rotation; the 199 others present the token just rotated, within the grace: a retry, not a theft.
    # They all get the same answer (issue 15; it used to be a reuse that ended the session).
    assert [a.status_code for a in answers] == [200] * 200
    bodies = {a.text for a in answers}
    assert len(bodies) == 1
    pair = answers[0].json()
    assert pair["refresh_token"] != tokens["refresh_token"]
    assert (await app.http.get("/sso/session", headers=bearer(pair))).status_code == 200
    assert (await _refresh(app.http, pair["refresh_token"])).status_code == 200


async def test_token_endpoint_errors(client: httpx.AsyncClient) -> None:
    wrong_grant = await client.post("/sso/token", data={"grant_type": "password"})
    assert (wrong_grant.status_code, error_code(wrong_grant)) == (400, "unsupported_grant_type")
    missing = await client.post("/sso/token", data={"grant_type": "refresh_token"})
    assert missing.status_code == 422
    for garbage in ("x", "a.b.c", "00000000-0000-0000-0000-000000000000.sid.secret"):
        bad = await client.post("/sso/token", data={"grant_type": "refresh_token", "refresh_token": garbage})
        assert (bad.status_code, error_code(bad)) == (401, "invalid_grant")


async def test_rotate_keys_keeps_the_old_public_key_published(servers: Servers, app: App) -> None:
    await register(app.http, "alice")
    before = await login(app.http, "alice")
    old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
    output = cli(servers, "rotate-keys")
    assert "PRIVATE" not in output
    jwks = (await app.http.get("/.well-known/jwks.json")).json()
    kids = [k["kid"] for k in jwks["keys"]]
    assert len(kids) == 2 and kids[1] == old_kid
    # The running app hears of the rotation and signs with the new key.
    deadline = time.monotonic() + 5
    while True:
        after = await login(app.http, "alice")
        if jwt.get_unverified_header(after["access_token"])["kid"] != old_kid:
            break
        assert time.monotonic() < deadline, "the app kept signing with the old key"
        await asyncio.sleep(0.1)
    assert jwt.get_unverified_header(after["access_token"])["kid"] == kids[0]
    validator = app.ctx.get(TokenValidator)
    for tokens in (before, after):
        assert (await validator.validate(tokens["access_token"], strict=True)).username == "alice"
    # Once the last token the old key signed has expired, the old key is withdrawn.
    await app.ctx.db.execute("UPDATE sso_signing_keys SET published_until = now() WHERE kid = $1", old_kid)
    await asyncio.sleep(1.1)  # the JWK set is served from memory for a second
    assert [k["kid"] for k in (await app.http.get("/.well-known/jwks.json")).json()["keys"]] == kids[:1]


async def test_a_key_retired_at_once_stops_its_tokens_within_a_second(servers: Servers, app: App) -> None:
    await register(app.http, "alice")
    before = await login(app.http, "alice")
    validator = app.ctx.get(TokenValidator)
    assert (await validator.validate(before["access_token"])).username == "alice"  # cached as verified
    output = cli(servers, "rotate-keys", "--retire-now")
    assert "withdrawn" in output
    done = time.monotonic()
    while True:
        try:
            await validator.validate(before["access_token"])
        except Unauthorized:
            break
        assert time.monotonic() - done < 1.0, "a token of the withdrawn key is still accepted"
        await asyncio.sleep(0.02)
    assert len((await app.http.get("/.well-known/jwks.json")).json()["keys"]) == 1
    after = await login(app.http, "alice")
    assert (await validator.validate(after["access_token"], strict=True)).username == "alice"


async def test_private_keys_are_encrypted_and_never_shown(
    servers: Servers, app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    await signing_key(app, "RS256")  # the ID tokens' default, beside the access tokens' ES256
    texts = [cli(servers, "rotate-keys")]
    tokens = await login(app.http, "alice")
    for path in (
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/sso/session",
        "/sso/sessions",
    ):
        texts.append((await app.http.get(path, headers=bearer(tokens))).text)
    texts.append(
        (
            await app.http.post(
                "/sso/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
            )
        ).text
    )
    texts.append(caplog.text)
    rows = await app.ctx.db.fetch("SELECT private_key FROM sso_signing_keys")
    assert rows and all(
        bytes(r["private_key"]).startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") for r in rows
    )
    rsa_key, ec_key = await signing_key(app, "RS256"), await signing_key(app, "ES256")
    assert isinstance(rsa_key.private_key, rsa.RSAPrivateKey)
    assert isinstance(ec_key.private_key, ec.EllipticCurvePrivateKey)
    secrets = [
        RSAAlgorithm.to_jwk(rsa_key.private_key, as_dict=True)[m] for m in ("d", "p", "q", "dp", "dq", "qi")
    ]
    secrets.append(ECAlgorithm.to_jwk(ec_key.private_key, as_dict=True)["d"])
    for text in [*texts, repr(rsa_key), str(rsa_key), repr(ec_key), str(ec_key)]:
        assert "PRIVATE KEY" not in text
        for secret in secrets:
            assert secret not in text
    for jwk in (await app.http.get("/.well-known/jwks.json")).json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)


async def test_the_first_key_is_created_once_when_processes_start_together(settings: Settings) -> None:
    from sso.keystore import KeyStore

    async with sso_app(settings) as app:
        store = KeyStore(
            app.ctx.db, algorithm="RS256", secret_key=settings.secret_key, access_token_ttl_s=900
        )
        await app.ctx.db.execute("TRUNCATE sso_signing_keys")
        kids = {k.kid for k in await asyncio.gather(*(store.signing_key() for _ in range(5)))}
        assert len(kids) == 1


async def test_openid_configuration_lists_endpoints_that_exist(client: httpx.AsyncClient) -> None:
    config = (await client.get("/.well-known/openid-configuration")).json()
    assert config["issuer"]
    for name in ("jwks_uri", "token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        path = "/" + config[name].split("/", 3)[3]
        response = await client.request("GET" if name == "jwks_uri" else "POST", path)
        assert response.status_code not in (404, 405), (name, path)

"""Signing keys per algorithm: ES256 access tokens by default, each OpenID Connect client's ID and logout tokens
with its ``id_token_signed_response_alg`` (RS256 unless registered otherwise), an RS256 token of before the
switch still valid, `peak sso rotate-keys` rotating every algorithm's key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import jwt
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from kit.settings import Settings
from sso.client import TokenValidator
from sso.client.validator import ALGORITHMS as VALIDATOR_ALGORITHMS
from sso.keystore import ALGORITHMS, KeyStore
from sso.oidc.idtoken import at_hash
from sso.oidc.logout_token import LogoutTokens
from sso.service import Sso
from tests.conftest import TEST_SECRET, Servers
from tests.sso.conftest import App, bearer, cli, issuer, login, register, signed_in, sso_app
from tests.sso.test_oidc_token import basic, code_for, sign_in
from tests.support import run_peak

X = "http://127.0.0.1:9001/cb"


def _header(token: str) -> dict[str, Any]:
    header: dict[str, Any] = jwt.get_unverified_header(token)
    return header


async def _jwks(app: App) -> dict[str, Any]:
    body: dict[str, Any] = (await app.http.get("/.well-known/jwks.json")).json()
    return body


async def _add(app: App, name: str, algorithm: str | None) -> str | None:
    """Register a client, with ``algorithm`` for its ID tokens or (None) registering none."""
    clients = app.ctx.get(Sso).clients
    if algorithm is None:
        secret = await clients.add(name, redirect_uris=(X,))
    else:
        secret = await clients.add(name, redirect_uris=(X,), id_token_signed_response_alg=algorithm)
    await clients.reload()
    return secret


async def _exchange(app: App, client_id: str, secret: str | None) -> dict[str, Any]:
    code, verifier, _ = await code_for(app, client_id, X)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": X, "code_verifier": verifier}
    answer = await app.http.post("/sso/token", data=form, headers=basic(client_id, secret))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_store_makes_keys_for_what_validators_accept() -> None:
    assert ALGORITHMS == VALIDATOR_ALGORITHMS


async def test_access_tokens_are_es256_by_default(app: App) -> None:
    tokens = await signed_in(app.http, "alice")
    header = _header(tokens["access_token"])
    assert header["alg"] == "ES256"
    [key] = (await _jwks(app))["keys"]  # no other key until an ID token asks for one
    assert key["kid"] == header["kid"] and (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
    assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200


async def test_an_rs256_token_still_validates_after_the_default_switched(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(PEAK_SSO_ALGORITHM="RS256")) as before:
        await register(before.http, "alice")
        old = await login(before.http, "alice")
    assert _header(old["access_token"])["alg"] == "RS256"
    async with sso_app(make_settings()) as app:
        new = await login(app.http, "alice")
        assert _header(new["access_token"])["alg"] == "ES256"
        assert {k["alg"] for k in (await _jwks(app))["keys"]} == {"RS256", "ES256"}
        validator = app.ctx.get(TokenValidator)
        for tokens in (old, new):
            assert (await validator.validate(tokens["access_token"], strict=True)).username == "alice"
            assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200


async def test_id_tokens_use_the_clients_algorithm_rs256_by_default(app: App) -> None:
    secrets = {
        name: await _add(app, name, alg) for name, alg in (("rs", None), ("es", "ES256"), ("ed", "EdDSA"))
    }
    await sign_in(app, "alice")
    answers = {name: await _exchange(app, name, secret) for name, secret in secrets.items()}
    jwks = await _jwks(app)
    assert {k["alg"] for k in jwks["keys"]} == {"RS256", "ES256", "EdDSA"}
    key_set = jwt.PyJWKSet.from_dict(jwks)
    # And by Authlib's JOSE library (joserfc: its authlib.jose is deprecated).
    jose_keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    for name, expected in (("rs", "RS256"), ("es", "ES256"), ("ed", "EdDSA")):
        tokens = answers[name]
        assert _header(tokens["access_token"])["alg"] == "ES256", "access tokens keep PEAK_SSO_ALGORITHM"
        header = _header(tokens["id_token"])
        assert header["alg"] == expected and header["typ"] == "JWT"
        key = key_set[header["kid"]]
        assert key.algorithm_name == expected
        claims = jwt.decode(tokens["id_token"], key.key, algorithms=[expected], audience=name,
                            issuer=issuer(app))  # fmt: skip
        assert claims["at_hash"] == at_hash(tokens["access_token"], expected)
        if expected == "EdDSA":  # joserfc refuses the name: RFC 9864 deprecates it for "Ed25519"
            continue
        by_jose = jose_jwt.decode(tokens["id_token"], jose_keys, algorithms=[expected])
        jose_jwt.JWTClaimsRegistry(aud={"essential": True, "value": name}).validate(by_jose.claims)
        assert by_jose.claims["sub"] == claims["sub"] and by_jose.header["kid"] == header["kid"]
    # EdDSA's at_hash is half a SHA-512, the others' half a SHA-256.
    assert len(jwt.decode(answers["ed"]["id_token"], options={"verify_signature": False})["at_hash"]) == 43
    assert len(jwt.decode(answers["es"]["id_token"], options={"verify_signature": False})["at_hash"]) == 22


async def test_logout_tokens_use_the_clients_algorithm(app: App) -> None:
    store = KeyStore(app.ctx.db, algorithm="ES256", secret_key=TEST_SECRET, access_token_ttl_s=900)
    algorithms = {"shop": "RS256", "pay": "EdDSA"}
    tokens = LogoutTokens(store, issuer=issuer(app), algorithm_of=algorithms.__getitem__)
    key_set: jwt.PyJWKSet | None = None
    for client_id, expected in algorithms.items():
        token = await tokens.token(client_id=client_id, sub="u", sid="s")
        header = _header(token)
        assert (header["alg"], header["typ"]) == (expected, "logout+jwt")
        await asyncio.sleep(1.1)  # the JWK set is served from memory for a second
        key_set = jwt.PyJWKSet.from_dict(await _jwks(app))
        key = key_set[header["kid"]]
        claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=client_id,
                            issuer=issuer(app))  # fmt: skip
        assert claims["sid"] == "s"


async def test_rotate_keys_rotates_every_algorithm_and_old_tokens_verify(servers: Servers, app: App) -> None:
    secret = await _add(app, "rs", None)
    await sign_in(app, "alice")
    before = await _exchange(app, "rs", secret)
    old = {
        _header(before[name])["alg"]: _header(before[name])["kid"] for name in ("access_token", "id_token")
    }
    assert set(old) == {"ES256", "RS256"}
    output = cli(servers, "rotate-keys")
    assert "ES256" in output and "RS256" in output and "EdDSA" not in output, output
    current = await app.ctx.get(Sso).keystore.current_kids()
    assert set(current) == {"ES256", "RS256"} and not set(current.values()) & set(old.values())
    # The running app hears of the rotation and signs both tokens with the new keys.
    deadline = time.monotonic() + 5
    while True:
        after = await _exchange(app, "rs", secret)
        kids = {_header(after[name])["kid"] for name in ("access_token", "id_token")}
        if kids == set(current.values()):
            break
        assert time.monotonic() < deadline, f"the app kept signing with {kids} (current: {current})"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.1)  # the JWK set is served from memory for a second
    jwks = await _jwks(app)
    assert {k["kid"] for k in jwks["keys"]} == {*old.values(), *current.values()}
    key_set = jwt.PyJWKSet.from_dict(jwks)
    validator = app.ctx.get(TokenValidator)
    for tokens in (before, after):
        assert (await validator.validate(tokens["access_token"])).username == "alice"
        key = key_set[_header(tokens["id_token"])["kid"]]
        jwt.decode(tokens["id_token"], key.key, algorithms=["RS256"], audience="rs", issuer=issuer(app))


async def test_add_client_stores_the_id_token_algorithm_and_refuses_an_unknown_one(
    servers: Servers, app: App
) -> None:
    cli(servers, "add-client", "es", "--redirect-uri", X, "--id-token-signed-response-alg", "ES256")
    cli(servers, "add-client", "rs", "--redirect-uri", X)
    listed = cli(servers, "clients")
    assert "es  oidc confidential  id-token-alg ES256" in listed
    assert "rs  oidc confidential  id-token-alg RS256" in listed
    await app.ctx.get(Sso).clients.reload()
    clients = app.ctx.get(Sso).clients
    assert [clients.get(n).id_token_signed_response_alg for n in ("es", "rs")] == ["ES256", "RS256"]  # type: ignore[union-attr]
    for args in (("--redirect-uri", X, "--id-token-signed-response-alg", "HS256"),
                 ("--id-token-signed-response-alg", "ES256")):  # fmt: skip
        refused = run_peak("sso", "add-client", "bad", *args, env=servers.env())
        assert refused.returncode != 0
        assert "--id-token-signed-response-alg" in refused.stderr and "Traceback" not in refused.stderr
    assert "must be one of RS256, ES256, EdDSA, not 'HS256'" in run_peak(
        "sso", "add-client", "bad", "--redirect-uri", X, "--id-token-signed-response-alg", "HS256",
        env=servers.env(),
    ).stderr  # fmt: skip
    assert "bad" not in cli(servers, "clients")

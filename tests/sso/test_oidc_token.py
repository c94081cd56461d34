"""The token endpoint's authorization_code grant (issue 19): the attacks RFC 6749 10, RFC 7636 and the OAuth 2.0
Security BCP name, each refused with an RFC 6749 5.2 body; a second redemption revokes what the first issued;
a crowd redeeming one code gets one answer; the per-client refresh token; userinfo by scope."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import orjson
import pytest
from redis.typing import EncodableT, FieldT

from kit.redis import create_redis
from kit.settings import Settings
from loadtest.faultproxy import FaultProxy
from sso import code_scripts, keys
from sso.oidc import codes
from sso.oidc.codes import CodeSeal
from sso.oidc.grant import s256
from sso.oidc.idtoken import at_hash
from sso.service import Sso
from sso.tokens import OpaqueToken
from tests.conftest import TEST_REDIS, Servers
from tests.sso.conftest import SITE, App, bearer, error_code, issuer, register, sso_app
from tests.sso.oidc_support import add_client, authorize, params, pkce, redirected

X = "http://127.0.0.1:9001/cb"
Y = "http://localhost:9002/cb"
TOKEN = "/sso/token"


def basic(client_id: str, secret: str | None) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def sign_in(app: App, username: str) -> dict[str, Any]:
    """A user signed in by POST /sso/login: its cookie stays in the client's jar, for the SSO hop."""
    await register(app.http, username)
    response = await app.http.post("/sso/login", json={"username": username, "password": "correct horse battery"},
                                   headers=SITE)  # fmt: skip
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def code_for(app: App, client_id: str, redirect_uri: str, **extra: str | None) -> tuple[str, str, str]:
    """A code from the real SSO hop (GET /sso/authorize with the session cookie): (code, verifier, nonce)."""
    verifier, challenge = pkce()
    query = params(client_id, redirect_uri, code_challenge=challenge, **extra)
    back = redirected(await authorize(app.http, query), redirect_uri)
    assert back["state"] == query["state"]
    return back["code"], verifier, query.get("nonce", "")


async def forged_code(
    app: App, login: dict[str, Any], client_id: str, redirect_uri: str, challenge: str = "", *,
    stored: bool = False, issued_at_ms: int | None = None,
) -> str:  # fmt: skip
    """A code sealed with the app's own key as GET /sso/authorize seals it (``stored``: a record written into
    Redis as the release before wrote it), for codes the hop never issues (a public client's without PKCE),
    to check the token endpoint refuses them on its own."""
    sid = login["session_id"]
    user_id = jwt.decode(login["access_token"], options={"verify_signature": False})["sub"]
    now_ms = int(time.time() * 1000) if issued_at_ms is None else issued_at_ms
    method = "S256" if challenge else ""
    if not stored:
        sealed = code_scripts.Code(client_id, code_scripts.redirect_digest(redirect_uri), challenge, method,
                                   "openid", "", now_ms)  # fmt: skip
        return app.ctx.get(Sso).codes.seal(user_id, sid, sealed)
    code = OpaqueToken.new(user_id, sid)
    fields = code_scripts.CodeRecord(
        client_id, redirect_uri, "openid", "", challenge, method, sid, user_id, now_ms
    )
    record: dict[FieldT, EncodableT] = {"r": orjson.dumps(list(fields)).decode(), "username": "u",
                                        "auth_time": int(time.time())}  # fmt: skip
    await app.ctx.redis.hset(keys.auth_code(user_id, code.digest), mapping=record)
    await app.ctx.redis.expire(keys.auth_code(user_id, code.digest), 60)
    return str(code)


def exchange(code: str, verifier: str, redirect_uri: str = X) -> dict[str, str]:
    """The token request's form for ``code``."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }


def oauth_error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) <= {"error", "error_description"} and isinstance(body["error"], str), body
    assert response.headers["cache-control"] == "no-store"
    return response.status_code, body["error"]


async def test_code_redemption_refuses_every_attack_and_revokes_on_reuse(app: App) -> None:
    x_secret = await add_client(app, "x", X)
    y_secret = await add_client(app, "y", Y)
    login = await sign_in(app, "alice")
    code, verifier, nonce = await code_for(app, "x", X)
    good = exchange(code, verifier)

    # Each refusal leaves the code unused: the real client still redeems it afterwards.
    wrong_secret = await app.http.post(TOKEN, data=good, headers=basic("x", "not-the-secret"))
    assert oauth_error(wrong_secret) == (401, "invalid_client")
    assert wrong_secret.headers["www-authenticate"].startswith("Basic")
    assert oauth_error(await app.http.post(TOKEN, data=good, headers=basic("nobody", "s"))) == (
        401,
        "invalid_client",
    )
    no_auth = await app.http.post(
        TOKEN, data={**good, "client_id": "x"}
    )  # a confidential client must authenticate
    assert oauth_error(no_auth) == (401, "invalid_client")
    by_y = await app.http.post(TOKEN, data=good, headers=basic("y", y_secret))
    assert oauth_error(by_y) == (400, "invalid_grant")
    other_uri = await app.http.post(
        TOKEN, data={**good, "redirect_uri": X + "/"}, headers=basic("x", x_secret)
    )
    assert oauth_error(other_uri) == (400, "invalid_grant")
    wrong_verifier = {**good, "code_verifier": pkce()[0]}
    assert oauth_error(await app.http.post(TOKEN, data=wrong_verifier, headers=basic("x", x_secret))) == (
        400, "invalid_grant")  # fmt: skip
    without_verifier = {k: v for k, v in good.items() if k != "code_verifier"}
    assert oauth_error(await app.http.post(TOKEN, data=without_verifier, headers=basic("x", x_secret))) == (
        400, "invalid_request")  # fmt: skip
    both = await app.http.post(TOKEN, data={**good, "client_secret": x_secret}, headers=basic("x", x_secret))
    assert oauth_error(both) == (400, "invalid_request")
    # A parameter sent twice (RFC 6749 3.2): refused, not one of the two picked.
    twice = "&".join(f"{k}={v}" for k, v in good.items()) + "&redirect_uri=" + Y
    form = {**basic("x", x_secret), "content-type": "application/x-www-form-urlencoded"}
    repeated = await app.http.post(TOKEN, content=twice, headers=form)
    assert oauth_error(repeated) == (400, "invalid_request")
    assert "'redirect_uri'" in repeated.json()["error_description"]

    # client_secret_post works as well as client_secret_basic.
    answer = await app.http.post(TOKEN, data={**good, "client_id": "x", "client_secret": x_secret})
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid profile"
    assert answer.headers["cache-control"] == "no-store"
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["aud"] == "x" and claims["iss"] == issuer(app) and claims["nonce"] == nonce
    assert claims["sid"] == login["session_id"] and claims["sub"] == jwt.decode(
        login["access_token"], options={"verify_signature": False})["sub"]  # fmt: skip
    assert claims["at_hash"] == at_hash(
        tokens["access_token"], jwt.get_unverified_header(tokens["id_token"])["alg"]
    )
    assert claims["auth_time"] <= claims["iat"] and claims["preferred_username"] == "alice"
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert access["sid"] == login["session_id"] and access["client_id"] == "x" and access["aud"] == "peak"
    assert (await app.http.get("/sso/userinfo", headers=bearer(tokens))).status_code == 200

    # The client is recorded in the session's OIDC side, for the back-channel logout.
    oidc = await app.ctx.redis.hgetall(keys.oidc_session(claims["sub"], claims["sid"]))
    assert oidc["user_id"] == claims["sub"] and "c:x" in oidc and oidc["username"] == "alice"
    shard = keys.oidc_expiries(keys.shard_of(claims["sub"]))
    assert await app.ctx.redis.zscore(shard, claims["sid"]) == float(oidc["absolute_expires_at"])

    # A second redemption fails and revokes what the first issued; the session (and the login's tokens) stay.
    again = await app.http.post(TOKEN, data=good, headers=basic("x", x_secret))
    assert oauth_error(again) == (400, "invalid_grant")
    assert (await app.http.get("/sso/userinfo", headers=bearer(tokens))).status_code == 401
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert oauth_error(await app.http.post(TOKEN, data=refresh, headers=basic("x", x_secret))) == (
        400,
        "invalid_grant",
    )
    assert (await app.http.get("/sso/userinfo", headers=bearer(login))).status_code == 200


async def test_a_nonce_of_quotes_escapes_and_other_scripts_comes_back_byte_for_byte(app: App) -> None:
    """The hop seals the request as one JSON value (orjson) that the token endpoint opens and hands its script
    as arguments: what a client put in its nonce, quotes, backslashes, escapes and any script, up to the
    longest nonce taken (512 characters of four UTF-8 bytes each), is what its ID token says, and the
    redirect URI still matches exactly."""
    secret = await add_client(app, "shop", X)
    await sign_in(app, "dave")
    longest = "🎉" * 511 + '"'
    for nonce in ['a"b\\c\\"d', "\\u0041 %41 &amp; <x>", "é中文 🎉", "[1,2]", "null", longest]:
        code, verifier, sent = await code_for(app, "shop", X, nonce=nonce)
        assert sent == nonce and len(code) <= codes.MAX_LENGTH
        answer = await app.http.post(
            TOKEN, data={"grant_type": "authorization_code", "redirect_uri": X, "code": code,
                         "code_verifier": verifier}, headers=basic("shop", secret),
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert jwt.decode(answer.json()["id_token"], options={"verify_signature": False})["nonce"] == nonce


async def test_a_code_the_release_before_wrote_redeems_once(app: App) -> None:
    """A code whose record the hop wrote to Redis (before 2026-12-05; they live 60 s after the deploy) redeems
    as before: only with its verifier, once, and a second redemption revokes what the first issued."""
    secret = await add_client(app, "shop", X)
    login = await sign_in(app, "carol")
    verifier, challenge = pkce()
    code = await forged_code(app, login, "shop", X, challenge, stored=True)
    grant = {"grant_type": "authorization_code", "redirect_uri": X, "code": code}
    wrong = await app.http.post(
        TOKEN, data={**grant, "code_verifier": pkce()[0]}, headers=basic("shop", secret)
    )
    assert oauth_error(wrong) == (400, "invalid_grant")
    first = await app.http.post(
        TOKEN, data={**grant, "code_verifier": verifier}, headers=basic("shop", secret)
    )
    assert first.status_code == 200, first.text
    claims = jwt.decode(first.json()["id_token"], options={"verify_signature": False})
    assert claims["sid"] == login["session_id"] and claims["aud"] == "shop", claims
    assert (await app.http.get("/sso/userinfo", headers=bearer(first.json()))).status_code == 200
    again = await app.http.post(
        TOKEN, data={**grant, "code_verifier": verifier}, headers=basic("shop", secret)
    )
    assert oauth_error(again) == (400, "invalid_grant")
    assert (await app.http.get("/sso/userinfo", headers=bearer(first.json()))).status_code == 401


async def test_a_sealed_code_opens_only_as_it_was_sealed(make_settings: Callable[..., Settings]) -> None:
    """A code carries its record sealed (AES-GCM, PEAK_SECRET_KEY's key of the hour): altered, moved to another
    session, sealed with another key or in an hour long gone, it is invalid_grant (never a 500) and marks
    nothing; the code shows none of what it carries."""
    async with sso_app(make_settings()) as app:
        secret = await add_client(app, "x", X)
        other = await sign_in(app, "erin")
        login = await sign_in(app, "dora")  # the client's jar holds dora's cookie: the hop signs her in
        code, verifier, nonce = await code_for(app, "x", X, nonce="a-nonce-nobody-should-read")
        user_id, session_id, payload = code.split(".")
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        assert user_id == jwt.decode(login["access_token"], options={"verify_signature": False})["sub"]
        assert nonce.encode() not in raw and b"openid" not in raw and X.encode() not in raw
        other_user = jwt.decode(other["access_token"], options={"verify_signature": False})["sub"]
        flipped = payload[:30] + ("A" if payload[30] != "A" else "B") + payload[31:]
        # Other spellings of the same bytes (base64 decoders skip stray characters and a last character's
        # unused bits): not the same code again, nor a code of their own.
        b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        spelled = [payload + "=", payload + "==", payload + "!", payload[:10] + "\n" + payload[10:]]
        if len(raw) % 3:
            spelled.append(payload[:-1] + b64[b64.index(payload[-1]) ^ 1])
            assert base64.urlsafe_b64decode(spelled[-1] + "=" * (-len(spelled[-1]) % 4)) == raw
        spellings = [f"{user_id}.{session_id}.{v}" for v in spelled]
        forgeries = [
            *spellings,
            f"{user_id}.{session_id}.{flipped}",  # one character of the sealed part changed
            f"{user_id}.{session_id}.{payload[:-2]}",  # truncated
            f"{other_user}.{other['session_id']}.{payload}",  # moved to another user's session
            f"{user_id}.{other['session_id']}.{payload}",
            f"{user_id}.{session_id}.{payload}.x",
            f"{user_id.upper()}.{session_id}.{payload}",
            f"{user_id}.{session_id}." + "A" * 3000,
            await forged_code(app, login, "x", X, s256(verifier), issued_at_ms=int(time.time() * 1000) - 7_300_000),
        ]  # fmt: skip
        opened = app.ctx.get(Sso).codes.open(code, now_ms=int(time.time() * 1000))
        assert opened is not None and opened.code.nonce == nonce
        forgeries.append(
            CodeSeal("another PEAK_SECRET_KEY " + "k" * 40).seal(user_id, session_id, opened.code)
        )
        grant = {"grant_type": "authorization_code", "redirect_uri": X, "code_verifier": verifier}
        for forged in forgeries:
            answer = await app.http.post(TOKEN, data={**grant, "code": forged}, headers=basic("x", secret))
            assert oauth_error(answer) == (400, "invalid_grant"), forged[:80]
        too_long = {**grant, "code": f"{user_id}.{session_id}." + "A" * 5000}
        assert oauth_error(await app.http.post(TOKEN, data=too_long, headers=basic("x", secret))) == (
            400, "invalid_request")  # fmt: skip
        assert await app.ctx.redis.keys("*:code:*") == []  # nothing marked: the real code is unused
        first = await app.http.post(TOKEN, data={**grant, "code": code}, headers=basic("x", secret))
        assert first.status_code == 200, first.text
        claims = jwt.decode(first.json()["id_token"], options={"verify_signature": False})
        assert claims["nonce"] == nonce and claims["sub"] == user_id and claims["sid"] == session_id


async def test_a_second_redemption_after_expiry_still_revokes(make_settings: Callable[..., Settings]) -> None:
    """The mark of a code's first use outlives the code: a replay after its 1 s life is refused and still
    revokes what the first redemption issued."""
    async with sso_app(make_settings(PEAK_SSO_CODE_TTL_S="1")) as app:
        secret = await add_client(app, "x", X)
        await sign_in(app, "fay")
        code, verifier, _ = await code_for(app, "x", X)
        form = exchange(code, verifier)
        first = await app.http.post(TOKEN, data=form, headers=basic("x", secret))
        assert first.status_code == 200, first.text
        await asyncio.sleep(1.2)
        assert oauth_error(await app.http.post(TOKEN, data=form, headers=basic("x", secret))) == (
            400, "invalid_grant")  # fmt: skip
        assert (await app.http.get("/sso/userinfo", headers=bearer(first.json()))).status_code == 401


async def test_pkce_downgrade_and_code_expiry(make_settings: Callable[..., Settings]) -> None:
    async with sso_app(make_settings(PEAK_SSO_CODE_TTL_S="1")) as app:
        await add_client(app, "public", X, public=True)
        strict_secret = await add_client(app, "strict", X)
        lax_secret = await add_client(app, "lax", X, allow_no_pkce=True)
        login = await sign_in(app, "bob")
        grant = {"grant_type": "authorization_code", "redirect_uri": X}

        # A public client never redeems without PKCE, even a code that carries no challenge.
        bare = await forged_code(app, login, "public", X)
        refused = await app.http.post(TOKEN, data={**grant, "code": bare, "client_id": "public"})
        assert oauth_error(refused) == (400, "invalid_request")
        # A confidential client only where registered with --allow-no-pkce.
        bare = await forged_code(app, login, "strict", X)
        refused = await app.http.post(
            TOKEN, data={**grant, "code": bare}, headers=basic("strict", strict_secret)
        )
        assert oauth_error(refused) == (400, "invalid_request")
        bare = await forged_code(app, login, "lax", X)
        # A verifier for a code without a challenge is refused too (no downgrade by stripping the challenge).
        sneaky = {**grant, "code": bare, "code_verifier": pkce()[0]}
        assert oauth_error(await app.http.post(TOKEN, data=sneaky, headers=basic("lax", lax_secret))) == (
            400, "invalid_grant")  # fmt: skip
        allowed = await app.http.post(TOKEN, data={**grant, "code": bare}, headers=basic("lax", lax_secret))
        assert allowed.status_code == 200, allowed.text
        # A code with a challenge always needs its verifier, whatever the client may do without.
        code, verifier, _ = await code_for(app, "lax", X)
        assert oauth_error(await app.http.post(TOKEN, data={**grant, "code": code},
                                               headers=basic("lax", lax_secret))) == (400, "invalid_grant")  # fmt: skip
        # The public client with PKCE: no secret, client_id in the form.
        code, verifier, _ = await code_for(app, "public", X)
        public = await app.http.post(TOKEN, data={**grant, "code": code, "code_verifier": verifier,
                                                  "client_id": "public"})  # fmt: skip
        assert public.status_code == 200, public.text
        assert oauth_error(await app.http.post(TOKEN, data={**grant, "code": code, "code_verifier": verifier,
                                                            "client_id": "public", "client_secret": "guess"})) == (
            401, "invalid_client")  # fmt: skip

        # PEAK_SSO_CODE_TTL_S=1: a code a second old is gone.
        code, verifier, _ = await code_for(app, "public", X)
        started = time.monotonic()
        await asyncio.sleep(1.1)
        late = await app.http.post(
            TOKEN, data={**grant, "code": code, "code_verifier": verifier, "client_id": "public"}
        )
        assert oauth_error(late) == (400, "invalid_grant")
        print(f"code refused {time.monotonic() - started:.2f} s after it was issued (TTL 1 s)")


async def test_a_crowd_redeeming_one_code_gets_one_answer(app: App) -> None:
    secret = await add_client(app, "x", X)
    await sign_in(app, "carol")
    code, verifier, _ = await code_for(app, "x", X)
    form = exchange(code, verifier)
    answers = await asyncio.gather(
        *[app.http.post(TOKEN, data=form, headers=basic("x", secret)) for _ in range(200)]
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 199, statuses
    won = next(a.json() for a in answers if a.status_code == 200)
    # The others were second redemptions: the winner's tokens are revoked.
    assert (await app.http.get("/sso/userinfo", headers=bearer(won))).status_code == 401


async def test_client_refresh_tokens_rotate_per_client_in_one_session(app: App) -> None:
    x_secret = await add_client(app, "x", X)
    y_secret = await add_client(app, "y", Y)
    login = await sign_in(app, "dave")

    async def redeem(client_id: str, uri: str, secret: str | None) -> dict[str, Any]:
        code, verifier, _ = await code_for(app, client_id, uri)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": uri,
            "code_verifier": verifier,
        }
        answer = await app.http.post(TOKEN, data=form, headers=basic(client_id, secret))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    xt, yt = await redeem("x", X, x_secret), await redeem("y", Y, y_secret)

    async def refresh(token: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await app.http.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": token},
                                   headers=headers or {})  # fmt: skip

    rotated = await refresh(xt["refresh_token"], basic("x", x_secret))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["scope"] == "openid profile" and "id_token" not in rotated.json()
    # A retry after a lost answer gets the very same pair.
    assert (await refresh(xt["refresh_token"], basic("x", x_secret))).json() == rotated.json()
    access = jwt.decode(rotated.json()["access_token"], options={"verify_signature": False})
    assert (
        access["client_id"] == "x"
        and access["sid"] == login["session_id"]
        and access["scope"] == "openid profile"
    )
    # Only with the client's own authentication: without it, or by another client, it is no token of theirs.
    assert (await refresh(rotated.json()["refresh_token"])).status_code == 401
    assert oauth_error(await refresh(rotated.json()["refresh_token"], basic("y", y_secret))) == (
        400,
        "invalid_grant",
    )
    assert oauth_error(await refresh(yt["refresh_token"], basic("y", "wrong"))) == (401, "invalid_client")
    # The other client's and the login's own refresh tokens rotate on their own; a crowd of retries of one
    # (a client's tabs after a lost answer) all get the same pair.
    crowd = await asyncio.gather(*[refresh(yt["refresh_token"], basic("y", y_secret)) for _ in range(100)])
    assert {a.status_code for a in crowd} == {200} and len({a.text for a in crowd}) == 1
    assert (await refresh(login["refresh_token"])).status_code == 200
    # userinfo answers by the token's scope; one without profile gets sub (and peak's own claims) only.
    info = (await app.http.get("/sso/userinfo", headers=bearer(rotated.json()))).json()
    assert info["sub"] == access["sub"] and info["preferred_username"] == info["name"] == "dave"
    code, verifier, _ = await code_for(app, "x", X, scope="openid")
    form = exchange(code, verifier)
    narrow = (await app.http.post(TOKEN, data=form, headers=basic("x", x_secret))).json()
    info = (await app.http.get("/sso/userinfo", headers=bearer(narrow))).json()
    assert info["sub"] == access["sub"] and "preferred_username" not in info and "name" not in info
    # An old refresh token of the client's presented again (theft): the session ends, as for the login's.
    stolen = await refresh(xt["refresh_token"], basic("x", x_secret))
    assert oauth_error(stolen) == (400, "invalid_grant")
    assert (await app.http.get("/sso/userinfo", headers=bearer(login))).status_code == 401


async def test_hostile_token_requests_never_fail_the_server(app: App) -> None:
    secret = await add_client(app, "x", X)
    await sign_in(app, "erin")
    code, verifier, _ = await code_for(app, "x", X)
    user = code.split(".")[0]
    bad_forms: list[dict[str, str]] = [
        {"grant_type": "authorization_code"},
        {"grant_type": "authorization_code", "code": "", "redirect_uri": X},
        {"grant_type": "authorization_code", "code": "a.b.c", "redirect_uri": X, "code_verifier": verifier},
        {
            "grant_type": "authorization_code",
            "code": f"{user}.x.y",
            "redirect_uri": X,
            "code_verifier": verifier,
        },
        {"grant_type": "authorization_code", "code": code, "redirect_uri": X, "code_verifier": "é" * 50},
        {"grant_type": "authorization_code", "code": code, "redirect_uri": X, "code_verifier": "a" * 42},
        {"grant_type": "authorization_code", "code": "x" * 600, "redirect_uri": X},
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "\x00" + X,
            "code_verifier": verifier,
        },
        {"grant_type": "client_credentials"},
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": "{u0}.s.x"},
    ]
    for form in bad_forms:
        for headers in (
            {},
            basic("x", secret),
            {"Authorization": "Basic %%%"},
            {"Authorization": "Basic eA=="},
        ):
            answer = await app.http.post(TOKEN, data=form, headers=headers)
            assert 400 <= answer.status_code < 500, (form, headers, answer.status_code, answer.text)
    for raw in (b"grant_type=authorization_code&code=%ff%fe", b"\xff\xfe", b"grant_type=" + b"a" * 100_000):
        answer = await app.http.post(TOKEN, content=raw, headers={
            **basic("x", secret), "content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert 400 <= answer.status_code < 500, (raw[:40], answer.status_code, answer.text[:200])
    # Still redeemable after all that (none of it touched the code), once.
    good = exchange(code, verifier)
    assert (await app.http.post(TOKEN, data=good, headers=basic("x", secret))).status_code == 200
    # Without client credentials, the first-party refresh's own answers, as before issue 19.
    assert error_code(await app.http.post(TOKEN, data={"grant_type": "password"})) == "unsupported_grant_type"


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the proxy stands in front of one redis-server")
async def test_a_lost_answer_is_resent_safely_and_an_outage_is_a_503(
    servers: Servers, make_settings: Callable[..., Settings]
) -> None:
    redis_port = int(servers.redis.url.rsplit(":", 1)[1].split("/")[0])
    async with FaultProxy("127.0.0.1", redis_port) as proxy:
        async with sso_app(make_settings()) as app:
            await add_client(app, "x", X)
            login = await sign_in(app, "frank")
            code, verifier, _ = await code_for(app, "x", X)
            parsed = app.ctx.get(Sso).codes.open(code, now_ms=int(time.time() * 1000))
            assert parsed is not None
            # The redemption runs, its answer is lost with the connection: the Redis client sends the same
            # call again, which must not count as a second redemption (that would revoke what it answers).
            through = create_redis(proxy.url())
            try:
                await through.ping()
                proxy.drop_replies = 1
                redeemed = await code_scripts.redeem_code(
                    through, user_id=parsed.user_id, session_id=parsed.session_id, code_digest=parsed.digest,
                    client_id="x", redirect_uri=X, challenge=s256(verifier), sealed=parsed.code,
                    code_ttl_ms=60_000, refresh_digest="r" * 64,
                    token_id="jti-1", now_ms=int(time.time() * 1000), idle_ms=900_000, used_keep_ms=660_000,
                    revoked_ttl_ms=960_000, oidc_keep_ms=86_400_000,
                )  # fmt: skip
            finally:
                await through.aclose()
            assert proxy.counts["resets_after"] == 1
            assert redeemed.username == "frank" and redeemed.scope == "openid profile"
            assert not await app.ctx.redis.exists(keys.revoked_token(parsed.user_id, "jti-1"))
            assert (await app.http.get("/sso/userinfo", headers=bearer(login))).status_code == 200
        # The whole app behind the proxy: Redis gone is a 503, never a 500; back, the next code redeems.
        async with sso_app(make_settings(PEAK_REDIS_URL=proxy.url())) as app:
            secret = await add_client(app, "x", X)
            await sign_in(app, "grace")
            code, verifier, _ = await code_for(app, "x", X)
            form = exchange(code, verifier)
            proxy.reset_rate = 1.0
            down = await app.http.post(TOKEN, data=form, headers=basic("x", secret))
            assert down.status_code == 503 and error_code(down) == "unavailable", down.text
            proxy.heal()
            code, verifier, _ = await code_for(app, "x", X)
            back = await app.http.post(TOKEN, data={**form, "code": code, "code_verifier": verifier},
                                       headers=basic("x", secret))  # fmt: skip
            assert back.status_code == 200, back.text

"""The OpenID Connect code flow with a client library no one here wrote (Authlib): discovery, PKCE, the code
exchange with a confidential (client_secret_basic) and a public client, the ID token validated by Authlib
against the JWKS, userinfo and refresh; and single sign-on across two clients of different origins."""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import urlsplit

import authlib.deprecate  # noqa: F401  # it puts an "always" filter of its own first: ours go in front of it
import httpx
import pytest

from tests.sso.conftest import PASSWORD, SITE, App, register
from tests.sso.oidc_support import add_client, form_of

with warnings.catch_warnings():
    # Authlib 1.7+ announces the move of its JOSE and httpx parts elsewhere; what is used here stays.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.common.errors import AuthlibBaseError as OAuthError
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken

pytestmark = pytest.mark.filterwarnings("ignore::authlib.deprecate.AuthlibDeprecationWarning")

SHOP = "http://127.0.0.1:9001/callback"
DESK = "http://localhost:9002/callback"


def _library_client(app: App, client_id: str, secret: str | None, redirect_uri: str) -> AsyncOAuth2Client:
    """Authlib's client, talking to the app in-process (the browser's hops are made by ``app.http``)."""
    return AsyncOAuth2Client(
        client_id=client_id, client_secret=secret, redirect_uri=redirect_uri, scope="openid profile",
        code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic" if secret else "none",
        transport=app.http._transport, base_url=str(app.http.base_url),
    )  # fmt: skip


async def _discovery(app: App) -> dict[str, Any]:
    answer = await app.http.get("/.well-known/openid-configuration")
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()
    return found


def _path(url: str) -> str:
    """The URL on the browser's own host (the documents name the public URL; the browser is ``app.http``)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _validated(id_token: str, jwks: dict[str, Any], *, issuer: str, client_id: str, nonce: str,
               access_token: str) -> dict[str, Any]:  # fmt: skip
    """The ID token's claims, verified and validated by Authlib (signature, iss, aud, exp, iat, nonce,
    at_hash)."""
    claims = jwt.decode(
        id_token, JsonWebKey.import_key_set(jwks), claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": issuer}},
        claims_params={"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )  # fmt: skip
    claims.validate()
    return dict(claims)


async def _code_flow(app: App, oauth: AsyncOAuth2Client, meta: dict[str, Any], *, browser: httpx.AsyncClient
                     ) -> tuple[dict[str, Any], dict[str, Any], httpx.Response]:  # fmt: skip
    """Authorization URL (Authlib's, with its PKCE pair, state and nonce) -> the browser's hop -> Authlib's
    token request; (token, ID token claims, the hop's answer)."""
    verifier, nonce = generate_token(48), generate_token(20)
    url, state = oauth.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    hop = await browser.get(_path(url))
    if hop.status_code == 200:  # the sign-in page: the person types the password
        form = form_of(hop)
        hop = await browser.post("/sso/signin", headers=SITE, data={
            "request": form["request"], "csrf": form["csrf"], "username": "alice", "password": PASSWORD})  # fmt: skip
    assert hop.status_code in (302, 303), (hop.status_code, hop.text[:300])
    token = await oauth.fetch_token(meta["token_endpoint"], authorization_response=hop.headers["location"],
                                    code_verifier=verifier, state=state)  # fmt: skip
    jwks = (await app.http.get("/.well-known/jwks.json")).json()
    claims = _validated(token["id_token"], jwks, issuer=meta["issuer"], client_id=str(oauth.client_id),
                        nonce=nonce, access_token=token["access_token"])  # fmt: skip
    return dict(token), claims, hop


async def test_code_flow_with_authlib_confidential_and_public(app: App) -> None:
    secret = await add_client(app, "shop", SHOP)
    await add_client(app, "app", SHOP, public=True)
    await register(app.http, "alice")
    meta = await _discovery(app)
    assert "S256" in meta["code_challenge_methods_supported"]

    async with (
        _library_client(app, "shop", secret, SHOP) as shop,
        _library_client(app, "app", None, SHOP) as public,
    ):
        token, claims, hop = await _code_flow(app, shop, meta, browser=app.http)
        assert hop.status_code == 303  # through the sign-in page: nobody was signed in
        assert claims["aud"] == "shop" and claims["preferred_username"] == "alice" and claims["sid"]
        assert token["token_type"] == "Bearer" and token["expires_in"] > 0
        info = await shop.get(meta["userinfo_endpoint"])  # Authlib sends its bearer token
        assert info.status_code == 200 and info.json()["sub"] == claims["sub"], info.text
        refreshed = await shop.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert (await shop.get(meta["userinfo_endpoint"])).json()["preferred_username"] == "alice"

        # The public client: no secret, PKCE; the same session (the cookie): no sign-in page this time.
        token, public_claims, hop = await _code_flow(app, public, meta, browser=app.http)
        assert (
            hop.status_code == 302 and public_claims["sid"] == claims["sid"] and public_claims["aud"] == "app"
        )
        refreshed = await public.refresh_token(meta["token_endpoint"])
        assert refreshed["access_token"] != token["access_token"]
        assert (await public.get(meta["userinfo_endpoint"])).status_code == 200

        # RFC 7009: the public client revokes its grant; the other client's, in the same session, stays.
        revoked = await public.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"])
        assert revoked.status_code == 200
        with pytest.raises(OAuthError) as refused:
            await public.refresh_token(meta["token_endpoint"], refresh_token=refreshed["refresh_token"])
        assert refused.value.error == "invalid_grant"
        assert (await public.get(meta["userinfo_endpoint"])).status_code == 401
        assert (await shop.refresh_token(meta["token_endpoint"]))["access_token"]


async def test_single_sign_on_across_two_origins(app: App) -> None:
    shop_secret = await add_client(app, "shop", SHOP)
    desk_secret = await add_client(app, "desk", DESK)
    await register(app.http, "alice")
    meta = await _discovery(app)
    async with (
        _library_client(app, "shop", shop_secret, SHOP) as shop,
        _library_client(app, "desk", desk_secret, DESK) as desk,
    ):
        _, shop_claims, first = await _code_flow(app, shop, meta, browser=app.http)
        assert first.status_code == 303 and first.headers["location"].startswith(SHOP + "?")
        # The second origin: the browser's peak_sid cookie answers at once, a redirect and no page.
        _, desk_claims, second = await _code_flow(app, desk, meta, browser=app.http)
        assert second.status_code == 302 and second.headers["location"].startswith(DESK + "?")
        assert desk_claims["sid"] == shop_claims["sid"] and desk_claims["sub"] == shop_claims["sub"]
        assert desk_claims["auth_time"] == shop_claims["auth_time"]
    # One session, in GET /sso/sessions, with both clients recorded on it.
    sessions = (await app.http.get("/sso/sessions")).json()["sessions"]
    assert [s["id"] for s in sessions] == [shop_claims["sid"]]

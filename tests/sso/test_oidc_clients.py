"""OpenID Connect clients (issue 19, area A): `peak sso add-client` with redirect URIs, `peak sso clients`,
the clients in memory (``get``, ``verify``), the URI rules, and the discovery document."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import pytest

from kit.commands import CommandError
from kit.settings import Settings
from sso.cli import add_commands
from sso.clients import OidcClient
from sso.oidc.uris import uri_problem
from sso.service import Sso
from tests.conftest import Servers
from tests.sso.conftest import App, cli, sso_app
from tests.sso.oidc_support import SHOP, authorize, not_redirected, params


async def _registered(app: App, name: str) -> OidcClient:
    """The client as the running app knows it, once the "c" message reached it."""
    deadline = time.monotonic() + 3
    while (found := app.ctx.get(Sso).clients.get(name)) is None:
        assert time.monotonic() < deadline, f"{name} never reached the app"
        await asyncio.sleep(0.02)
    return found


async def test_add_client_registers_oidc_clients_and_lists_them_without_secrets(
    servers: Servers, app: App
) -> None:
    output = cli(servers, "add-client", "shop", "--redirect-uri", SHOP, "--redirect-uri", "http://127.0.0.2:9000/cb",
                 "--post-logout-redirect-uri", "https://shop.example/bye",
                 "--backchannel-logout-uri", "https://shop.example/bc", "--allow-no-pkce")  # fmt: skip
    secret = output.strip().splitlines()[-1]
    assert len(secret) >= 43
    shop = await _registered(app, "shop")
    assert shop == OidcClient("shop", False, (SHOP, "http://127.0.0.2:9000/cb"), ("https://shop.example/bye",),
                              "https://shop.example/bc", True)  # fmt: skip
    clients = app.ctx.get(Sso).clients
    assert clients.verify("shop", secret) and not clients.verify("shop", secret + "x")
    assert not clients.verify("nobody", secret)
    stored = await app.ctx.db.fetchval("SELECT secret_sha256 FROM sso_clients WHERE name = 'shop'")
    assert secret not in stored
    public = cli(servers, "add-client", "spa", "--public", "--redirect-uri", "https://spa.example/cb")
    assert "no secret" in public
    spa = await _registered(app, "spa")
    assert spa.public and not spa.allow_no_pkce and not clients.verify("spa", "")
    await clients.add("reviews")  # an introspection client, as before: no redirect URI, not an OIDC client
    await clients.reload()
    assert clients.get("reviews") is None
    not_redirected(await authorize(app.http, params("reviews")))
    # A client registered while its "c" message was lost is found by the reload an unknown id asks for
    # (at most once a second).
    await clients.add("late", redirect_uris=(SHOP,), public=True)
    assert clients.get("late") is None
    await asyncio.sleep(1.05)
    assert (await authorize(app.http, params("late"))).status_code == 200
    listing = cli(servers, "clients")
    assert "shop  oidc confidential  allow-no-pkce" in listing and "spa  oidc public" in listing
    assert "reviews  introspection" in listing and f"redirect: {SHOP}" in listing
    assert (
        "backchannel: https://shop.example/bc" in listing
        and "post-logout: https://shop.example/bye" in listing
    )
    assert secret not in listing and stored not in listing
    # Bad URIs and contradictory flags are refused before anything is stored (the same parser, in process).
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), [])
    for args in (["--redirect-uri", "javascript:alert(1)"], ["--redirect-uri", "https://a.example/cb#x"],
                 ["--redirect-uri", "https://u@a.example/cb"], ["--public", "--allow-no-pkce", "--redirect-uri", SHOP],
                 ["--public"], ["--redirect-uri", SHOP, "--backchannel-logout-uri", "ftp://a.example/"],
                 ["--redirect-uri", SHOP, "--post-logout-redirect-uri", "data:x"]):  # fmt: skip
        parsed = parser.parse_args(["sso", "add-client", "bad", *args])
        with pytest.raises(CommandError):
            parsed.func(parsed)
    with pytest.raises(CommandError):
        parsed = parser.parse_args(["sso", "add-client", "bad name", "--redirect-uri", SHOP])
        parsed.func(parsed)
    assert await app.ctx.db.fetchval("SELECT count(*) FROM sso_clients WHERE name LIKE 'bad%'") == 0


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        (SHOP, True), ("http://127.0.0.1:9000/cb?x=1", True), ("http://[::1]:8080/cb", True),
        ("javascript:alert(1)", False), ("data:text/html,x", False), ("https://a.example/cb#f", False),
        ("https://user@a.example/cb", False), ("/relative/cb", False), ("https:///cb", False),
        ("https://a.example/c b", False), ("https://a.example/\u00e9", False), ("https://a.example:99999/", False),
        ("https://a.example/" + "a" * 2000, False), ("https://a.example\\@evil.example/", False),
    ],
)  # fmt: skip
def test_uri_rules(uri: str, ok: bool) -> None:
    assert (uri_problem(uri) is None) is ok


async def test_discovery_lists_what_openid_connect_discovery_requires(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(PEAK_PUBLIC_URL="https://sso.example")) as app:
        response = await app.http.get("/.well-known/openid-configuration")
        assert response.status_code == 200
        doc = response.json()
        base = "https://sso.example"
        assert doc["issuer"] == base
        assert {k: doc[k] for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                                    "end_session_endpoint", "introspection_endpoint", "revocation_endpoint")} == {
            "authorization_endpoint": f"{base}/sso/authorize", "token_endpoint": f"{base}/sso/token",
            "userinfo_endpoint": f"{base}/sso/userinfo", "jwks_uri": f"{base}/.well-known/jwks.json",
            "end_session_endpoint": f"{base}/sso/end_session", "introspection_endpoint": f"{base}/sso/introspect",
            "revocation_endpoint": f"{base}/sso/revoke",
        }  # fmt: skip
        assert doc["response_types_supported"] == ["code"]
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token"}
        assert doc["subject_types_supported"] == ["public"]
        # Every algorithm a client may register, RS256 (the default, which Discovery 1.0 requires) first.
        assert doc["id_token_signing_alg_values_supported"] == ["RS256", "ES256", "EdDSA"]
        assert "openid" in doc["scopes_supported"]
        assert {"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid"} <= set(
            doc["claims_supported"]
        )
        assert {"client_secret_basic", "client_secret_post", "none"} <= set(
            doc["token_endpoint_auth_methods_supported"]
        )
        assert (
            doc["backchannel_logout_supported"] is True
            and doc["backchannel_logout_session_supported"] is True
        )

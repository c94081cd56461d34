"""Helpers of the OpenID Connect tests: registered clients, PKCE pairs, authorization URLs, redirects read."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from sso.service import Sso
from tests.sso.conftest import App

SHOP = "https://shop.example/callback"
PAY = "http://127.0.0.2:9000/cb?tenant=1"


async def add_client(
    app: App, name: str, *uris: str, public: bool = False, allow_no_pkce: bool = False
) -> str | None:
    """Register a client in the app's own store and memory; its secret (None for a public one)."""
    clients = app.ctx.get(Sso).clients
    secret = await clients.add(
        name, redirect_uris=uris or (SHOP,), public=public, allow_no_pkce=allow_no_pkce
    )
    await clients.reload()
    return secret


def pkce() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def params(
    client_id: str | None = "shop", redirect_uri: str | None = SHOP, **extra: str | None
) -> dict[str, str]:
    base: dict[str, str | None] = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "openid profile",
        "state": "st-" + secrets.token_hex(4), "nonce": "n-" + secrets.token_hex(4), "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
    }  # fmt: skip
    return {k: v for k, v in {**base, **extra}.items() if v is not None}


async def authorize(http: httpx.AsyncClient, query: dict[str, str] | str, **kwargs: Any) -> httpx.Response:
    encoded = query if isinstance(query, str) else urlencode(query)
    return await http.get(f"/sso/authorize?{encoded}", **kwargs)


def redirected(response: httpx.Response, to: str) -> dict[str, str]:
    """The query parameters peak sent back to ``to`` (the registered URI, its own query kept)."""
    assert response.status_code in (302, 303), (response.status_code, response.text[:300])
    location = response.headers["location"]
    assert location.startswith(to.split("?")[0] + "?"), location
    found = {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}
    return found


def not_redirected(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-frame-options"] == "DENY"


def form_of(page: httpx.Response) -> dict[str, str]:
    """The sign-in page's hidden fields (request, csrf) and the pre-filled username."""
    assert page.status_code in (200, 401, 422, 429), (page.status_code, page.text[:300])
    fields = dict(
        re.findall(r'<input type="(?:hidden|text)" (?:id="\w+" )?name="(\w+)" value="([^"]*)"', page.text)
    )
    return {k: html.unescape(v) for k, v in fields.items()}

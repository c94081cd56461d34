"""SSO fixtures: an app with only the SSO component (the other subsystems play no part here), its context,
and helpers to register users, log in and run `peak sso` commands."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

import sso.component
from devstack.processes import free_port
from kit.context import Context
from kit.settings import Settings
from peak.app import create_app
from sso.keystore import KeyStore, SigningKey
from sso.settings import SsoSettings
from tests.conftest import Servers
from tests.support import kill_group, lifespan_client, run_peak, start_peak, wait_http

PASSWORD = "correct horse battery"
# What a browser on the site sends with a POST or DELETE, under the test settings (PEAK_PUBLIC_URL unset: the
# public URL is http://PEAK_HOST:PEAK_PORT). A state change the session cookie authenticates needs it.
SITE = {"Origin": "http://127.0.0.1:8000"}


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """The suite registers many users from the one test address: no hourly sign-up limit unless a test sets
    PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR itself (tests/sso/test_accounts.py does)."""

    def make(**env: str) -> Settings:
        return make_settings(**{"PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR": "0", **env})

    return make


@pytest.fixture
def served(servers: Servers, tmp_path: Path) -> Iterator[str]:
    """A real `peak serve` process (one worker) on the test servers: its URL."""
    port = free_port()
    env = {
        **servers.env(),
        "PEAK_PORT": str(port),
        "PEAK_WORKERS": "1",
        "PEAK_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    proc = start_peak("serve", env=env, log=tmp_path / "api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        kill_group(proc)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@dataclass
class App:
    http: httpx.AsyncClient
    ctx: Context


@contextlib.asynccontextmanager
async def sso_app(settings: Settings) -> AsyncIterator[App]:
    state: dict[str, Any] = {}
    async with lifespan_client(create_app(settings, [sso.component.component()]), state=state) as http:
        yield App(http, state["ctx"])


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    async with sso_app(settings) as a:
        yield a


@pytest.fixture
def client(app: App) -> httpx.AsyncClient:
    return app.http


async def register(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/sso/users", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/sso/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def signed_in(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    """A new user's tokens, with the cookie jar emptied so that requests carry only what a test gives."""
    await register(client, username)
    tokens = await login(client, username)
    client.cookies.clear()
    return tokens


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def cli(servers: Servers, *args: str, **env: str) -> str:
    """Run `peak sso ...` as a real process; its output, or the test fails with its error."""
    result = run_peak("sso", *args, env={**servers.env(), **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def issuer(app: App) -> str:
    """The issuer the app's tokens name (PEAK_SSO_ISSUER, or else its public URL)."""
    return app.ctx.settings.of(SsoSettings).issuer_for(app.ctx.settings)


async def signing_key(app: App, algorithm: str | None = None) -> SigningKey:
    """The current key of ``algorithm``, by default the access tokens' (PEAK_SSO_ALGORITHM)."""
    settings = app.ctx.settings.of(SsoSettings)
    store = KeyStore(app.ctx.db, algorithm=settings.algorithm, secret_key=app.ctx.settings.secret_key,
                     access_token_ttl_s=settings.access_token_ttl_s)  # fmt: skip
    return await store.signing_key(algorithm)


async def forge(
    app: App, tokens: dict[str, Any], *, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    """The access token of ``tokens`` re-signed with the real key after changing claims (None removes one)."""
    original = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    changed = {k: v for k, v in {**original, **claims}.items() if v is not None}
    key = await signing_key(app)
    return jwt.encode(
        changed, key.private_key, algorithm=key.algorithm,  # type: ignore[arg-type]
        headers={"kid": key.kid, "typ": "at+jwt", **(header or {})},
    )  # fmt: skip

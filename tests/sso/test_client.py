"""sso.client as another subsystem uses it: authenticate, require_admin and the Starlette backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

import sso.component
from kit.admins import AdminTokens
from kit.component import Component
from kit.responses import JSONResponse
from kit.routing import route
from kit.settings import Settings, SettingsError
from peak.app import create_app
from sso.client import BearerAuthBackend, Principal, authenticate, require_admin
from tests.conftest import Servers
from tests.sso.conftest import bearer, cli, error_code, login, register, sso_app
from tests.support import lifespan_client

ADMIN_TOKEN = "test-admin-token-0123456789"


def _who(principal: Principal) -> Response:
    return JSONResponse({"user_id": principal.user_id, "roles": sorted(principal.roles)})


async def whoami(request: Request) -> Response:
    return _who(await authenticate(request))


async def whoami_strict(request: Request) -> Response:
    return _who(await authenticate(request, strict=True))


async def admin_only(request: Request) -> Response:
    return _who(await require_admin(request))


@requires("authenticated")
async def protected(request: Request) -> Response:
    return _who(request.user)


@requires("admin")
async def protected_admin(request: Request) -> Response:
    return _who(request.user)


PROBE = Component(
    name="probe",
    routes=[
        route("/probe/whoami", whoami, summary="who"),
        route("/probe/strict", whoami_strict, summary="who, strictly"),
        route("/probe/admin", admin_only, summary="admins only"),
        Mount(
            "/probe/backend",
            routes=[
                route("/me", protected, summary="backend"),
                route("/admin", protected_admin, summary="backend, admins"),
            ],
            middleware=[
                Middleware(
                    AuthenticationMiddleware, backend=BearerAuthBackend(), on_error=BearerAuthBackend.on_error
                )
            ],
        ),
    ],
)


@pytest.fixture
async def probe(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(PEAK_ADMIN_TOKEN=ADMIN_TOKEN)
    async with lifespan_client(create_app(settings, [sso.component.component(), PROBE])) as c:
        yield c


async def test_authenticate(probe: httpx.AsyncClient) -> None:
    user = await register(probe, "alice")
    tokens = await login(probe, "alice")
    probe.cookies.clear()
    for path in ("/probe/whoami", "/probe/strict"):
        ok = await probe.get(path, headers=bearer(tokens))
        assert ok.json() == {"user_id": user["id"], "roles": ["shopper"]}
        missing = await probe.get(path)
        assert (missing.status_code, error_code(missing)) == (401, "unauthenticated")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        for header in ("Bearer nonsense", "Basic abc", f"Bearer {ADMIN_TOKEN}"):
            refused = await probe.get(path, headers={"Authorization": header})
            assert (refused.status_code, error_code(refused)) == (401, "unauthenticated"), header
    await probe.post("/sso/logout", headers=bearer(tokens))
    assert (await probe.get("/probe/strict", headers=bearer(tokens))).status_code == 401


async def test_require_admin(servers: Servers, probe: httpx.AsyncClient) -> None:
    await register(probe, "alice")
    await register(probe, "root")
    cli(servers, "grant", "root", "admin")
    shopper, admin = await login(probe, "alice"), await login(probe, "root")
    probe.cookies.clear()
    assert (await probe.get("/probe/admin")).status_code == 401
    denied = await probe.get("/probe/admin", headers=bearer(shopper))
    assert (denied.status_code, error_code(denied)) == (403, "forbidden")
    assert (await probe.get("/probe/admin", headers=bearer(admin))).json()["roles"] == ["admin", "shopper"]
    by_token = await probe.get("/probe/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert by_token.json() == {"user_id": "admin-token", "roles": ["admin"]}
    near_miss = await probe.get("/probe/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"})
    assert near_miss.status_code == 401


async def test_without_an_admin_token_setting_nothing_is_an_admin_token(settings: Settings) -> None:
    async with lifespan_client(create_app(settings, [sso.component.component(), PROBE])) as c:
        for token in ("", "None", "null"):
            assert (
                await c.get("/probe/admin", headers={"Authorization": f"Bearer {token}"})
            ).status_code == 401


async def test_starlette_backend(probe: httpx.AsyncClient) -> None:
    user = await register(probe, "alice")
    tokens = await login(probe, "alice")
    probe.cookies.clear()
    assert (await probe.get("/probe/backend/me", headers=bearer(tokens))).json()["user_id"] == user["id"]
    assert (await probe.get("/probe/backend/me")).status_code == 403  # anonymous: requires() refuses
    bad = await probe.get("/probe/backend/me", headers={"Authorization": "Bearer nonsense"})
    assert (bad.status_code, error_code(bad)) == (401, "unauthenticated")
    assert (await probe.get("/probe/backend/admin", headers=bearer(tokens))).status_code == 403
    admin = await probe.get("/probe/backend/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert admin.json()["user_id"] == "admin-token"


NAMED = "ops-alice=alice-token-0123456789,ci=ci-token-0123456789"


async def test_admin_tokens_are_named_in_the_principal(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_ADMIN_TOKENS=NAMED, PEAK_ADMIN_TOKEN=ADMIN_TOKEN)
    async with lifespan_client(create_app(settings, [sso.component.component(), PROBE])) as c:
        for token, name in (("alice-token-0123456789", "ops-alice"), ("ci-token-0123456789", "ci"),
                            (ADMIN_TOKEN, "admin-token")):  # fmt: skip
            for path in ("/probe/admin", "/probe/backend/admin"):
                answer = await c.get(path, headers={"Authorization": f"Bearer {token}"})
                assert answer.json() == {"user_id": name, "roles": ["admin"]}, (path, name)
        for wrong in (
            "alice-token-012345678",
            "ops-alice",
            "alice-token-0123456789,ci",
            "ci=ci-token-0123456789",
        ):
            refused = await c.get("/probe/admin", headers={"Authorization": f"Bearer {wrong}"})
            assert refused.status_code == 401, wrong


async def test_admin_tokens_are_read_once_per_process(make_settings: Callable[..., Settings]) -> None:
    async with sso_app(make_settings(PEAK_ADMIN_TOKENS=NAMED)) as app:
        tokens = app.ctx.get(AdminTokens)
        assert tokens.names == {"ops-alice", "ci"}
        await app.http.get("/sso/userinfo", headers={"Authorization": "Bearer ci-token-0123456789"})
        assert app.ctx.get(AdminTokens) is tokens


async def test_malformed_admin_tokens_stop_the_start(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises((SettingsError, RuntimeError), match="PEAK_ADMIN_TOKENS"):
        app = create_app(make_settings(PEAK_ADMIN_TOKENS="no-equals-sign"), [sso.component.component()])
        async with lifespan_client(app):
            pass

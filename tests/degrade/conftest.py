from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

import degrade.component
from degrade.client import fallback, shed_name
from kit.component import Component
from kit.errors import ApiError
from kit.responses import JSONResponse
from kit.routing import route
from kit.settings import Settings
from peak.app import create_app
from tests.support import lifespan_client

ADMIN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def _shop(request: Request) -> Response:
    delay = float(request.query_params.get("delay", "0"))
    if delay:
        await asyncio.sleep(delay)
    if request.query_params.get("fail"):
        return JSONResponse({"error": {"code": "boom", "message": "failed"}}, status_code=500)
    status = int(request.query_params.get("status", "200"))
    if request.query_params.get("raise"):
        # Raised, not rendered: it passes the degrade middleware as an exception.
        raise ApiError("chosen by the test", status_code=status)
    if request.query_params.get("gone"):
        raise ClientDisconnect()
    return JSONResponse({"ok": status < 400}, status_code=status)


async def _shop_pay(request: Request) -> Response:
    """A core handler that reads the whole body (the kit bounds it in size and in time)."""
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


@fallback
async def _extras_get(request: Request) -> Response:
    if shed_name(request):
        return JSONResponse({"stale": True})
    return JSONResponse({"stale": False})


async def _extras_post(request: Request) -> Response:
    return JSONResponse({"posted": True}, status_code=201)


def shop_component() -> Component:
    """A core subsystem with a handler whose latency and status the test chooses."""
    return Component(
        name="shop",
        routes=[
            route("/shop/buy", _shop, summary="buy", methods=["GET"]),
            route("/shop/pay", _shop_pay, summary="pay", methods=["POST"]),
        ],
    )


def extras_component(name: str = "extras", tier: str = "sheddable") -> Component:
    return Component(
        name=name,
        tier=tier,
        routes=[
            route(f"/{name}/things", _extras_get, summary="things, with a fallback"),
            route(f"/{name}/things", _extras_post, summary="add a thing", methods=["POST"]),
        ],
    )


def parts(*extra: Component) -> list[Component]:
    return [shop_component(), extras_component(), *extra, degrade.component.component()]


@pytest.fixture
def degrade_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        return make_settings(**{"PEAK_ADMIN_TOKEN": ADMIN, "PEAK_DEGRADE_RESYNC_S": "0.2", **env})

    return make


@pytest.fixture
async def app_client(degrade_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(degrade_settings(), parts())) as c:
        yield c


async def put(client: httpx.AsyncClient, name: str, **body: Any) -> httpx.Response:
    return await client.put(f"/degrade/switches/{name}", json=body, headers=AUTH)

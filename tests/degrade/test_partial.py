"""Partial shedding: about the given share of a subsystem's users shed, each user always the same way; counted."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from degrade.board import Board
from degrade.controller import Controller
from degrade.service import Degrade
from kit.component import Component
from kit.context import context_of, open_context
from kit.responses import JSONResponse
from kit.routing import route
from kit.settings import Settings
from peak.app import create_app
from tests.degrade.conftest import AUTH, parts, put
from tests.support import lifespan_client


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer(sub: str) -> dict[str, str]:
    """An unsigned JWT naming ``sub``: the shed decision reads the claim without verifying it."""
    header, claims = _b64(orjson.dumps({"alg": "ES256"})), _b64(orjson.dumps({"sub": sub}))
    token = f"{header}.{claims}.c2ln"
    return {"Authorization": f"Bearer {token}"}


async def _counts(request: Request) -> Response:
    return JSONResponse(context_of(request).get(Board).shed_answers)


def _probe() -> Component:
    # Ops tooling (tier None): never on the board, so never shed itself.
    return Component(name="probe", tier=None, routes=[route("/probe/shed", _counts, summary="shed counts")])


@pytest.fixture
async def partial_client(degrade_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(degrade_settings(), parts(_probe()))) as c:
        yield c


async def _stale(c: httpx.AsyncClient, headers: dict[str, str]) -> bool:
    answer = await c.get("/extras/things", headers=headers)
    assert answer.status_code == 200
    stale = bool(answer.json()["stale"])
    assert ("x-degraded" in answer.headers) == stale
    return stale


async def test_partial_sheds_its_share_of_users_and_each_user_always_alike(
    partial_client: httpx.AsyncClient,
) -> None:
    c = partial_client
    changed = await put(c, "extras", mode="partial", percent=30, reason="30 % off")
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in ("mode", "percent", "effective")} == {
        "mode": "partial", "percent": 30, "effective": "partial"
    }  # fmt: skip
    users = [bearer(f"shopper-{i}") for i in range(1000)]
    first = await asyncio.gather(*(_stale(c, h) for h in users))
    second = await asyncio.gather(*(_stale(c, h) for h in users))
    print(f"partial 30 %: {sum(first)} of 1,000 distinct users shed")
    assert 250 <= sum(first) <= 350
    assert second == first
    counts = (await c.get("/probe/shed")).json()
    assert counts == {"shop": 0, "extras": 2 * sum(first)}
    # Without a token, the session cookie decides; without either, the address (one for this client).
    cookies = [{"Cookie": f"theme=dark; peak_sid=sid-{i}"} for i in range(300)]
    by_cookie = await asyncio.gather(*(_stale(c, h) for h in cookies))
    assert 60 <= sum(by_cookie) <= 120 and await asyncio.gather(*(_stale(c, h) for h in cookies)) == by_cookie
    assert len(set(await asyncio.gather(*(_stale(c, {}) for _ in range(20))))) == 1
    # A token beats the cookie; garbage in either falls through to the next key, never an error.
    shed_user = next(h for h, s in zip(users, first, strict=True) if s)
    assert await _stale(c, {**shed_user, "Cookie": "peak_sid=whatever"})
    for junk in ("Bearer a.!!!.c", "Bearer " + "x" * 9000, "Basic abc", "Bearer a.bnVsbA.c"):
        await _stale(c, {"Authorization": junk})
    # A route without a fallback answers the shed users 503 and serves the others.
    kept_user = next(h for h, s in zip(users, first, strict=True) if not s)
    refused = await c.post("/extras/things", json={}, headers=shed_user)
    assert refused.status_code == 503 and refused.headers["x-degraded"] == "extras"
    assert (await c.post("/extras/things", json={}, headers=kept_user)).status_code == 201
    # Raising the share keeps every user shed so far shed.
    assert (await put(c, "extras", mode="partial", percent=60, reason="more")).status_code == 200
    more = await asyncio.gather(*(_stale(c, h) for h in users))
    assert all(m for m, f in zip(more, first, strict=True) if f) and 550 <= sum(more) <= 650


async def test_partial_is_validated_and_needs_force_on_a_core_subsystem(
    partial_client: httpx.AsyncClient,
) -> None:
    c = partial_client
    for body in ({"mode": "partial"}, {"mode": "shed", "percent": 30}, {"mode": "partial", "percent": 0},
                 {"mode": "partial", "percent": 100}, {"mode": "partial", "percent": -1},
                 {"mode": "partial", "percent": "x"}, {"mode": "partial", "percent": True},
                 {"mode": "partial", "percent": 30.5}, {"percent": 30}):  # fmt: skip
        answer = await put(c, "extras", reason="x", **body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
    refused = await put(c, "shop", mode="partial", percent=10, reason="x")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "force_required"
    forced = await put(c, "shop", mode="partial", percent=10, reason="x", force=True)
    assert forced.status_code == 200 and forced.json()["effective"] == "partial"
    audit = (await c.get("/degrade/audit?order=newest&limit=1", headers=AUTH)).json()["entries"]
    assert (audit[0]["name"], audit[0]["old"], audit[0]["new"]) == ("shop", "auto", "partial:10")


async def test_the_controller_leaves_a_partial_switch_alone(
    degrade_settings: Callable[..., Settings],
) -> None:
    async with open_context(degrade_settings(), parts(), "api") as ctx:
        board = ctx.get(Board)
        board.apply({"name": "extras", "field": "mode", "new": "partial:40", "at": 1, "reason": "r", "by": "ops",
                     "source": "ops"})  # fmt: skip
        controller = ctx.get(Degrade).controller
        assert isinstance(controller, Controller)
        assert controller._auto("open") == [] and board.shed["extras"] == 40
        # A plan's message is adopted at once, every change of it; each adoption moves the version on.
        version = board.version
        board.apply({"changes": [{"name": "extras", "field": "mode", "new": "shed"},
                                 {"name": "shop", "field": "mode", "new": "partial:5"}],
                     "at": 2, "reason": "plan p: r", "by": "ops", "source": "ops", "plan": "p"})  # fmt: skip
        assert board.shed == {"shop": 5, "extras": 100} and board.version == version + 1
        board.apply({"plans_changed": True, "plan": "p", "at": 3})
        board.apply({"changes": {}, "at": 4, "reason": "r", "by": "ops", "source": "ops", "plan": "p"})
        assert board.version == version + 3 and board.describe("shop")["percent"] == 5

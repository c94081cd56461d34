from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from degrade.middleware import DegradeMiddleware
from kit.context import open_context
from kit.settings import Settings
from tests.degrade.conftest import AUTH, parts, put


def _switch(listing: httpx.Response, name: str) -> dict[str, object]:
    return next(s for s in listing.json()["switches"] if s["name"] == name)


async def test_default_modes_are_auto_and_open(app_client: httpx.AsyncClient) -> None:
    listing = await app_client.get("/degrade/switches", headers=AUTH)
    assert listing.status_code == 200
    assert {s["name"] for s in listing.json()["switches"]} == {"shop", "extras"}
    extras = _switch(listing, "extras")
    assert extras["mode"] == "auto" and extras["effective"] == "open" and extras["tier"] == "sheddable"
    assert _switch(listing, "shop")["tier"] == "critical_plus"
    assert listing.json()["redis"] == "ok"


async def test_shed_serves_fallback_or_503_with_header(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/extras/things")).json() == {"stale": False}
    changed = await put(app_client, "extras", mode="shed", reason="flash sale at 20:00")
    assert changed.status_code == 200, changed.text
    assert changed.json()["effective"] == "shed" and changed.json()["changed"] is True
    got = await app_client.get("/extras/things")
    assert got.status_code == 200 and got.json() == {"stale": True}
    assert got.headers["x-degraded"] == "extras"
    posted = await app_client.post("/extras/things", json={})
    assert posted.status_code == 503
    assert posted.json()["error"]["code"] == "degraded"
    assert posted.headers["retry-after"] == "5" and posted.headers["x-degraded"] == "extras"
    assert "x-degraded" not in (await app_client.get("/shop/buy")).headers
    reopened = await put(app_client, "extras", mode="open", reason="sale over")
    assert reopened.json()["effective"] == "open"
    assert (await app_client.post("/extras/things", json={})).status_code == 201


async def test_core_tier_needs_force(app_client: httpx.AsyncClient) -> None:
    refused = await put(app_client, "shop", mode="shed", reason="test")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "force_required"
    assert (await app_client.get("/shop/buy")).status_code == 200
    forced = await put(app_client, "shop", mode="shed", reason="test", force=True)
    assert forced.status_code == 200 and forced.json()["effective"] == "shed"
    down = await app_client.get("/shop/buy")
    assert down.status_code == 503 and down.headers["x-degraded"] == "shop"
    # Making a sheddable subsystem core is judged on the new tier.
    moved = await put(app_client, "extras", tier="critical", mode="shed", reason="now core")
    assert moved.status_code == 409
    retiered = await put(app_client, "extras", tier="critical", reason="now core")
    assert retiered.json()["tier"] == "critical" and retiered.json()["default_tier"] == "sheddable"


async def test_bad_requests_are_clear(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/degrade/switches")).status_code == 401
    wrong = await app_client.get("/degrade/switches", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    unknown = await put(app_client, "nosuch", mode="shed", reason="x")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_subsystem"
    bad_mode = await put(app_client, "extras", mode="off", reason="x")
    assert bad_mode.status_code == 422 and "mode" in bad_mode.json()["error"]["message"]
    no_reason = await put(app_client, "extras", mode="shed")
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["error"]["message"]
    blank = await put(app_client, "extras", mode="shed", reason="  ")
    assert blank.status_code == 422
    nothing = await put(app_client, "extras", reason="x")
    assert nothing.status_code == 422
    bad_since = await app_client.get("/degrade/audit?since=yesterday", headers=AUTH)
    assert bad_since.status_code == 422 and "since" in bad_since.json()["error"]["message"]
    bad_limit = await app_client.get("/degrade/audit?limit=0", headers=AUTH)
    assert bad_limit.status_code == 422


async def test_audit_records_manual_changes(app_client: httpx.AsyncClient) -> None:
    await put(app_client, "extras", mode="shed", reason="first")
    await put(app_client, "extras", mode="shed", reason="same again")
    await put(app_client, "extras", mode="auto", reason="back to the controller")
    entries = (await app_client.get("/degrade/audit", headers=AUTH)).json()["entries"]
    assert [(e["old"], e["new"], e["reason"]) for e in entries] == [
        ("auto", "shed", "first"),
        ("shed", "auto", "back to the controller"),
    ]
    assert all(e["source"] == "ops" and e["by"] == "admin-token" and e["field"] == "mode" for e in entries)
    assert entries[0]["at"].endswith("Z")
    later = await app_client.get(f"/degrade/audit?since={entries[0]['id']}", headers=AUTH)
    assert [e["reason"] for e in later.json()["entries"]] == ["back to the controller"]
    by_time = await app_client.get(f"/degrade/audit?since={entries[0]['at']}", headers=AUTH)
    assert len(by_time.json()["entries"]) == 2


async def test_the_middleware_refuses_to_run_outside_the_request_middleware(
    degrade_settings: Callable[..., Settings],
) -> None:
    # It reads the status the request middleware notes: alone it would count every core answer as a 5xx.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not reached")

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        pass

    async with open_context(degrade_settings(), parts(), "api") as ctx:
        scope = {"type": "http", "path": "/shop/buy", "headers": [], "state": {"ctx": ctx}}
        with pytest.raises(RuntimeError, match=r"inside kit\.middleware\.RequestMiddleware"):
            await DegradeMiddleware(app)(scope, receive, send)

"""The audit newest first with filters and a cursor; what a hostile caller sends the plan and audit routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from degrade import keys
from degrade.store import AUDIT_SCAN_MAX
from kit.redis import create_redis
from kit.settings import Settings
from peak.app import create_app
from tests.degrade.conftest import AUTH, parts, put
from tests.support import lifespan_client

ALICE = {"Authorization": "Bearer tok-alice-0123456789"}


@pytest.fixture
async def named_client(degrade_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    settings = degrade_settings(PEAK_ADMIN_TOKENS="alice-ops=tok-alice-0123456789")
    async with lifespan_client(create_app(settings, parts())) as c:
        yield c


async def _page(c: httpx.AsyncClient, query: str) -> dict[str, Any]:
    answer = await c.get(f"/degrade/audit?order=newest&{query}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_newest_first_filtered_and_paged(
    named_client: httpx.AsyncClient, degrade_settings: Callable[..., Settings]
) -> None:
    c = named_client
    for mode in ("shed", "open", "shed"):
        assert (await put(c, "extras", mode=mode, reason=f"admin {mode}")).status_code == 200
    middle = (await _page(c, "limit=1"))["entries"][0]
    for mode in ("open", "shed"):
        assert (
            await c.put("/degrade/switches/extras", json={"mode": mode, "reason": "alice"}, headers=ALICE)
        ).status_code == 200
    body = {"changes": {"extras": "open"}, "reason": "plan"}
    assert (await c.put("/degrade/plans/calm", json=body, headers=ALICE)).status_code == 200
    every = (await _page(c, ""))["entries"]
    assert [e["reason"] for e in every] == [
        "plan",
        "alice",
        "alice",
        "admin shed",
        "admin open",
        "admin shed",
    ]
    assert (await c.get("/degrade/audit", headers=AUTH)).json()["entries"] == every[::-1]  # as before
    # Pages of two, each `next` handed back as `before`, give every entry once, in order.
    seen, before = [], ""
    for _ in range(10):
        page = await _page(c, f"limit=2{before}")
        seen.extend(page["entries"])
        if page["next"] is None:
            break
        before = f"&before={page['next']}"
    assert seen == every
    # A plan's entries count for the subsystems it touches; by; a time range (ISO or epoch ms, inclusive).
    assert [e["name"] for e in (await _page(c, "name=extras"))["entries"]] == ["calm"] + ["extras"] * 5
    assert [e["reason"] for e in (await _page(c, "name=calm"))["entries"]] == ["plan"]
    assert [e["reason"] for e in (await _page(c, "by=alice-ops"))["entries"]] == ["plan", "alice", "alice"]
    upto = (await _page(c, f"to={middle['id'].split('-')[0]}&by=admin-token"))["entries"]
    assert middle in upto and all(e["at"] <= middle["at"] for e in upto)
    since = (await _page(c, f"from={middle['at']}"))["entries"]
    assert since[-1]["id"] == middle["id"] or since[-1]["at"] >= middle["at"]
    assert (await _page(c, "name=nosuch"))["entries"] == []
    assert (await _page(c, "name=ünïcødé"))["entries"] == []
    assert (await _page(c, "before=0-0")) == {"entries": [], "next": None}
    # A filter that matches little reads a bounded number of entries and says where to go on.
    r = create_redis(degrade_settings().require("redis_url"))
    try:
        async with r.pipeline(transaction=False) as pipe:
            for i in range(AUDIT_SCAN_MAX + 500):
                pipe.xadd(keys.AUDIT, {"name": "noise", "field": "mode", "old": "open", "new": "shed", "by": "bot",
                                       "reason": str(i), "source": "ops", "at": "1"})  # fmt: skip
            await pipe.execute()
    finally:
        await r.aclose()
    first = await _page(c, "by=alice-ops&limit=10")
    assert first["entries"] == [] and first["next"] is not None
    rest = await _page(c, f"by=alice-ops&limit=10&before={first['next']}")
    assert [e["reason"] for e in rest["entries"]] == ["plan", "alice", "alice"] and rest["next"] is None


async def test_hostile_audit_queries_are_422(app_client: httpx.AsyncClient) -> None:
    for query in ("before=x", "before=1-2-3", "before=%C2%B2", "from=yesterday", "to=2026-01-01T00:00:00",
                  "from=-5", "limit=0", "limit=1001", "order=sideways", "to=" + "9" * 200,
                  "name=" + "n" * 200):  # fmt: skip
        answer = await app_client.get(f"/degrade/audit?order=newest&{query}", headers=AUTH)
        assert answer.status_code == 422, (query, answer.text)
    assert (await app_client.get("/degrade/audit?order=sideways", headers=AUTH)).status_code == 422
    assert (await app_client.get("/degrade/audit?by=x", headers=AUTH)).status_code == 422
    assert (await app_client.get("/degrade/audit?order=newest&to=1", headers=AUTH)).json()["entries"] == []
    assert (await app_client.get("/degrade/audit?order=newest", headers={})).status_code == 401


async def test_hostile_plan_inputs_are_4xx(app_client: httpx.AsyncClient) -> None:
    c = app_client

    async def plan(name: str, body: Any, status: int, code: str = "invalid_request") -> None:
        answer = await c.put(f"/degrade/plans/{name}", json=body, headers=AUTH)
        assert answer.status_code == status, (name, body, answer.text)
        assert status == 200 or answer.json()["error"]["code"] == code

    ok = {"changes": {"extras": "shed"}, "reason": "r"}
    await plan("sale", {**ok, "changes": {"nosuch": "shed"}}, 404, "unknown_subsystem")
    changes: Any
    for changes in ({}, [], "shed", None, {"extras": "off"}, {"extras": 3}, {"extras": ["shed"]},
                    {"extras": {"mode": "partial"}}, {"extras": {"mode": "partial", "percent": 0}},
                    {"extras": {"mode": "partial", "percent": 100}}, {"extras": {"mode": "partial", "percent": -1}},
                    {"extras": {"mode": "partial", "percent": "x"}}, {"extras": {"mode": "partial", "percent": True}},
                    {"extras": {"mode": "shed", "percent": 5}}, {"extras": {"mode": "shed", "extra": 1}},
                    {"ünï": "shed"}, {"x" * 65: "shed"}, {f"s{i}": "shed" for i in range(65)}):  # fmt: skip
        await plan("sale", {**ok, "changes": changes}, 422)
    for body in (
        {"changes": {"extras": "shed"}},
        {**ok, "reason": ""},
        {**ok, "description": "d" * 501},
        [ok],
        "x",
    ):
        await plan("sale", body, 422)
    for name in ("ünïcødé", "a" * 65, "sp ace", "%E2%80%AE", "..%2F..", "%00"):
        answer = await c.put(f"/degrade/plans/{name}", json=ok, headers=AUTH)
        assert answer.status_code in (404, 422), (name, answer.text)
    huge = await c.put("/degrade/plans/sale", content=b'{"changes": {"extras": "' + b"s" * 2_000_000 + b'"}}',
                       headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert huge.status_code == 413
    await plan("sale", ok, 200)  # fmt: skip
    for at in ("2001-01-01T00:00:00Z", "9999-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "tomorrow", 5,
               "2030-01-01T00:00:00"):  # fmt: skip
        answer = await c.post("/degrade/plans/sale/apply", json={"reason": "r", "at": at}, headers=AUTH)
        assert answer.status_code == 422, (at, answer.text)
    for action, status, code in (("rollback", 409, "not_applied"), ("cancel", 409, "not_scheduled")):
        answer = await c.post(f"/degrade/plans/sale/{action}", json={"reason": "r"}, headers=AUTH)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    for action in ("apply", "rollback", "cancel"):
        missing = await c.post(f"/degrade/plans/nosuch/{action}", json={"reason": "r"}, headers=AUTH)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_plan")
        assert (await c.post(f"/degrade/plans/sale/{action}", json={}, headers=AUTH)).status_code == 422
    assert (await c.delete("/degrade/plans/nosuch", headers=AUTH)).status_code == 404
    assert (await c.get("/degrade/plans", headers={})).status_code == 401
    # At most 64 plans.
    for i in range(63):
        await plan(f"p{i}", ok, 200)
    await plan("one-too-many", ok, 422)
    await plan("p0", {**ok, "description": "replacing one is fine"}, 200)

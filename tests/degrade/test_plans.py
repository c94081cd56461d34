"""Degradation plans: one script per apply and rollback (one audit entry, one publish), exact restore, retries,
schedules raced by several contexts, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio

from degrade import keys, plans
from degrade.board import Board
from degrade.scripts import PlanCall, PlanStatus, plan_apply, plan_edit
from devstack.redis import RedisServer
from kit.context import open_context
from kit.lua import EncodableT
from kit.redis import create_redis
from kit.settings import Settings
from peak.app import create_app
from tests.degrade.conftest import AUTH, extras_component, parts, put
from tests.support import lifespan_client, run_peak

Drain = Callable[[], Awaitable[list[dict[str, Any]]]]


def _parts() -> list[Any]:
    return parts(extras_component("more", "sheddable_plus"))


@pytest.fixture
async def plan_client(degrade_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(degrade_settings(), _parts())) as c:
        yield c


@contextlib.asynccontextmanager
async def listening(url: str) -> AsyncIterator[Drain]:
    """Every message on the switch channel from now on; ``drain()`` returns those that came so far."""
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    # As degrade/service.py listens: the context manager closes it (newer redis-py releases type
    # PubSub.aclose and older ones did not, so no ignore comment suits both).
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(keys.CHANNEL)
        await pubsub.get_message(timeout=1)

        async def drain() -> list[dict[str, Any]]:
            got = []
            while (m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)) is not None:
                got.append(orjson.loads(m["data"]))
            return got

        try:
            yield drain
        finally:
            await client.aclose()


async def _modes(c: httpx.AsyncClient) -> dict[str, tuple[str, int | None]]:
    listing = (await c.get("/degrade/switches", headers=AUTH)).json()["switches"]
    return {s["name"]: (s["mode"], s["percent"]) for s in listing}


async def _newest(c: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    answer = await c.get(f"/degrade/audit?order=newest{query}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


async def test_apply_then_rollback_restores_exactly_in_one_step_each(
    plan_client: httpx.AsyncClient, degrade_settings: Callable[..., Settings]
) -> None:
    c = plan_client
    assert (await put(c, "more", mode="partial", percent=20, reason="warm-up")).status_code == 200
    sale = {"changes": {"extras": "shed", "more": {"mode": "partial", "percent": 50}}, "reason": "sale plan",
            "description": "the 20:00 sale"}  # fmt: skip
    stored = await c.put("/degrade/plans/sale", json=sale, headers=AUTH)
    assert stored.status_code == 200, stored.text
    plan = stored.json()
    assert plan["changes"] == {
        "extras": {"mode": "shed", "percent": None},
        "more": {"mode": "partial", "percent": 50},
    }
    assert plan["applied"] is None and plan["scheduled_at"] is None and plan["updated_by"] == "admin-token"
    assert (await c.get("/degrade/plans", headers=AUTH)).json()["plans"] == [plan]
    async with listening(degrade_settings().require("redis_url")) as drain:
        before = len(await _newest(c))
        applied = await c.post("/degrade/plans/sale/apply", json={"reason": "sale starts"}, headers=AUTH)
        assert applied.status_code == 200, applied.text
        body = applied.json()
        assert body["status"] == "applied" and body["changed"] == ["extras", "more"]
        assert body["plan"]["applied"]["previous"] == {
            "extras": {"mode": "auto", "percent": None}, "more": {"mode": "partial", "percent": 20}
        }  # fmt: skip
        assert (await _modes(c))["extras"] == ("shed", None) and (await _modes(c))["more"] == ("partial", 50)
        entries = await _newest(c)
        assert len(entries) == before + 1
        assert {k: entries[0][k] for k in ("name", "field", "old", "new", "reason", "source")} == {
            "name": "sale", "field": "plan", "old": "extras=auto,more=partial:20", "new": "extras=shed,more=partial:50",
            "reason": "sale starts", "source": "ops",
        }  # fmt: skip
        messages = await drain()
        assert len(messages) == 1 and messages[0]["plan"] == "sale"
        assert sorted((m["name"], m["new"]) for m in messages[0]["changes"]) == [
            ("extras", "shed"), ("more", "partial:50")
        ]  # fmt: skip
        # Someone opens extras by hand in between: the rollback restores it all the same, and says so.
        assert (await put(c, "extras", mode="open", reason="by hand")).status_code == 200
        await drain()
        rolled = await c.post("/degrade/plans/sale/rollback", json={"reason": "sale over"}, headers=AUTH)
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["changed"] == ["extras", "more"] and rolled.json()["overridden"] == ["extras"]
        modes = await _modes(c)
        assert modes["extras"] == ("auto", None) and modes["more"] == ("partial", 20)
        top = (await _newest(c))[0]
        assert (top["field"], top["old"], top["new"]) == (
            "rollback", "extras=open,more=partial:50", "extras=auto,more=partial:20"
        )  # fmt: skip
        assert len(await drain()) == 1
    again = await c.post("/degrade/plans/sale/rollback", json={"reason": "twice"}, headers=AUTH)
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_applied"
    # Applied twice before a rollback: the rollback still goes back to before the first apply.
    for _ in range(2):
        assert (
            await c.post("/degrade/plans/sale/apply", json={"reason": "r"}, headers=AUTH)
        ).status_code == 200
    assert (
        await c.post("/degrade/plans/sale/rollback", json={"reason": "r"}, headers=AUTH)
    ).status_code == 200
    modes = await _modes(c)
    assert modes["extras"] == ("auto", None) and modes["more"] == ("partial", 20)
    # A core subsystem in a plan needs force, at apply and at schedule time.
    core = {"changes": {"shop": "shed", "extras": "shed"}, "reason": "drill"}
    assert (await c.put("/degrade/plans/core", json=core, headers=AUTH)).status_code == 200
    for extra in ({}, {"at": "2099-01-01T00:00:00Z"}):
        refused = await c.post("/degrade/plans/core/apply", json={"reason": "x", **extra}, headers=AUTH)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "force_required"
    assert (await _modes(c))["shop"] == ("auto", None)
    forced = await c.post("/degrade/plans/core/apply", json={"reason": "x", "force": True}, headers=AUTH)
    assert forced.status_code == 200 and (await c.get("/shop/buy")).status_code == 503
    assert (await c.delete("/degrade/plans/core", headers=AUTH)).json() == {"deleted": "core"}
    assert (await c.get("/degrade/plans/core", headers=AUTH)).json()["error"]["code"] == "unknown_plan"


async def test_a_retried_script_call_is_a_no_op(
    plan_client: httpx.AsyncClient, degrade_settings: Callable[..., Settings]
) -> None:
    c = plan_client
    body = {"changes": {"extras": "shed"}, "reason": "r"}
    assert (await c.put("/degrade/plans/p", json=body, headers=AUTH)).status_code == 200
    r = create_redis(degrade_settings().require("redis_url"))
    try:
        for op in ("apply", "rollback"):
            call = PlanCall("ops", "retry test", f"id-{op}", 1000)
            first = await plan_apply(r, op, "p", call, "")
            audit_len, stored = await r.xlen(keys.AUDIT), await r.hgetall(keys.SWITCHES)
            second = await plan_apply(r, op, "p", call, "")
            assert second.status is first.status and second.changed == first.changed == ["extras"]
            assert second.message is None and first.message is not None
            assert await r.xlen(keys.AUDIT) == audit_len and await r.hgetall(keys.SWITCHES) == stored
        at_ms = int(time.time() * 1000) + 600_000
        schedule: list[EncodableT] = [at_ms, "later", "0"]
        for op, extra in (("schedule", schedule), ("cancel", [])):
            call = PlanCall("ops", "retry test", f"id-{op}", 1000)
            first = await plan_edit(r, op, "p", call, list(extra))
            audit_len = await r.xlen(keys.AUDIT)
            second = await plan_edit(r, op, "p", call, list(extra))
            assert first.status is second.status and second.status.value == {"schedule": "scheduled"}.get(
                op, "cancelled"
            )
            assert await r.xlen(keys.AUDIT) == audit_len
        # A put sent again finds the same plan; a due call with nothing due writes nothing.
        put_call = PlanCall("ops", "r", "", 1000)
        again = await plan_edit(r, "put", "p", put_call, [64, "", "extras=shed"])
        assert again.status is PlanStatus.UNCHANGED
        assert (await plan_apply(r, "due", "", put_call, "")).status is PlanStatus.NONE
    finally:
        await r.aclose()


async def test_a_due_plan_is_applied_once_by_racing_contexts(
    degrade_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # No periodic resync in this test: the boards learn only what is announced, so that they are stale below.
    settings = degrade_settings(PEAK_DEGRADE_SCHEDULE_S="0.05", PEAK_DEGRADE_RESYNC_S="60")
    url = settings.require("redis_url")
    async with contextlib.AsyncExitStack() as stack:
        ctxs = [await stack.enter_async_context(open_context(settings, _parts(), "api")) for _ in range(3)]
        boards = [ctx.get(Board) for ctx in ctxs]
        await plans.put_plan(ctxs[0], boards[0], "at8", {"extras": "shed", "more": "open"}, description="",
                             reason="r", who="t")  # fmt: skip
        drain = await stack.enter_async_context(listening(url))
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.6)
        scheduled = await plans.apply_plan(
            ctxs[1], boards[1], "at8", reason="for the sale", who="t", at=at, force=False
        )
        assert scheduled["status"] == "scheduled" and scheduled["plan"]["scheduled_at"]
        # Three contexts' schedule loops race for it, and so do 200 direct calls sent as it falls due.
        await asyncio.sleep(max(0.0, at.timestamp() - time.time()))
        replies = await asyncio.gather(*(plans.run_due(ctxs[i % 3], boards[i % 3]) for i in range(200)))
        for _ in range(300):
            if all(b.shed["extras"] == 100 for b in boards):
                break
            await asyncio.sleep(0.01)
        assert all(b.shed["extras"] == 100 for b in boards)
        assert [r.status for r in replies].count(PlanStatus.APPLIED) <= 1
        await asyncio.sleep(0.3)
        applied = [e for e in (await _audit(url)) if e.get("field") == "plan" and e.get("name") == "at8"]
        assert len(applied) == 1 and applied[0]["source"] == "schedule" and applied[0]["by"] == "t"
        late_ms = int(applied[0]["at"]) - int(at.timestamp() * 1000)
        print(f"scheduled plan applied {late_ms} ms after its time (Redis clock; loops every 50 ms)")
        assert 0 <= late_ms < 3000
        published = [m for m in await drain() if m.get("changes") is not None]
        assert len(published) == 1
        plan = await plans.get_plan(ctxs[2].redis, "at8")
        assert plan["scheduled_at"] is None and plan["applied"]["source"] == "schedule"
        # A plan scheduled without force that a tier change made core meanwhile is dropped, not applied.
        await plans.apply_plan(
            ctxs[0], boards[0], "at8", reason="again", who="t", at=at + dt.timedelta(days=1), force=False
        )
        await ctxs[0].redis.hset(keys.SWITCHES, "tier:extras", "critical")
        # Written behind the boards' backs (no announcement): no board knows the tier yet, and the three
        # schedule loops race the call below for the plan; each is judged on the stored tier all the same.
        assert not any(b.get("extras", "tier") == "critical" for b in boards)
        caplog.clear()
        await ctxs[0].redis.zadd(keys.SCHEDULE, {"at8": 1})
        refused = await plans.run_due(ctxs[0], boards[0])
        await asyncio.sleep(0.3)  # six turns of the loops
        said = [
            r.getMessage() for r in caplog.records if r.name == "peak.degrade" and "at8" in r.getMessage()
        ]
        assert said == ["degrade: scheduled plan at8 not applied: it sheds core extras and was scheduled without"
                        " force"], said  # fmt: skip
        assert (refused.status, refused.changed) in ((PlanStatus.REFUSED, ["extras"]), (PlanStatus.NONE, []))
        assert (await plans.get_plan(ctxs[1].redis, "at8"))["scheduled_at"] is None


async def _audit(url: str) -> list[dict[str, str]]:
    r = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        rows: list[tuple[str, dict[str, str]]] = await r.xrange(keys.AUDIT)  # type: ignore[assignment]
        return [fields for _, fields in rows]
    finally:
        await r.aclose()


def test_the_cli_sets_and_applies_a_plan(servers: Any, make_settings: Callable[..., Settings]) -> None:
    make_settings()  # clean stores
    env = servers.env()
    made = run_peak("degrade", "plan", "set", "night", "reviews=shed", "customer_service=partial:40",
                    "--reason", "cli test", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "reviews=shed" in made.stdout and "customer_service=partial:40" in made.stdout
    applied = run_peak("degrade", "plan", "apply", "night", "--reason", "now", env=env)
    assert applied.returncode == 0, applied.stderr
    assert "applied (changed customer_service, reviews)" in applied.stdout
    trail = run_peak("degrade", "audit", "--newest", "--name", "reviews", env=env)
    assert trail.returncode == 0, trail.stderr
    assert [line.split()[1:3] for line in trail.stdout.splitlines()] == [
        ["night", "plan"],
        ["night", "plan_edit"],
    ]


async def test_the_schedule_loop_outlives_a_redis_outage(
    degrade_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    private = RedisServer(tmp_path / "redis")
    private.start()
    try:
        settings = degrade_settings(PEAK_REDIS_URL=private.url, PEAK_DEGRADE_SCHEDULE_S="0.05")
        async with open_context(settings, _parts(), "api") as ctx:
            board = ctx.get(Board)
            await plans.put_plan(ctx, board, "p", {"extras": "shed"}, description="", reason="r", who="t")
            at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            await plans.apply_plan(ctx, board, "p", reason="r", who="t", at=at, force=False)
            # Down across the plan's time: the loop waits the outage out and applies the plan once it is back.
            private.stop()
            await asyncio.sleep(2.0)
            assert board.shed["extras"] == 0
            private.start()
            back = time.monotonic()
            for _ in range(100):
                if board.shed["extras"] == 100:
                    break
                await asyncio.sleep(0.05)
            print(f"scheduled plan applied {time.monotonic() - back:.2f} s after a 2 s Redis outage ended")
            assert board.shed["extras"] == 100
            entries = await _audit(private.url)
            assert [e["field"] for e in entries if e["name"] == "p"] == ["plan_edit", "schedule", "plan"]
    finally:
        private.stop()

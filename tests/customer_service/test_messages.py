from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx

from customer_service.inbox import drain_once
from kit.context import open_context
from kit.settings import Settings
from peak.app import components
from tests.reviews.conftest import ADMIN, shoppers
from tests.support import kill_group, start_peak

SHED = {"mode": "shed", "reason": "peak"}
OPEN = {"mode": "auto", "reason": "peak over"}


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_conversation_and_agent_reply(shop: httpx.AsyncClient) -> None:
    alice, bob = await shoppers(shop, 2, prefix="cs")
    asked = await shop.post("/cs/messages", json={"text": "where is my parcel?"}, headers=alice)
    assert asked.status_code == 201, asked.text
    message_id = asked.json()["id"]
    await shop.post("/cs/messages", json={"text": "hello"}, headers=bob)
    assert _code(await shop.post(f"/cs/messages/{message_id}/reply", json={"text": "x"}, headers=bob)) == (
        403,
        "forbidden",
    )
    replied = await shop.post(f"/cs/messages/{message_id}/reply", json={"text": "on its way"}, headers=ADMIN)
    assert replied.status_code == 201 and replied.json()["reply_to"] == message_id
    mine = (await shop.get("/cs/messages", headers=alice)).json()["messages"]
    assert [(m["author"], m["text"]) for m in mine] == [
        ("shopper", "where is my parcel?"),
        ("agent", "on its way"),
    ]
    assert [m["text"] for m in (await shop.get("/cs/messages", headers=bob)).json()["messages"]] == ["hello"]


async def test_bad_input(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1, prefix="csbad")
    assert _code(await shop.get("/cs/messages")) == (401, "unauthenticated")
    assert _code(await shop.post("/cs/messages", json={"text": ""}, headers=alice)) == (
        422,
        "invalid_request",
    )
    assert _code(await shop.post("/cs/messages", json={}, headers=alice)) == (422, "invalid_request")
    assert _code(await shop.post("/cs/messages/nope/reply", json={"text": "x"}, headers=ADMIN)) == (
        422,
        "invalid_request",
    )
    missing = f"/cs/messages/{uuid.uuid4()}/reply"
    assert _code(await shop.post(missing, json={"text": "x"}, headers=ADMIN)) == (404, "message_not_found")


async def test_messages_written_while_shed_all_reach_postgresql(
    shop: httpx.AsyncClient, shop_settings: Settings
) -> None:
    users = await shoppers(shop, 20, prefix="queue")
    assert (await shop.put("/degrade/switches/customer_service", json=SHED, headers=ADMIN)).status_code == 200
    answers = await asyncio.gather(
        *(shop.post("/cs/messages", json={"text": f"m{i}"}, headers=users[i % 20]) for i in range(300))
    )
    assert {a.status_code for a in answers} == {202}
    assert answers[0].json()["message"] == "an agent will reply later"
    assert answers[0].headers["x-degraded"] == "customer_service"
    listing = await shop.get("/cs/messages", headers=users[0])
    assert _code(listing) == (503, "degraded") and listing.headers["x-degraded"] == "customer_service"
    async with open_context(shop_settings, components(), "worker") as ctx:
        # Still shed: the worker leaves them waiting.
        assert await ctx.db.fetchval("SELECT count(*) FROM cs_messages") == 0
        assert (
            await shop.put("/degrade/switches/customer_service", json=OPEN, headers=ADMIN)
        ).status_code == 200
        while await drain_once(ctx, "test-consumer"):
            pass
        rows = await ctx.db.fetch("SELECT id, text, queued FROM cs_messages")
        assert sorted(r["text"] for r in rows) == sorted(f"m{i}" for i in range(300))
        assert {str(r["id"]) for r in rows} == {a.json()["id"] for a in answers}
        assert all(r["queued"] for r in rows)
        assert await ctx.redis.xlen("{cs}:inbox") == 0
    mine = (await shop.get("/cs/messages", headers=users[0])).json()["messages"]
    assert len(mine) == 15


async def test_a_killed_worker_loses_nothing(
    shop: httpx.AsyncClient, shop_settings: Settings, servers: object, tmp_path: Path
) -> None:
    users = await shoppers(shop, 5, prefix="kill")
    await shop.put("/degrade/switches/customer_service", json=SHED, headers=ADMIN)
    answers = await asyncio.gather(
        *(shop.post("/cs/messages", json={"text": f"k{i}"}, headers=users[i % 5]) for i in range(500))
    )
    assert {a.status_code for a in answers} == {202}
    env = {**servers.env(), "PEAK_CS_CLAIM_IDLE_MS": "200"}  # type: ignore[attr-defined]
    first = start_peak("worker", env=env, log=tmp_path / "worker1.log")
    try:
        await asyncio.sleep(3)  # started, and sees customer_service shed: nothing moves
        await shop.put("/degrade/switches/customer_service", json=OPEN, headers=ADMIN)
        conn = await asyncpg.connect(shop_settings.require("database_url"))
        try:
            for _ in range(200):
                if await conn.fetchval("SELECT count(*) FROM cs_messages") > 0:
                    break
                await asyncio.sleep(0.01)
            kill_group(first)
            second = start_peak("worker", env=env, log=tmp_path / "worker2.log")
            try:
                for _ in range(300):
                    if await conn.fetchval("SELECT count(*) FROM cs_messages") == 500:
                        break
                    await asyncio.sleep(0.1)
                texts = await conn.fetch("SELECT text FROM cs_messages")
                assert sorted(r["text"] for r in texts) == sorted(f"k{i}" for i in range(500))
            finally:
                kill_group(second)
        finally:
            await conn.close()
    finally:
        kill_group(first)

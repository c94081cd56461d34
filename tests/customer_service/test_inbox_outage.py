"""The inbox mover while PostgreSQL is stopped: it pauses (one warning), dead-letters nothing, and moves every
queued message exactly once when PostgreSQL is back; the reads that need PostgreSQL answer 503 fast."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import httpx
import pytest

from customer_service import keys
from customer_service.inbox import move_queued_messages
from kit.context import open_context
from kit.settings import Settings
from kit.tasks import cancel_loops
from loadtest.drill.pg_outage import start_postgres, stop_postgres
from peak.app import components
from tests.conftest import TEST_REDIS, Servers
from tests.reviews.conftest import ADMIN, shoppers

SHED = {"mode": "shed", "reason": "peak"}
OPEN = {"mode": "auto", "reason": "peak over"}


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="PostgreSQL's outage, not Redis's topology")
async def test_the_inbox_mover_waits_out_a_postgresql_outage_and_loses_nothing(
    shop: httpx.AsyncClient, shop_settings: Settings, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    (alice,) = await shoppers(shop, 1, prefix="outage")
    assert (await shop.put("/degrade/switches/customer_service", json=SHED, headers=ADMIN)).status_code == 200
    sent = await asyncio.gather(
        *(shop.post("/cs/messages", json={"text": f"m{i}"}, headers=alice) for i in range(30))
    )
    assert {a.status_code for a in sent} == {202}
    settings = dataclasses.replace(shop_settings, outage_retry_max_s=0.5)
    caplog.set_level(logging.WARNING, logger="peak.customer_service")
    async with open_context(settings, components(), "worker") as ctx:
        await asyncio.to_thread(stop_postgres, servers.postgres, "immediate")
        try:
            mover = asyncio.create_task(move_queued_messages(ctx))
            # The switch lives in Redis: the mover starts on the backlog with PostgreSQL gone.
            await shop.put("/degrade/switches/customer_service", json=OPEN, headers=ADMIN)
            for call in (
                shop.get("/cs/messages", headers=alice),
                shop.post("/cs/messages", json={"text": "now"}, headers=alice),
            ):
                started = time.monotonic()
                answer = await call
                assert time.monotonic() - started < 5.0
                assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"
            await asyncio.sleep(3.0)  # many times PEAK_CS_CLAIM_IDLE_MS and the pause cap
            assert not mover.done()
            assert await ctx.redis.xlen(keys.DEAD_LETTERS) == 0
            assert await ctx.redis.xlen(keys.INBOX) == 30
        finally:
            await asyncio.to_thread(start_postgres, servers.postgres)
        try:
            deadline = time.monotonic() + 20
            while await ctx.redis.xlen(keys.INBOX):
                assert time.monotonic() < deadline and not mover.done()
                await asyncio.sleep(0.05)
        finally:
            await cancel_loops([mover])  # its stream read may swallow a single cancel
        texts = [r["text"] for r in await ctx.db.fetch("SELECT text FROM cs_messages")]
        assert sorted(texts) == sorted(f"m{i}" for i in range(30))
        assert await ctx.redis.xlen(keys.DEAD_LETTERS) == 0
        assert (await ctx.redis.xpending(keys.INBOX, keys.INBOX_GROUP))["pending"] == 0
    said = [r.getMessage() for r in caplog.records if r.name == "peak.customer_service"]
    assert sum("inbox mover paused: PostgreSQL is unreachable" in m for m in said) == 1, said
    assert sum("inbox mover resumes" in m for m in said) == 1, said

"""The flash sale through HTTP: thousands of concurrent attempts, a worker killed mid-drain, SCRIPT FLUSH."""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import time
from pathlib import Path

import httpx
import pytest

from devstack.processes import free_port
from kit.context import Context
from kit.settings import Settings
from seckill import keys, reconcile
from tests.conftest import Servers
from tests.seckill.conftest import (
    SALE_ENV,
    assert_balanced,
    drain,
    http_event,
    order_rows,
    orders_trigger,
    seckill_context,
    shoppers,
)
from tests.support import kill_group, run_peak, start_peak, wait_http


async def _rush(
    shop: httpx.AsyncClient, event_id: int, users: list[dict[str, str]]
) -> list[tuple[int, dict[str, str], str, httpx.Response]]:
    """Four attempts per user: two share an Idempotency-Key (a retry), two are plain (over the limit)."""
    attempts = []
    for i, headers in enumerate(users):
        attempts += [(i, {**headers, "Idempotency-Key": f"k-{i}"})] * 2 + [(i, headers)] * 2
    random.Random(7).shuffle(attempts)
    responses = await asyncio.gather(
        *(shop.post(f"/seckill/events/{event_id}/orders", headers=h) for _, h in attempts)
    )
    return [(i, h, h.get("Idempotency-Key", ""), r) for (i, h), r in zip(attempts, responses, strict=True)]


def _check_answers(answers: list[tuple[int, dict[str, str], str, httpx.Response]]) -> dict[int, set[str]]:
    codes = collections.Counter(
        r.status_code if r.status_code == 202 else r.json()["error"]["code"] for _, _, _, r in answers
    )
    assert set(codes) <= {202, "sold_out", "limit_reached"}, codes
    orders_by_user: dict[int, set[str]] = collections.defaultdict(set)
    by_key: dict[str, set[str]] = collections.defaultdict(set)
    for user, _, key, r in answers:
        if r.status_code == 202:
            orders_by_user[user].add(r.json()["order_id"])
            if key:
                by_key[key].add(r.json()["order_id"])
    assert all(len(ids) == 1 for ids in by_key.values()), "a retried key got two orders"
    assert all(len(ids) == 1 for ids in orders_by_user.values()), "a shopper got over the limit"
    assert sum(len(ids) for ids in orders_by_user.values()) == 100
    return orders_by_user


@pytest.mark.slow
async def test_2000_attempts_from_500_shoppers_sell_exactly_the_stock(
    shop: httpx.AsyncClient, sale_settings: Settings, servers: Servers
) -> None:
    users = await shoppers(shop, 500)
    event_id = await http_event(shop, stock=100, per_user_limit=1)
    sold = _check_answers(await _rush(shop, event_id, users))
    async with seckill_context(sale_settings) as ctx:
        await drain(ctx, event_id)
        rows = await order_rows(ctx, event_id)
        assert len(rows) == 100
        assert len({r["user_id"] for r in rows}) == 100
        assert {str(r["order_id"]) for r in rows} == set().union(*sold.values())
        assert await ctx.redis.hget(keys.event_keys(event_id).meta, "stock") == "0"
        await assert_balanced(ctx, event_id)
    stats = (
        await shop.get(
            f"/seckill/events/{event_id}/stats",
            headers={"Authorization": f"Bearer {SALE_ENV['PEAK_ADMIN_TOKEN']}"},
        )
    ).json()
    assert (stats["stock_left"], stats["queued"], stats["orders_pending_payment"]) == (0, 0, 100)
    checked = run_peak("seckill", "reconcile", str(event_id), env={**servers.env(), **SALE_ENV})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "drift=0" in checked.stdout and "no drift" in checked.stdout


@pytest.mark.slow
async def test_worker_sigkilled_mid_drain_loses_and_duplicates_nothing(
    shop: httpx.AsyncClient, sale_settings: Settings, servers: Servers, tmp_path: Path
) -> None:
    users = await shoppers(shop, 500)
    event_id = await http_event(shop, stock=100, per_user_limit=1)
    _check_answers(await _rush(shop, event_id, users))
    env = {**servers.env(), **SALE_ENV, "PEAK_SECKILL_BATCH_SIZE": "10", "PEAK_SECKILL_CLAIM_IDLE_MS": "300"}
    async with seckill_context(sale_settings) as ctx:
        # A slow database (10 ms per row) keeps the worker busy long enough to be stopped in the middle; each
        # row also passes through an advisory lock that the test takes once 30 orders are written, so the
        # worker is parked inside a batch it has read but cannot commit. The SIGKILL lands there: polling
        # XPENDING alone races the worker acknowledging the batch between the poll and the kill.
        gate = "PERFORM pg_advisory_lock_shared(7474); PERFORM pg_advisory_unlock_shared(7474);"
        async with (
            orders_trigger(ctx, f"PERFORM pg_sleep(0.01); {gate} RETURN NEW;"),
            ctx.db.acquire() as lock,
        ):
            worker = start_peak("worker", env=env, log=tmp_path / "worker.log")
            try:
                deadline = time.monotonic() + 30
                while len(await order_rows(ctx, event_id)) < 30:
                    assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                    await asyncio.sleep(0.01)
                await lock.execute("SELECT pg_advisory_lock(7474)")
                while not await _waiting_on_gate(ctx):
                    assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                    await asyncio.sleep(0.01)
            finally:
                kill_group(worker, signal.SIGKILL)
                await lock.execute("SELECT pg_advisory_unlock_all()")
            written = len(await order_rows(ctx, event_id))
            assert 30 <= written < 100
            pending = await ctx.redis.xpending(keys.event_keys(event_id).stream, keys.GROUP)
            assert pending["pending"] > 0, "the killed worker had a batch in flight"
        await assert_balanced(ctx, event_id)
        worker = start_peak("worker", env=env, log=tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 30
            while (await reconcile.balance(ctx, event_id)).queued:
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                await asyncio.sleep(0.05)
        finally:
            kill_group(worker, signal.SIGTERM)
        rows = await order_rows(ctx, event_id)
        assert len(rows) == 100 and len({r["order_id"] for r in rows}) == 100
        assert len({r["user_id"] for r in rows}) == 100
        b = await assert_balanced(ctx, event_id)
        assert (b.queued, b.dead_letters, b.pending_payment, b.stock_left) == (0, 0, 100, 0)


async def _waiting_on_gate(ctx: Context) -> bool:
    """Whether a database session (the worker's batch) waits for the test's advisory lock."""
    return bool(
        await ctx.db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7474 AND NOT granted"
        )
    )


async def test_script_flush_during_a_rush_fails_no_request(
    shop: httpx.AsyncClient, sale_settings: Settings
) -> None:
    users = await shoppers(shop, 150)
    event_id = await http_event(shop, stock=100)

    async def flusher() -> None:
        async with seckill_context(sale_settings) as ctx:
            for _ in range(20):
                await ctx.redis.script_flush()
                await asyncio.sleep(0.003)

    responses, _ = await asyncio.gather(
        asyncio.gather(*(shop.post(f"/seckill/events/{event_id}/orders", headers=h) for h in users)),
        flusher(),
    )
    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {202: 100, 409: 50}, statuses


@pytest.mark.slow
async def test_sold_out_memory_of_another_process_clears_within_a_second(
    shop: httpx.AsyncClient, sale_settings: Settings, servers: Servers, tmp_path: Path
) -> None:
    alice, bob = await shoppers(shop, 2)
    event_id = await http_event(shop, stock=1)
    buy = f"/seckill/events/{event_id}/orders"
    port = free_port()
    env = {**servers.env(), **SALE_ENV, "PEAK_PORT": str(port), "PEAK_WORKERS": "1"}
    server = start_peak("serve", env=env, log=tmp_path / "api.log")
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as other:
            order_id = (await other.post(buy, headers=alice)).json()["order_id"]
            for _ in range(3):
                refused = await other.post(buy, headers=bob)
                assert refused.json()["error"]["code"] == "sold_out"
            async with seckill_context(sale_settings) as ctx:
                await drain(ctx, event_id)
            cancelled = await shop.post(f"/seckill/orders/{order_id}/cancel", headers=alice)
            assert cancelled.json()["status"] == "cancelled"
            since = time.monotonic()
            while (await other.post(buy, headers=bob)).status_code != 202:
                assert time.monotonic() - since < 1.0, "the other process still answers sold_out"
                await asyncio.sleep(0.05)
    finally:
        kill_group(server, signal.SIGTERM)


async def test_a_lost_stock_back_message_does_not_keep_an_event_sold_out(
    shop: httpx.AsyncClient, sale_settings: Settings
) -> None:
    alice, bob = await shoppers(shop, 2)
    event_id = await http_event(shop, stock=1)
    buy = f"/seckill/events/{event_id}/orders"
    assert (await shop.post(buy, headers=alice)).status_code == 202
    assert (await shop.post(buy, headers=bob)).json()["error"]["code"] == "sold_out"
    async with seckill_context(sale_settings) as ctx:
        # Stock comes back without any message (a lost PUBLISH); only the periodic recheck can notice.
        await ctx.redis.hincrby(keys.event_keys(event_id).meta, "stock", 1)
        await ctx.redis.hincrby(keys.event_keys(event_id).meta, "total", 1)
    since = time.monotonic()
    while (await shop.post(buy, headers=bob)).status_code != 202:
        assert time.monotonic() - since < 1.0, "still sold out"
        await asyncio.sleep(0.05)

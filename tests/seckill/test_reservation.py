from __future__ import annotations

import asyncio
import collections

import pytest

from kit.context import Context
from seckill import keys
from seckill.reservation import Reserver
from tests.seckill.conftest import (
    MakeSettings,
    assert_balanced,
    call_reserve,
    drain,
    new_event,
    order_rows,
    seckill_context,
    try_reserve,
)


async def test_coalesced_purchases_never_oversell_nor_exceed_limits(make_settings: MakeSettings) -> None:
    settings = make_settings(PEAK_SECKILL_IP_RATE_PER_S="1000000", PEAK_SECKILL_USER_RATE_PER_S="1000")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=100, limit=2)
        reserver = ctx.get(Reserver)
        users = [f"user-{i % 300}" for i in range(1500)]
        answers = await asyncio.gather(*(try_reserve(reserver, event_id, u) for u in users))
        codes = collections.Counter("ok" if a.count("-") == 4 else a for a in answers)
        assert codes["ok"] == 100
        assert set(codes) <= {"ok", "sold_out", "limit_reached"}
        await drain(ctx, event_id)
        rows = await order_rows(ctx, event_id)
        assert len(rows) == 100
        per_user = collections.Counter(r["user_id"] for r in rows)
        assert max(per_user.values()) <= 2
        b = await assert_balanced(ctx, event_id)
        assert (b.stock_left, b.pending_payment, b.queued) == (0, 100, 0)


async def test_limit_is_checked_before_stock(ctx: Context) -> None:
    event_id = await new_event(ctx, stock=2, limit=1)
    reserver = ctx.get(Reserver)
    assert (await reserver.reserve(event_id, "alice", "10.0.0.1")).new
    # Alice's second attempt must not take the last item (the "phantom sell-out").
    for _ in range(5):
        assert await try_reserve(reserver, event_id, "alice") == "limit_reached"
    assert (await reserver.reserve(event_id, "bob", "10.0.0.1")).new
    assert await try_reserve(reserver, event_id, "carol") == "sold_out"


async def test_idempotency_key_returns_the_same_order(ctx: Context) -> None:
    event_id = await new_event(ctx, stock=5, limit=1)
    reserver = ctx.get(Reserver)
    answers = await asyncio.gather(*(try_reserve(reserver, event_id, "alice", "k-1") for _ in range(8)))
    assert len(set(answers)) == 1 and answers[0].count("-") == 4
    # Another key is another purchase: over the limit.
    assert await try_reserve(reserver, event_id, "alice", "k-2") == "limit_reached"
    # The same key of another user is that user's own key.
    assert await try_reserve(reserver, event_id, "bob", "k-1") not in answers
    await drain(ctx, event_id)
    assert len(await order_rows(ctx, event_id)) == 2


async def test_sold_out_is_remembered_and_forgotten_when_stock_comes_back(ctx: Context) -> None:
    from seckill.events import EventPatch, add_stock_or_move_end
    from seckill.soldout import SoldOutMemory

    event_id = await new_event(ctx, stock=1)
    reserver = ctx.get(Reserver)
    await reserver.reserve(event_id, "alice", "10.0.0.1")
    assert event_id in ctx.get(SoldOutMemory)
    await ctx.redis.hset(keys.event_keys(event_id).meta, "stock", 5)  # memory must answer without Redis
    assert await try_reserve(reserver, event_id, "bob") == "sold_out"
    await ctx.redis.hset(keys.event_keys(event_id).meta, "stock", 0)
    await add_stock_or_move_end(ctx, event_id, EventPatch(add_stock=1))
    for _ in range(50):
        if event_id not in ctx.get(SoldOutMemory):
            break
        await asyncio.sleep(0.02)
    assert event_id not in ctx.get(SoldOutMemory)
    assert (await reserver.reserve(event_id, "bob", "10.0.0.1")).new


@pytest.mark.parametrize("starts_in_s,lasts_s,code", [(30, 60, "not_started"), (-60, 30, "ended")])
async def test_window_is_enforced(ctx: Context, starts_in_s: float, lasts_s: float, code: str) -> None:
    event_id = await new_event(ctx, starts_in_s=starts_in_s, lasts_s=lasts_s)
    assert await try_reserve(ctx.get(Reserver), event_id, "alice") == code


async def test_short_window_opens_and_closes_on_the_redis_clock(ctx: Context) -> None:
    event_id = await new_event(ctx, stock=10, starts_in_s=1.0, lasts_s=1.0)
    reserver = ctx.get(Reserver)
    assert await try_reserve(reserver, event_id, "u1") == "not_started"
    await asyncio.sleep(1.1)
    assert (await reserver.reserve(event_id, "u2", "10.0.0.1")).new
    await asyncio.sleep(1.0)
    assert await try_reserve(reserver, event_id, "u3") == "ended"


async def test_rate_limits_per_user_and_per_ip(make_settings: MakeSettings) -> None:
    settings = make_settings(PEAK_SECKILL_USER_RATE_PER_S="3", PEAK_SECKILL_IP_RATE_PER_S="5")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=100, limit=100)
        reserver = ctx.get(Reserver)
        by_user = await asyncio.gather(*(try_reserve(reserver, event_id, "alice") for _ in range(5)))
        assert sorted(a == "rate_limited" for a in by_user) == [False] * 3 + [True] * 2
        by_ip = [await try_reserve(reserver, event_id, f"user-{i}") for i in range(4)]
        assert by_ip[:2] != ["rate_limited"] * 2 and by_ip[-1] == "rate_limited"


async def test_unknown_event(ctx: Context) -> None:
    assert await try_reserve(ctx.get(Reserver), 424242, "alice") == "event_not_found"


async def test_script_flush_mid_run_fails_no_purchase(make_settings: MakeSettings) -> None:
    settings = make_settings(PEAK_SECKILL_IP_RATE_PER_S="1000000", PEAK_SECKILL_USER_RATE_PER_S="1000")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=300, limit=1)
        reserver = ctx.get(Reserver)

        async def flusher() -> None:
            for _ in range(10):
                await ctx.redis.script_flush()
                await asyncio.sleep(0.005)

        answers, _ = await asyncio.gather(
            asyncio.gather(*(try_reserve(reserver, event_id, f"u{i}") for i in range(400))), flusher()
        )
        codes = collections.Counter("ok" if a.count("-") == 4 else a for a in answers)
        assert codes == {"ok": 300, "sold_out": 100}
        await drain(ctx, event_id)
        await assert_balanced(ctx, event_id)


async def test_a_call_repeated_after_a_lost_answer_sells_nothing_twice(ctx: Context) -> None:
    from seckill.ids import new_order_id

    event_id = await new_event(ctx, stock=5, limit=2)
    purchases = [(new_order_id(), "alice", "10.0.0.1", ""), (new_order_id(), "bob", "10.0.0.1", "")]
    first = await call_reserve(ctx, event_id, purchases)
    assert [r[0] for r in first] == ["ok", "ok"]
    # The orders are written and acknowledged before the client library's retry arrives (a 5 s timeout).
    await drain(ctx, event_id)
    again = await call_reserve(ctx, event_id, purchases)
    # The retry is told what the lost answer said; nothing is counted, taken or queued again.
    assert again == first
    b = await assert_balanced(ctx, event_id)
    assert (b.stock_left, b.pending_payment) == (3, 2)

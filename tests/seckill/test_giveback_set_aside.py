"""Pending give-backs of an event that Redis no longer knows are set aside and reported, and never block the
ones behind them (issue 17, item 4); if the event comes back to Redis they are applied then, once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kit.context import Context
from seckill import keys, timeouts
from tests.seckill.conftest import assert_balanced, drain, new_event, order_rows
from tests.seckill.test_orders import _buy

_LOST = 600  # more than one sweep's batch (500): the old sweeper retried the same 500 at the head forever


async def _cancelled_by_a_dead_sweeper(ctx: Context, event_id: int, minutes_ago: int) -> None:
    """The orders' cancellation committed, their give-back left pending (the sweeper died in between)."""
    await ctx.db.execute(
        "UPDATE seckill_orders SET status = 'cancelled', cancelled_at = now() - make_interval(mins => $2)"
        " + rsv * interval '1 ms', cancel_reason = 'timeout', giveback = 'pending' WHERE event_id = $1",
        event_id,
        minutes_ago,
    )


async def _stock(ctx: Context, event_id: int) -> int:
    return int(await ctx.redis.hget(keys.event_keys(event_id).meta, "stock") or -1)


async def test_givebacks_of_an_event_redis_lost_are_set_aside_and_the_rest_go_on(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    lost = await new_event(ctx, stock=_LOST)
    kept = await new_event(ctx, stock=10, sku="SKU-2")
    await _buy(ctx, lost, [f"u{i}" for i in range(_LOST)])
    await _buy(ctx, kept, ["alice", "bob", "carol"])
    await drain(ctx, lost)
    await drain(ctx, kept)
    # The lost event's give-backs are older: at the head of the sweeper's queue.
    await _cancelled_by_a_dead_sweeper(ctx, lost, 60)
    await _cancelled_by_a_dead_sweeper(ctx, kept, 1)
    # Then Redis loses the lost event (deleted, expired, or a data loss); a backup of it is kept.
    k = keys.event_keys(lost)
    names = [k.meta, k.users, k.seq, k.returned, k.quota_returned, k.changes]
    backup: list[Any] = [(name, await ctx.redis.dump(name)) for name in names]
    await ctx.redis.delete(*names)
    caplog.set_level(logging.WARNING, logger="peak.seckill")

    for _ in range(2):
        await timeouts.finish_givebacks(ctx, grace_s=0)

    # The live event got its stock and quotas back; the lost one's give-backs are out of the way, listed.
    assert await _stock(ctx, kept) == 10
    assert {r["giveback"] for r in await order_rows(ctx, kept)} == {"done"}
    assert set((await ctx.redis.hgetall(keys.event_keys(kept).users)).values()) == {"0"}
    assert {r["giveback"] for r in await order_rows(ctx, lost)} == {"set_aside"}
    assert await timeouts.set_aside_givebacks(ctx) == {lost: _LOST}
    assert await timeouts.set_aside_givebacks(ctx, [kept]) == {}
    b = await assert_balanced(ctx, kept)
    assert (b.cancelled, b.cancelled_not_returned, b.stock_left) == (3, 0, 10)
    # Reported once as an error naming the event and what happens next; later batches only counted.
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"give-backs of event {lost} set aside" in errors[0], errors
    # Nothing is retried any more: another sweep finds nothing to do and says nothing.
    caplog.clear()
    assert await timeouts.resume_set_aside(ctx) == 0
    assert await timeouts.finish_givebacks(ctx, grace_s=0) == 0
    assert not caplog.records

    # Redis gets the event back (restored): the set-aside give-backs are applied, once.
    for name, dumped in backup:
        if dumped is not None:
            await ctx.redis.restore(name, 0, dumped)
    assert await _stock(ctx, lost) == 0
    assert await timeouts.resume_set_aside(ctx) == _LOST
    for _ in range(2):
        await timeouts.finish_givebacks(ctx, grace_s=0)
    assert await timeouts.resume_set_aside(ctx) == 0
    assert await _stock(ctx, lost) == _LOST
    assert {r["giveback"] for r in await order_rows(ctx, lost)} == {"done"}
    b = await assert_balanced(ctx, lost)
    assert (b.cancelled, b.cancelled_not_returned, b.stock_left) == (_LOST, 0, _LOST)

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

from devstack.postgres import PostgresServer
from kit.context import Context
from kit.errors import ApiError
from seckill import keys, messages, orders, payments, timeouts
from seckill.reservation import Reserver
from seckill.worker import OrderWriter
from tests.seckill.conftest import (
    PRICE,
    MakeSettings,
    assert_balanced,
    drain,
    new_event,
    order_rows,
    orders_trigger,
    seckill_context,
)


async def _buy(ctx: Context, event_id: int, users: list[str]) -> list[str]:
    reserver = ctx.get(Reserver)
    made = await asyncio.gather(*(reserver.reserve(event_id, u, "10.0.0.1") for u in users))
    return [m.order_id for m in made]


async def _pay(ctx: Context, order_id: str) -> dict[str, Any]:
    """What the payment provider's verified callback does (the shopper's own call never pays)."""
    return await payments.settle(ctx, payments.PaymentNotice(f"pay-{order_id}", order_id, PRICE))


async def _read_new(ctx: Context, writer: OrderWriter, event_id: int, count: int) -> list[Any]:
    """The oldest ``count`` new entries of the event's stream, read by ``writer`` and left pending."""
    reply: Any = await ctx.redis.xreadgroup(
        keys.GROUP, writer.consumer, {keys.event_keys(event_id).stream: ">"}, count=count
    )
    return list(reply[0][1])


async def test_redelivery_after_a_crash_never_duplicates(make_settings: MakeSettings) -> None:
    settings = make_settings(PEAK_SECKILL_CLAIM_IDLE_MS="100")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=50)
        await _buy(ctx, event_id, [f"u{i}" for i in range(50)])
        stream = keys.event_keys(event_id).stream
        # Writer A reads everything, commits half and dies before acknowledging anything.
        entries = await _read_new(ctx, OrderWriter(ctx), event_id, 100)
        async with ctx.db.acquire() as conn:
            await messages.insert_orders(conn, event_id, [fields for _, fields in entries[:25]])
        assert len(await order_rows(ctx, event_id)) == 25
        # Writer B reclaims the idle entries and writes them again.
        await asyncio.sleep(0.2)
        survivor = OrderWriter(ctx)
        assert await survivor.claim(event_id) == 50
        rows = await order_rows(ctx, event_id)
        assert len(rows) == 50 and len({r["order_id"] for r in rows}) == 50
        assert await ctx.redis.xlen(stream) == 0  # acknowledged entries are trimmed, nothing else
        b = await assert_balanced(ctx, event_id)
        assert (b.queued, b.pending_payment) == (0, 50)


async def test_acknowledged_entries_leave_the_stream_but_a_pending_one_never_does(ctx: Context) -> None:
    from seckill import deadletters

    event_id = await new_event(ctx, stock=20)
    await _buy(ctx, event_id, [f"u{i}" for i in range(20)])
    stream = keys.event_keys(event_id).stream
    # Writer A reads the five oldest entries and is still writing them...
    slow = OrderWriter(ctx)
    held = await _read_new(ctx, slow, event_id, 5)
    # ...while writer B writes and acknowledges the other fifteen.
    fast = OrderWriter(ctx)
    assert await fast.step(event_id) == 15
    # Trimming stops below A's oldest pending entry: all twenty are still there, A's untouched.
    assert await ctx.redis.xlen(stream) == 20
    present: Any = await ctx.redis.xrange(stream)
    assert [e[0] for e in present[:5]] == [e[0] for e in held]
    # A dead-lettering racing B's acknowledgement finds the entry still in the stream but no longer pending.
    written = present[10][0]
    await fast.dead_letter(event_id, written, "claimed too late", 3)
    assert await deadletters.dead_letters(ctx, [event_id]) == []
    assert await slow.write(event_id, held) == 5
    assert await ctx.redis.xlen(stream) == 0
    b = await assert_balanced(ctx, event_id)
    assert (b.queued, b.pending_payment, b.dead_letters) == (0, 20, 0)


async def test_poison_order_is_dead_lettered_and_retried(make_settings: MakeSettings) -> None:
    from seckill import deadletters

    settings = make_settings(PEAK_SECKILL_CLAIM_IDLE_MS="100", PEAK_SECKILL_MAX_DELIVERIES="2")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=10)
        async with orders_trigger(
            ctx, "RAISE EXCEPTION 'rejected by test';", "WHEN (NEW.user_id = 'mallory')"
        ):
            await _buy(ctx, event_id, ["alice", "mallory", "bob"])
            writer = OrderWriter(ctx)
            assert await writer.step(event_id) == 2  # the good orders of the batch are not held back
            for _ in range(3):
                await asyncio.sleep(0.15)
                await writer.claim(event_id)
            letters = await deadletters.dead_letters(ctx, [event_id])
            assert [(d.user_id, d.deliveries) for d in letters] == [("mallory", "2")]
            assert "rejected by test" in letters[0].reason
            b = await assert_balanced(ctx, event_id)
            assert (b.dead_letters, b.queued, b.pending_payment) == (1, 0, 2)
        assert await deadletters.requeue(ctx, event_id, letters[0].entry_id)
        await drain(ctx, event_id, writer)
        assert await deadletters.dead_letters(ctx, [event_id]) == []
        b = await assert_balanced(ctx, event_id)
        assert (b.dead_letters, b.pending_payment) == (0, 3)


async def test_malformed_messages_are_dead_lettered_and_hold_back_no_good_order(
    make_settings: MakeSettings,
) -> None:
    from seckill import deadletters

    settings = make_settings(PEAK_SECKILL_CLAIM_IDLE_MS="100", PEAK_SECKILL_MAX_DELIVERIES="2")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=10)
        await _buy(ctx, event_id, ["alice"])
        stream = keys.event_keys(event_id).stream
        # Written by hand, as a bug or an operator might: no order id at all, and an order id PostgreSQL refuses.
        await ctx.redis.xadd(stream, {"x": "1"})
        await ctx.redis.xadd(stream, {"o": "not-a-uuid", "u": "mallory", "q": "1", "r": "99", "t": "0"})
        await _buy(ctx, event_id, ["bob"])
        writer = OrderWriter(ctx)
        assert await writer.step(event_id) == 2
        for _ in range(3):
            await asyncio.sleep(0.15)
            await writer.claim(event_id)
        letters = {d.user_id: d.reason for d in await deadletters.dead_letters(ctx, [event_id])}
        assert set(letters) == {"?", "mallory"}
        assert "malformed order message" in letters["?"]
        assert "uuid" in letters["mallory"]  # PostgreSQL's own words
        assert sorted(r["user_id"] for r in await order_rows(ctx, event_id)) == ["alice", "bob"]
        assert await ctx.redis.xlen(stream) == 0


async def test_payment_racing_the_timeout_is_decided_once(ctx: Context) -> None:
    event_id = await new_event(ctx, stock=200, payment_timeout_s=1)
    order_ids = await _buy(ctx, event_id, [f"u{i}" for i in range(200)])
    await drain(ctx, event_id)
    await asyncio.sleep(0.7)

    async def pay(order_id: str, delay_s: float) -> str:
        # Spread over 0.6 s around pay_by, so payments land before, at and after the deadline.
        await asyncio.sleep(delay_s)
        try:
            await _pay(ctx, order_id)
        except ApiError as exc:
            return exc.code
        return "paid"

    async def sweep() -> None:
        for _ in range(20):
            await timeouts.cancel_due(ctx)
            await asyncio.sleep(0.02)

    *answers, _, _ = await asyncio.gather(
        *(pay(o, i * 0.003) for i, o in enumerate(order_ids)), sweep(), timeouts.cancel_due(ctx)
    )
    await timeouts.cancel_due(ctx)
    rows = {str(r["order_id"]): r for r in await order_rows(ctx, event_id)}
    outcome = collections.Counter(answers)
    assert set(outcome) <= {"paid", "order_cancelled"}
    for order_id, answer in zip(order_ids, answers, strict=True):
        expected = "paid" if answer == "paid" else "cancelled"
        assert rows[order_id]["status"] == expected
    b = await assert_balanced(ctx, event_id)
    # Every cancelled order's item is back on sale, every paid one is not.
    assert b.stock_left == outcome["order_cancelled"] and b.paid == outcome["paid"]
    assert b.cancelled_not_returned == 0
    assert outcome["paid"] + outcome["order_cancelled"] == 200


async def test_give_back_happens_once_when_sweepers_race_or_crash(ctx: Context) -> None:
    event_id = await new_event(ctx, stock=40, payment_timeout_s=1)
    await _buy(ctx, event_id, [f"u{i}" for i in range(40)])
    await drain(ctx, event_id)
    await asyncio.sleep(1.1)
    # A sweeper "crashes" after its cancelling UPDATE: give-backs stay pending in PostgreSQL.
    await ctx.db.execute(
        "UPDATE seckill_orders SET status = 'cancelled', cancelled_at = now() - interval '1 minute',"
        " cancel_reason = 'timeout', giveback = 'pending' WHERE user_id IN ('u0', 'u1', 'u2')"
    )
    interrupted = await assert_balanced(ctx, event_id)
    assert interrupted.cancelled_not_returned == 3 and interrupted.stock_left == 0
    await asyncio.gather(*(timeouts.cancel_due(ctx) for _ in range(4)), *(
        timeouts.finish_givebacks(ctx) for _ in range(4)))  # fmt: skip
    await asyncio.gather(*(timeouts.finish_givebacks(ctx, grace_s=0) for _ in range(4)))
    b = await assert_balanced(ctx, event_id)
    assert (b.stock_left, b.cancelled, b.cancelled_not_returned) == (40, 40, 0)
    assert await ctx.redis.hget(keys.event_keys(event_id).users, "u0") == "0"
    # Their quota is back too: the same users can buy again.
    assert len(await _buy(ctx, event_id, ["u0", "u1"])) == 2


async def test_owner_cancel_and_pay_rules(ctx: Context) -> None:
    event_id = await new_event(ctx, stock=2)
    first, second = await _buy(ctx, event_id, ["alice", "alice-2"])
    try:
        await _pay(ctx, first)
    except ApiError as exc:
        assert exc.code == "order_queued"
    await drain(ctx, event_id)
    assert (await _pay(ctx, first))["outcome"] == "paid"
    assert (await _pay(ctx, first))["outcome"] == "paid"
    assert (await orders.get_order(ctx, first, "alice"))["status"] == "paid"
    for call, code in ((orders.cancel_order(ctx, first, "alice"), "order_paid"),
                       (orders.get_order(ctx, first, "mallory"), "order_not_found")):  # fmt: skip
        try:
            await call
        except ApiError as exc:
            assert exc.code == code
        else:
            raise AssertionError(code)
    assert (await orders.cancel_order(ctx, second, "alice-2"))["status"] == "cancelled"
    try:
        await _pay(ctx, second)
    except ApiError as exc:
        assert exc.code == "order_cancelled"
    b = await assert_balanced(ctx, event_id)
    assert (b.stock_left, b.paid, b.cancelled) == (1, 1, 1)


async def test_writer_follows_open_events_and_lets_old_empty_ones_go(ctx: Context) -> None:
    open_event = await new_event(ctx)
    old_event = await new_event(ctx, starts_in_s=-7200, lasts_s=3600)
    assert await OrderWriter(ctx).live_streams() == {(open_event, 0): True, (old_event, 0): False}


async def test_has_paid_order_for_reviews(ctx: Context) -> None:
    from seckill.client import has_paid_order

    event_id = await new_event(ctx, sku="SKU-PHONE", stock=2)
    paid, _ = await _buy(ctx, event_id, ["alice", "bob"])
    await drain(ctx, event_id)
    await _pay(ctx, paid)
    assert await has_paid_order(ctx, "alice", "SKU-PHONE")
    assert not await has_paid_order(ctx, "bob", "SKU-PHONE")
    assert not await has_paid_order(ctx, "alice", "SKU-OTHER")


async def test_an_order_postgresql_refuses_is_dead_lettered_at_once_and_holds_back_nothing(
    ctx: Context,
) -> None:
    from seckill import deadletters

    event_id = await new_event(ctx, stock=10)
    stream = keys.event_keys(event_id).stream
    await _buy(ctx, event_id, ["alice"])
    # A real bad message between good ones: its seq does not fit the integer column, so the batch INSERT fails.
    bad: dict[Any, Any] = {"o": str(uuid.uuid4()), "u": "mallory", "q": "99999999999", "r": "98", "t": "0"}
    await ctx.redis.xadd(stream, bad)
    await _buy(ctx, event_id, ["bob", "carol"])
    writer = OrderWriter(ctx)
    assert await writer.step(event_id) == 3
    # Retried one by one, refused again for its own data: dead-lettered now, not after every redelivery.
    letters = await deadletters.dead_letters(ctx, [event_id])
    assert [(d.order_id, d.user_id, d.deliveries) for d in letters] == [(bad["o"], "mallory", "1")]
    assert "out of range" in letters[0].reason  # PostgreSQL's own words
    # The entries behind it are acknowledged and gone; the good orders are written exactly once.
    assert await ctx.redis.xlen(stream) == 0
    assert await OrderWriter(ctx).step(event_id) == 0 and await writer.claim(event_id) == 0
    rows = await order_rows(ctx, event_id)
    assert sorted(r["user_id"] for r in rows) == ["alice", "bob", "carol"]


async def test_a_postgresql_outage_dead_letters_no_order(
    make_settings: MakeSettings, own_postgres: PostgresServer
) -> None:
    import pytest

    from seckill import deadletters
    from seckill.worker import DatabaseUnreachable

    postgres = own_postgres
    settings = make_settings(
        PEAK_DATABASE_URL=postgres.url, PEAK_SECKILL_CLAIM_IDLE_MS="100", PEAK_SECKILL_MAX_DELIVERIES="2"
    )
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=30)
        await _buy(ctx, event_id, [f"u{i}" for i in range(30)])
        postgres.stop()
        writer = OrderWriter(ctx)
        # No message is to blame: nothing is tried one by one, nothing is dead-lettered, all stays pending.
        # (Before, every claim during the outage counted a delivery: 2 of them dead-lettered every order.)
        with pytest.raises(DatabaseUnreachable):
            await writer.step(event_id)
        for _ in range(5):
            await asyncio.sleep(0.15)
            with pytest.raises(DatabaseUnreachable):
                await writer.claim(event_id)
        assert await deadletters.dead_letters(ctx, [event_id]) == []
        postgres.start()
        await asyncio.sleep(0.15)
        assert await writer.claim(event_id) == 30
        b = await assert_balanced(ctx, event_id)
        assert (b.queued, b.pending_payment, b.dead_letters) == (0, 30, 0)

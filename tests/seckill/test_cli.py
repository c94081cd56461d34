"""`peak seckill reconcile`, `dead-letters`, `pay` and `refunds` as an operator runs them."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest

from devstack.processes import free_port
from kit.context import Context
from kit.settings import Settings
from seckill import keys, orders
from seckill.reservation import Reserver
from seckill.worker import OrderWriter
from tests.conftest import Servers
from tests.seckill.conftest import (
    PAYMENT_SECRET,
    SALE_ENV,
    MakeSettings,
    assert_balanced,
    drain,
    new_event,
    order_rows,
    orders_trigger,
    seckill_context,
)
from tests.support import kill_group, run_peak, start_peak, wait_http


async def _buy(ctx: Context, event_id: int, *users: str) -> None:
    for user in users:
        await ctx.get(Reserver).reserve(event_id, user, "10.0.0.1")


def _peak(servers: Servers, *args: str) -> tuple[int, str]:
    done = run_peak("seckill", *args, env=servers.env())
    return done.returncode, done.stdout + done.stderr


async def test_reconcile_prints_terms_and_fails_on_drift(ctx: Context, servers: Servers) -> None:
    event_id = await new_event(ctx, stock=5)
    await _buy(ctx, event_id, "a", "b", "c")
    code, out = await asyncio.to_thread(_peak, servers, "reconcile", str(event_id))
    assert code == 0, out
    for term in (
        "stock_total=5",
        "stock_left=2",
        "queued=3",
        "pending_payment=0",
        "dead_letters=0",
        "drift=0",
    ):
        assert term in out, out
    await drain(ctx, event_id)
    # The classic lost order: Redis sold it, the database does not have it.
    await ctx.db.execute("DELETE FROM seckill_orders WHERE user_id = 'b'")
    code, out = await asyncio.to_thread(_peak, servers, "reconcile")
    assert code == 1, out
    assert "pending_payment=2" in out and "drift=1" in out and "DRIFT" in out
    # Stock appearing in Redis from nowhere is drift too.
    await ctx.redis.hincrby(keys.event_keys(event_id).meta, "stock", 1)
    code, out = await asyncio.to_thread(_peak, servers, "reconcile", str(event_id))
    assert code == 1 and "drift=0" in out  # 1 lost order + 1 phantom item cancel out in the sum ...
    assert "1 reservation(s) are neither queued" in out and "stock total 5" in out  # ... not in these
    code, out = await asyncio.to_thread(_peak, servers, "reconcile", "999")
    assert code == 1 and "no sale event 999" in out and "Traceback" not in out


async def test_dead_letters_are_listed_and_retried(make_settings: MakeSettings, servers: Servers) -> None:
    settings: Settings = make_settings(PEAK_SECKILL_CLAIM_IDLE_MS="100", PEAK_SECKILL_MAX_DELIVERIES="1")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=5)
        async with orders_trigger(ctx, "RAISE EXCEPTION 'warehouse system offline';"):
            await _buy(ctx, event_id, "a", "b")
            writer = OrderWriter(ctx)
            assert await writer.step(event_id) == 0
            await asyncio.sleep(0.15)
            await writer.claim(event_id)
        code, out = await asyncio.to_thread(_peak, servers, "dead-letters")
        assert code == 0 and "2 dead letter(s)" in out and "warehouse system offline" in out, out
        ref = next(line.split()[0] for line in out.splitlines() if f"{event_id}:" in line)
        code, out = await asyncio.to_thread(_peak, servers, "dead-letters", "--retry", ref)
        assert code == 0 and "back on its order stream" in out, out
        code, out = await asyncio.to_thread(_peak, servers, "dead-letters", "--retry", ref)
        assert code == 1 and "no dead letter" in out
        code, out = await asyncio.to_thread(
            _peak, servers, "dead-letters", "--retry-all", "--event", str(event_id)
        )
        assert code == 0 and "1 dead letter(s) back" in out, out
        await drain(ctx, event_id, writer)
        code, out = await asyncio.to_thread(_peak, servers, "reconcile", str(event_id))
        assert code == 0 and "pending_payment=2" in out and "dead_letters=0" in out, out


async def test_dead_letters_of_a_stock_bucket_are_named_by_bucket(
    make_settings: MakeSettings, servers: Servers
) -> None:
    from seckill.buckets import home_bucket

    settings: Settings = make_settings(PEAK_SECKILL_CLAIM_IDLE_MS="100", PEAK_SECKILL_MAX_DELIVERIES="1")
    async with seckill_context(settings) as ctx:
        event_id = await new_event(ctx, stock=4, buckets=2)
        user = next(f"u{i}" for i in range(100) if home_bucket(f"u{i}", 2) == 1)
        async with orders_trigger(ctx, "RAISE EXCEPTION 'warehouse system offline';"):
            await _buy(ctx, event_id, user)
            writer = OrderWriter(ctx)
            assert await writer.step(event_id, bucket=1) == 0
            await asyncio.sleep(0.15)
            await writer.claim(event_id, bucket=1)
        code, out = await asyncio.to_thread(_peak, servers, "dead-letters", "--event", str(event_id))
        assert code == 0 and "1 dead letter(s)" in out and f"{event_id}/1:" in out, out
        ref = next(line.split()[0] for line in out.splitlines() if f"{event_id}/1:" in line)
        code, out = await asyncio.to_thread(_peak, servers, "reconcile", str(event_id))
        assert code == 0 and "dead_letters=1" in out and "stock_left=3" in out, out
        code, out = await asyncio.to_thread(_peak, servers, "dead-letters", "--retry", ref)
        assert code == 0 and "back on its order stream" in out, out
        await drain(ctx, event_id, writer)
        code, out = await asyncio.to_thread(_peak, servers, "reconcile", str(event_id))
        assert code == 0 and "pending_payment=1" in out and "dead_letters=0" in out, out


@pytest.mark.slow
async def test_pay_signs_a_callback_and_refunds_lists_what_is_due(
    make_settings: MakeSettings, servers: Servers, tmp_path: Path
) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    serve_env = {**servers.env(), **SALE_ENV, "PEAK_PORT": str(port), "PEAK_WORKERS": "1"}
    env = {**servers.env(), "PEAK_PAYMENT_SECRET": PAYMENT_SECRET, "PEAK_PUBLIC_URL": api}

    def peak(*args: str, **extra: str) -> tuple[int, str]:
        done = run_peak("seckill", *args, env={**env, **extra})
        out = done.stdout + done.stderr
        assert "Traceback" not in out and PAYMENT_SECRET not in out, out
        return done.returncode, out

    # Before any server: no secret, or no API, is said plainly.
    code, out = await asyncio.to_thread(
        peak, "pay", str(uuid.uuid4()), "--amount", "1", PEAK_PAYMENT_SECRET=""
    )
    assert code == 1 and "PEAK_PAYMENT_SECRET is not set" in out, out
    code, out = await asyncio.to_thread(peak, "pay", str(uuid.uuid4()), "--amount", "1")
    assert code == 1 and f"cannot reach the API at {api}" in out, out
    code, out = await asyncio.to_thread(peak, "pay", "not-an-order")
    assert code == 1 and "is not an order id" in out, out

    settings: Settings = make_settings(**SALE_ENV)
    server = start_peak("serve", env=serve_env, log=tmp_path / "api.log")
    try:
        await asyncio.to_thread(wait_http, f"{api}/healthz")
        async with seckill_context(settings) as ctx:
            event_id = await new_event(ctx, stock=4, limit=4)
            await _buy(ctx, event_id, "alice")
            (queued,) = [str(o) for o in await ctx.redis.hkeys(keys.event_keys(event_id).queued)]
            # Still queued: the price comes from its event; the API tells the caller to come back.
            code, out = await asyncio.to_thread(peak, "pay", queued)
            assert code == 1 and "409" in out and "order_queued" in out, out
            await _buy(ctx, event_id, "bob", "carol")
            await drain(ctx, event_id)
            owners = {r["user_id"]: str(r["order_id"]) for r in await order_rows(ctx, event_id)}
            paid, short, cancelled = owners["alice"], owners["bob"], owners["carol"]

            code, first = await asyncio.to_thread(peak, "pay", paid)
            assert code == 0 and first.startswith("200 ") and '"outcome":"paid"' in first, first
            # Run again (a retried script): the same payment id, the same answer.
            code, again = await asyncio.to_thread(peak, "pay", paid)
            assert (code, again) == (0, first)
            code, out = await asyncio.to_thread(peak, "pay", paid, "--payment-id", "pay-twice")
            assert code == 1 and "order_paid" in out, out
            code, out = await asyncio.to_thread(peak, "pay", short, "--amount", "5")
            assert code == 1 and "amount_mismatch" in out, out
            await orders.cancel_order(ctx, cancelled, "carol")
            code, out = await asyncio.to_thread(peak, "pay", cancelled)
            assert code == 1 and "order_cancelled" in out, out
            code, out = await asyncio.to_thread(peak, "pay", str(uuid.uuid4()))
            assert code == 1 and "there is no order" in out, out

            code, out = await asyncio.to_thread(peak, "refunds")
            assert code == 0 and "3 refund(s) due" in out, out
            for payment_id, reason in (("pay-twice", "order_paid"), (f"ops-{short}", "amount_mismatch"),
                                       (f"ops-{cancelled}", "order_cancelled")):  # fmt: skip
                line = next(line for line in out.splitlines() if line.startswith(payment_id))
                assert f"reason={reason}" in line and f"event={event_id}" in line, line
            code, out = await asyncio.to_thread(peak, "refunds", "--done", "pay-twice")
            assert code == 0 and "marked refunded" in out, out
            code, out = await asyncio.to_thread(peak, "refunds", "--done", "pay-twice")
            assert code == 1 and "no refund due" in out, out
            code, out = await asyncio.to_thread(peak, "refunds")
            assert code == 0 and "2 refund(s) due" in out and "pay-twice" not in out, out
            b = await assert_balanced(ctx, event_id)
            assert (b.paid, b.cancelled, b.pending_payment) == (1, 1, 1)
    finally:
        kill_group(server, signal.SIGTERM)

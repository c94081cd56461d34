"""Payments: the provider's signed callback decides whether an order is paid, once per payment id.

The shopper never marks an order paid. The payment provider notifies ``POST /seckill/payments/callback``,
signed (``seckill/signature.py``); ``settle`` then decides in one PostgreSQL transaction that holds the order's
row lock, so a payment, the timeout sweeper (``FOR UPDATE SKIP LOCKED``) and the owner's cancellation (a
conditional UPDATE) are serialised and exactly one of them decides:

- the order is pending, in time and the amount is its price: it is paid;
- it was cancelled (timeout or owner), is past pay_by (cancelled now, as the sweeper would), was paid by
  another payment, or the amount is not its price: the payment is recorded ``refund_due`` and answered 409.

Every notification is recorded in ``seckill_payments`` under its payment id in the same transaction, so the
same notification sent again (providers retry until they get a 2xx) finds its record and the same answer. An
order still on its way to PostgreSQL (or dead-lettered, until ops put it back) answers 409 ``order_queued``:
nothing is recorded, and the provider retries.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from asyncpg import UniqueViolationError
from redis.exceptions import RedisError

from kit.context import Context
from kit.errors import InvalidRequest
from kit.schema import rule
from seckill import signature
from seckill.errors import (
    REFUND_REASONS,
    OrderNotFound,
    OrderQueued,
    PaymentConflict,
    PaymentsNotConfigured,
)
from seckill.events import MAX_PRICE, get_event_row, iso
from seckill.orders import parse_order_id, queued_event
from seckill.orderwatch import announce
from seckill.settings import SeckillSettings
from seckill.timeouts import give_back

__all__ = [
    "PaymentGate",
    "PaymentNotice",
    "mark_refunded",
    "order_price",
    "refunds_due",
    "settle",
]

log = logging.getLogger("peak.seckill")


@dataclass
class PaymentNotice:
    """The payment provider's notification that an order was paid (the signed body of the callback)."""

    payment_id: str = field(
        metadata=rule(
            min_length=1, max_length=128,
            description="the provider's id of this payment; a notification sent again carries the same one",
        )
    )  # fmt: skip
    order_id: str = field(metadata=rule(min_length=36, max_length=36, description="the order paid (UUID)"))
    amount: int = field(metadata=rule(min=0, max=MAX_PRICE, description="amount paid, in cents"))


class PaymentGate:
    """Verifies the callbacks' signatures with the secrets and window read once, at start."""

    def __init__(self, settings: SeckillSettings) -> None:
        self._secrets = settings.payment_secrets()
        self._tolerance_s = settings.payment_tolerance_s

    def check(self, header: str | None, body: bytes) -> None:
        if not self._secrets:
            raise PaymentsNotConfigured()
        signature.verify(header, body, self._secrets, tolerance_s=self._tolerance_s)


@dataclass(frozen=True)
class _Settled:
    record: Any
    # The order this notification found past pay_by and cancelled: its stock and quota go back after COMMIT.
    cancelled: Any = None
    # This notification changed the order (paid or cancelled it): the API processes hear of it.
    changed: bool = False


_LOCK_ORDER = """
SELECT order_id, event_id, user_id, bucket, home, status, price, pay_by > now() AS payable
FROM seckill_orders WHERE order_id = $1 FOR UPDATE
"""
_CANCEL = """
UPDATE seckill_orders SET status = 'cancelled', cancelled_at = now(), cancel_reason = 'timeout',
    giveback = 'pending'
WHERE order_id = $1 AND status = 'pending_payment'
RETURNING order_id, event_id, user_id, bucket, home
"""
_RECORD = """
INSERT INTO seckill_payments (payment_id, order_id, amount, outcome, reason) VALUES ($1, $2, $3, $4, $5)
RETURNING *
"""


async def settle(ctx: Context, notice: PaymentNotice) -> dict[str, Any]:
    """Record a verified notification and answer it: the payment (200) or the error it is recorded with."""
    order_id = _notice_order_id(notice.order_id)
    settled = None
    for attempt in range(3):
        try:
            settled = await _settle_once(ctx, order_id, notice)
        except UniqueViolationError:
            # A concurrent notification with the same payment id (for another order) recorded it first.
            continue
        if settled is not None or attempt > 0:
            break
        if await queued_event(ctx, str(order_id)) is not None:
            raise OrderQueued()
        # Not queued: either unknown, or written by a worker between the two reads (look once more).
    if settled is None:
        raise OrderNotFound("there is no such order")
    if settled.changed:
        await announce(ctx, [order_id])
    if settled.cancelled is not None:
        try:
            await give_back(ctx, [settled.cancelled])
        except (RedisError, OSError, TimeoutError) as exc:
            # Marked pending in PostgreSQL with the cancellation: the sweeper finishes it.
            log.warning("give-back of %s left to the sweeper: %s", order_id, exc)
    return _answer(settled.record, order_id, notice)


async def _settle_once(ctx: Context, order_id: uuid.UUID, notice: PaymentNotice) -> _Settled | None:
    async with ctx.db.acquire() as conn, conn.transaction():
        # The order's row lock first: a notification sent twice at once waits here for the first one, then
        # finds its record (each statement reads what was committed before it).
        order = await conn.fetchrow(_LOCK_ORDER, order_id)
        known = await conn.fetchrow("SELECT * FROM seckill_payments WHERE payment_id = $1", notice.payment_id)
        if known is not None:
            return _Settled(known)
        if order is None:
            return None
        reason: str | None = None
        cancelled = None
        paid = False
        if order["status"] == "cancelled":
            reason = "order_cancelled"
        elif order["status"] == "paid":
            reason = "order_paid"
        elif notice.amount != order["price"]:
            reason = "amount_mismatch"
        elif not order["payable"]:
            # Past pay_by, not swept yet: the timeout wins, exactly as the sweeper would have decided.
            cancelled = await conn.fetchrow(_CANCEL, order_id)
            reason = "order_cancelled"
        else:
            await conn.execute(
                "UPDATE seckill_orders SET status = 'paid', paid_at = now() WHERE order_id = $1", order_id
            )
            paid = True
        record = await conn.fetchrow(
            _RECORD,
            notice.payment_id,
            order_id,
            notice.amount,
            "paid" if reason is None else "refund_due",
            reason,
        )
        return _Settled(record, cancelled, paid or cancelled is not None)


_REFUND_MESSAGES = {
    "order_cancelled": "the order was cancelled before this payment arrived; the payment is recorded for a refund",
    "order_paid": "the order is paid by another payment; this payment is recorded for a refund",
    "amount_mismatch": "the amount paid is not the order's price; the payment is recorded for a refund",
}


def _answer(record: Any, order_id: uuid.UUID, notice: PaymentNotice) -> dict[str, Any]:
    if record["order_id"] != order_id or record["amount"] != notice.amount:
        raise PaymentConflict(f"payment {notice.payment_id!r} was recorded for another order or amount")
    if record["outcome"] == "refund_due":
        raise REFUND_REASONS[record["reason"]](_REFUND_MESSAGES[record["reason"]])
    return {
        "payment_id": record["payment_id"],
        "order_id": str(record["order_id"]),
        "amount": record["amount"],
        "outcome": record["outcome"],
        "received_at": iso(record["received_at"]),
    }


def _notice_order_id(raw: str) -> uuid.UUID:
    try:
        return parse_order_id(raw)
    except OrderNotFound:
        raise InvalidRequest("field 'order_id' must be an order id (a UUID)") from None


async def refunds_due(ctx: Context) -> list[Any]:
    """Payments recorded refund_due and not yet marked refunded, oldest first, with their order's event and user."""
    return list(
        await ctx.db.fetch(
            "SELECT p.payment_id, p.order_id, p.amount, p.reason, p.received_at, o.event_id, o.user_id"
            " FROM seckill_payments p LEFT JOIN seckill_orders o USING (order_id)"
            " WHERE p.outcome = 'refund_due' AND p.refunded_at IS NULL ORDER BY p.received_at, p.payment_id"
        )
    )


async def mark_refunded(ctx: Context, payment_id: str) -> bool:
    """Mark a refund_due payment refunded (it leaves the list); False if there is no such payment due."""
    done = await ctx.db.fetchval(
        "UPDATE seckill_payments SET refunded_at = now() WHERE payment_id = $1 AND outcome = 'refund_due'"
        " AND refunded_at IS NULL RETURNING 1",
        payment_id,
    )
    return done is not None


async def order_price(ctx: Context, raw_order_id: str) -> int | None:
    """What the order costs: from its row, or from its event while it is still queued; None if unknown."""
    order_id = parse_order_id(raw_order_id)
    price = await ctx.db.fetchval("SELECT price FROM seckill_orders WHERE order_id = $1", order_id)
    if price is not None:
        return int(price)
    event_id = await queued_event(ctx, str(order_id))
    if event_id is None:
        return None
    return int((await get_event_row(ctx, event_id))["price"])

"""Orders as their owner sees them: reading one (queued while still on its way to PostgreSQL) and cancelling
it. The order writer's side, the batch INSERT, is ``seckill/messages.py``; payment, decided by the payment
provider's callback alone, is ``seckill/payments.py``."""

from __future__ import annotations

import uuid
from typing import Any

from kit.context import Context
from seckill import keys
from seckill.errors import OrderNotFound, OrderPaid, OrderQueued
from seckill.events import iso, registered_streams
from seckill.timeouts import give_back

__all__ = ["cancel_order", "get_order", "order_view", "parse_order_id", "queued_event"]

_UUID_CHARS = frozenset("0123456789abcdefABCDEF-")
_DASHES = [8, 13, 18, 23]


def order_view(row: Any) -> dict[str, Any]:
    return {
        "order_id": str(row["order_id"]),
        "event_id": row["event_id"],
        "status": row["status"],
        "sku": row["sku"],
        "price": row["price"],
        "reserved_at": iso(row["reserved_at"]),
        "pay_by": iso(row["pay_by"]),
        "paid_at": None if row["paid_at"] is None else iso(row["paid_at"]),
        "cancelled_at": None if row["cancelled_at"] is None else iso(row["cancelled_at"]),
        "cancel_reason": row["cancel_reason"],
    }


def parse_order_id(raw: str) -> uuid.UUID:
    """An order id as shown to shoppers (8-4-4-4-12 ASCII hex); OrderNotFound for anything else. uuid.UUID
    alone takes braces, "urn:uuid:" and non-ASCII digits."""
    if len(raw) != 36 or not set(raw) <= _UUID_CHARS or [i for i, c in enumerate(raw) if c == "-"] != _DASHES:
        raise OrderNotFound()
    return uuid.UUID(raw)


async def queued_event(ctx: Context, order_id: str, user_id: str | None = None) -> int | None:
    """The event whose streams still hold this order (not yet written, or dead-lettered), if it is this
    user's (any user's with None)."""
    streams = sorted(await registered_streams(ctx))
    if not streams:
        return None
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for event_id, bucket in streams:
            k = keys.event_keys(event_id, bucket)
            pipe.hget(k.queued, order_id)
            pipe.hget(k.dead_orders, order_id)
        owners = await pipe.execute()
    for i, (event_id, _) in enumerate(streams):
        found = {owners[2 * i], owners[2 * i + 1]} - {None}
        if (user_id in found) if user_id is not None else found:
            return event_id
    return None


async def get_order(ctx: Context, order_id: str, user_id: str) -> dict[str, Any]:
    key = parse_order_id(order_id)
    # Twice: a worker may commit the order (and stop listing it as queued) between the first read and the
    # queue lookup; a shopper polling right then must not be told the order does not exist.
    for _ in range(2):
        row = await ctx.db.fetchrow("SELECT * FROM seckill_orders WHERE order_id = $1", key)
        if row is not None:
            if row["user_id"] != user_id:
                raise OrderNotFound()
            return order_view(row)
        event_id = await queued_event(ctx, str(key), user_id)
        if event_id is not None:
            return {"order_id": str(key), "event_id": event_id, "status": "queued", "pay_by": None}
    raise OrderNotFound()


async def _decided(ctx: Context, key: uuid.UUID, user_id: str) -> Any:
    row = await ctx.db.fetchrow("SELECT * FROM seckill_orders WHERE order_id = $1", key)
    if row is None or row["user_id"] != user_id:
        if row is None and await queued_event(ctx, str(key), user_id) is not None:
            raise OrderQueued()
        raise OrderNotFound()
    return row


async def cancel_order(ctx: Context, order_id: str, user_id: str) -> dict[str, Any]:
    """Cancel an unpaid order (one conditional UPDATE: a payment holding the row lock decides first)."""
    key = parse_order_id(order_id)
    row = await ctx.db.fetchrow(
        "UPDATE seckill_orders SET status = 'cancelled', cancelled_at = now(), cancel_reason = 'owner',"
        " giveback = 'pending' WHERE order_id = $1 AND user_id = $2 AND status = 'pending_payment' RETURNING *",
        key,
        user_id,
    )
    if row is not None:
        await give_back(ctx, [row])
        return order_view(row)
    row = await _decided(ctx, key, user_id)
    if row["status"] == "paid":
        raise OrderPaid()
    return order_view(row)

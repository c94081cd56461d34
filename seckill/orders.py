"""Orders as their owner sees them: reading one (queued while still on its way to PostgreSQL), payment and
cancellation. The order writer's side, the batch INSERT, is ``seckill/messages.py``."""

from __future__ import annotations

import uuid
from typing import Any

from kit.context import Context
from seckill import keys
from seckill.errors import OrderCancelled, OrderNotFound, OrderPaid, OrderQueued
from seckill.events import iso, registered_streams
from seckill.timeouts import cancel_due, give_back

__all__ = ["cancel_order", "get_order", "order_view", "pay_order"]


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


def _uuid(order_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(order_id)
    except ValueError:
        raise OrderNotFound() from None


async def _queued_event(ctx: Context, order_id: str, user_id: str) -> int | None:
    """The event whose streams still hold this user's order (not yet written, or dead-lettered)."""
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
        if user_id in (owners[2 * i], owners[2 * i + 1]):
            return event_id
    return None


async def get_order(ctx: Context, order_id: str, user_id: str) -> dict[str, Any]:
    key = _uuid(order_id)
    # Twice: a worker may commit the order (and stop listing it as queued) between the first read and the
    # queue lookup; a shopper polling right then must not be told the order does not exist.
    for _ in range(2):
        row = await ctx.db.fetchrow("SELECT * FROM seckill_orders WHERE order_id = $1", key)
        if row is not None:
            if row["user_id"] != user_id:
                raise OrderNotFound()
            return order_view(row)
        event_id = await _queued_event(ctx, str(key), user_id)
        if event_id is not None:
            return {"order_id": str(key), "event_id": event_id, "status": "queued", "pay_by": None}
    raise OrderNotFound()


async def _decided(ctx: Context, key: uuid.UUID, user_id: str | None) -> Any:
    row = await ctx.db.fetchrow("SELECT * FROM seckill_orders WHERE order_id = $1", key)
    if row is None or (user_id is not None and row["user_id"] != user_id):
        if row is None and user_id is not None and await _queued_event(ctx, str(key), user_id) is not None:
            raise OrderQueued()
        raise OrderNotFound()
    return row


async def pay_order(ctx: Context, order_id: str, user_id: str | None) -> dict[str, Any]:
    """Confirm payment (the owner, or a payment callback with user_id None). Paying twice is harmless."""
    key = _uuid(order_id)
    row = await ctx.db.fetchrow(
        "UPDATE seckill_orders SET status = 'paid', paid_at = now() WHERE order_id = $1"
        " AND ($2::text IS NULL OR user_id = $2) AND status = 'pending_payment' AND pay_by > now() RETURNING *",
        key,
        user_id,
    )
    if row is not None:
        return order_view(row)
    row = await _decided(ctx, key, user_id)
    if row["status"] == "paid":
        return order_view(row)
    if row["status"] == "pending_payment":
        # Past pay_by but not swept yet: cancel it now, so the answer and the stock agree.
        await cancel_due(ctx, [str(key)])
    raise OrderCancelled()


async def cancel_order(ctx: Context, order_id: str, user_id: str) -> dict[str, Any]:
    key = _uuid(order_id)
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

"""Orders as their owner sees them: reading one (queued while still on its way to PostgreSQL) and cancelling
it. The order writer's side, the batch INSERT, is ``seckill/messages.py``; payment, decided by the payment
provider's callback alone, is ``seckill/payments.py``."""

from __future__ import annotations

import uuid
from typing import Any

from kit.context import Context
from kit.responses import loads
from seckill.errors import OrderNotFound, OrderPaid, OrderQueued
from seckill.orderfind import BucketCounts, find_queued, order_view
from seckill.orderwatch import OrderWatch, announce, parse_order_id
from seckill.timeouts import give_back

__all__ = ["cancel_order", "get_order", "order_view", "parse_order_id", "queued_event"]


async def queued_event(ctx: Context, order_id: str, user_id: str | None = None) -> int | None:
    """The event whose streams still hold this order (not yet written, or dead-lettered), if it is this
    user's (any user's with None)."""
    found = await find_queued(ctx, parse_order_id(order_id), BucketCounts())
    if found is None or (user_id is not None and found[1] != user_id):
        return None
    return found[0]


async def get_order(ctx: Context, order_id: str, user_id: str) -> dict[str, Any]:
    """The order as its owner sees it (``seckill/orderwatch.py``: from memory while nothing changed)."""
    known = await ctx.get(OrderWatch).get(order_id, user_id)
    view: dict[str, Any] = loads(known.body)
    return view


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
        await announce(ctx, [key])
        await give_back(ctx, [row])
        return order_view(row)
    row = await _decided(ctx, key, user_id)
    if row["status"] == "paid":
        raise OrderPaid()
    return order_view(row)

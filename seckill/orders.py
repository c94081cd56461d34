"""Orders in PostgreSQL: the batch insert of the order writer, the owner's view, payment and cancellation."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from asyncpg import UniqueViolationError

from kit.context import Context
from kit.db import Connection
from seckill import keys
from seckill.errors import order_cancelled, order_not_found, order_paid, order_queued
from seckill.events import iso, registered_streams
from seckill.timeouts import cancel_due, give_back

__all__ = ["cancel_order", "get_order", "insert_orders", "order_view", "pay_order"]


# The order stream's fields (lua/seckill_reserve.lua, lua/seckill_take.lua): o order id, u user id, q the user's
# n-th reservation, r the event's n-th reservation, t reserved at (ms), and for bucketed events b the stock
# bucket and h the user's home bucket. PostgreSQL reads the batch as one JSON document: the writer hands the
# messages over as Redis gave them, and the parsing and checking of every field happens in C, in one place.
_INSERT = """
INSERT INTO seckill_orders (order_id, event_id, user_id, seq, rsv, sku, price, reserved_at, pay_by, bucket, home)
SELECT m.o, e.id, m.u, m.q, m.r, e.sku, e.price, to_timestamp(m.t / 1000.0),
       now() + make_interval(secs => e.payment_timeout_s), coalesce(m.b, 0), coalesce(m.h, 0)
FROM json_to_recordset($2::json) AS m(o uuid, u text, q int, r bigint, t bigint, b smallint, h smallint)
JOIN seckill_events e ON e.id = $1
"""


async def insert_orders(conn: Connection, event_id: int, batch: Sequence[Mapping[str, str]]) -> set[str]:
    """Insert a batch of order messages; return the order ids now stored. Each statement is its own
    transaction (call this outside one), so a batch is stored whole or not at all.

    A plain INSERT first: a batch almost never holds an order stored before, and ON CONFLICT's speculative
    insertion costs PostgreSQL a quarter more per row. When one does (a writer died between COMMIT and
    acknowledging, and the batch is redelivered), ON CONFLICT DO NOTHING stores the rest. An order still
    missing then collided with a different order on (event, user, seq): it is not acknowledged and ends as a
    dead letter. A malformed message fails the whole batch (the caller then writes its orders one by one).
    """
    ids = [m["o"] for m in batch]
    try:
        # The pool's json codec (kit/db.py) renders the batch with orjson.
        status = await conn.execute(_INSERT, event_id, batch)
    except UniqueViolationError:
        status = await conn.execute(_INSERT + "ON CONFLICT DO NOTHING", event_id, batch)
    if int(status.rsplit(" ", 1)[1]) == len(ids):
        return set(ids)
    if await conn.fetchval("SELECT 1 FROM seckill_events WHERE id = $1", event_id) is None:
        raise LookupError(f"event {event_id} is not in PostgreSQL")
    rows = await conn.fetch(
        "SELECT order_id::text FROM seckill_orders WHERE order_id = ANY($1::uuid[]) AND event_id = $2",
        ids,
        event_id,
    )
    return {r[0] for r in rows}


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
        raise order_not_found() from None


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
                raise order_not_found()
            return order_view(row)
        event_id = await _queued_event(ctx, str(key), user_id)
        if event_id is not None:
            return {"order_id": str(key), "event_id": event_id, "status": "queued", "pay_by": None}
    raise order_not_found()


async def _decided(ctx: Context, key: uuid.UUID, user_id: str | None) -> Any:
    row = await ctx.db.fetchrow("SELECT * FROM seckill_orders WHERE order_id = $1", key)
    if row is None or (user_id is not None and row["user_id"] != user_id):
        if row is None and user_id is not None and await _queued_event(ctx, str(key), user_id) is not None:
            raise order_queued()
        raise order_not_found()
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
    raise order_cancelled()


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
        raise order_paid()
    return order_view(row)

"""Sale events: stored in PostgreSQL, warmed into Redis before the creation is answered; shoppers read them
through the event cache (``seckill/eventcache.py``)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from kit.context import Context
from kit.errors import InvalidRequest
from kit.params import ascii_int
from kit.schema import rule
from seckill import keys, refs, scripts
from seckill.buckets import MAX_BUCKETS, split
from seckill.errors import EventNotFound
from seckill.eventcache import EventCache

__all__ = [
    "MAX_PRICE",
    "MAX_STOCK",
    "EventPatch",
    "NewEvent",
    "add_stock_or_move_end",
    "create_event",
    "event_id_of",
    "from_ms",
    "get_event_row",
    "iso",
    "registered_streams",
]


# Bounds of the columns (migrations 0001, 0002): the price is a bigint, an event's stock ever put on sale (its
# creation plus every addition) an integer, kept far below 2**31 so that no addition can overflow it.
MAX_PRICE = 10**12
MAX_STOCK = 100_000_000
# Migration 0005 allows up to 600 s; the API one minute.
MAX_SPREAD_MS = 60_000
_MAX_ID_DIGITS = 18


@dataclass
class NewEvent:
    sku: str = field(metadata=rule(min_length=1, max_length=64))
    title: str = field(metadata=rule(min_length=1, max_length=200))
    price: int = field(metadata=rule(min=0, max=MAX_PRICE, description="price in cents"))
    stock: int = field(metadata=rule(min=0, max=MAX_STOCK))
    # kit.schema reads them (ISO 8601 with a time zone, within the years every store can hold) into UTC.
    starts_at: dt.datetime = field(metadata=rule(description="ISO 8601 with a time zone"))
    ends_at: dt.datetime = field(metadata=rule(description="ISO 8601 with a time zone"))
    per_user_limit: int = field(default=1, metadata=rule(min=1, max=10_000))
    payment_timeout_s: int = field(default=900, metadata=rule(min=1, max=7 * 86400))
    buckets: int = field(
        default=1,
        metadata=rule(
            min=1, max=MAX_BUCKETS,
            description="stock buckets: split a hot SKU's stock over several Redis Cluster slots (1 = one)",
        ),
    )  # fmt: skip
    ticket_required: bool = field(
        default=True,
        metadata=rule(description="purchases need X-Purchase-Ticket (GET /seckill/events/{id}/ticket)"),
    )
    admission_spread_ms: int = field(
        default=0,
        metadata=rule(
            min=0, max=MAX_SPREAD_MS,
            description="spread the shoppers' admission times over the sale's first milliseconds (tickets)",
        ),
    )  # fmt: skip


@dataclass
class EventPatch:
    """Add stock during the sale and/or move the end time."""

    add_stock: int | None = field(
        default=None,
        metadata=rule(min=1, max=MAX_STOCK, description=f"the event's stock may reach {MAX_STOCK} at most"),
    )
    ends_at: dt.datetime | None = field(default=None, metadata=rule(description="ISO 8601 with a time zone"))


def event_id_of(raw: str) -> int:
    """An event id from a path: ASCII digits only ("²".isdigit() is true, and int() refuses it)."""
    value = ascii_int(raw, max_digits=_MAX_ID_DIGITS)
    if value is None:
        raise EventNotFound(raw[: _MAX_ID_DIGITS + 2])
    return value


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _public(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "sku": row["sku"],
        "title": row["title"],
        "price": row["price"],
        "stock": row["stock"],
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "per_user_limit": row["per_user_limit"],
        "payment_timeout_s": row["payment_timeout_s"],
        "buckets": row["buckets"],
        "ticket_required": row["ticket_required"],
        "admission_spread_ms": row["admission_spread_ms"],
    }


async def create_event(ctx: Context, new: NewEvent) -> dict[str, Any]:
    starts_at, ends_at = new.starts_at, new.ends_at
    if ends_at <= starts_at:
        raise InvalidRequest("field 'ends_at' must be after 'starts_at'")
    async with ctx.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO seckill_events (sku, title, price, stock, starts_at, ends_at, per_user_limit,"
            " payment_timeout_s, buckets, ticket_required, admission_spread_ms)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
            new.sku, new.title, new.price, new.stock, starts_at, ends_at, new.per_user_limit,
            new.payment_timeout_s, new.buckets, new.ticket_required, new.admission_spread_ms,
        )  # fmt: skip
        assert row is not None
        # The event's own ticket secret, in Redis only; view.lua withholds it until the sale starts.
        secret = secrets.token_bytes(32)
        # Warmed inside the transaction: if Redis fails the event does not exist anywhere; the identity
        # sequence never hands the id out again, so a commit failure after this leaves nothing reachable.
        for bucket, share in enumerate(split(new.stock, new.buckets)):
            k = keys.event_keys(row["id"], bucket)
            await scripts.prewarm(
                ctx.redis, k, sku=new.sku, title=new.title, price=new.price, stock=share,
                start_ms=_ms(starts_at), end_ms=_ms(ends_at), per_user_limit=new.per_user_limit,
                payment_timeout_s=new.payment_timeout_s, buckets=new.buckets,
                ticket_required=new.ticket_required, spread_ms=new.admission_spread_ms, secret=secret,
            )  # fmt: skip
            await ctx.redis.sadd(keys.EVENTS, refs.stream_member(row["id"], bucket))
        await ctx.redis.zadd(keys.LAST_EVENT_ID, {"id": row["id"]}, gt=True)
    # Every process's event cache forgets that it did not know this id (and raises its highest id).
    cache = ctx.find(EventCache)
    if cache is not None:
        cache.created(row["id"])
    await ctx.redis.publish(keys.STOCK_BACK_CHANNEL, row["id"])
    return _public(row)


async def add_stock_or_move_end(ctx: Context, event_id: int, patch: EventPatch) -> dict[str, Any]:
    if patch.add_stock is None and patch.ends_at is None:
        raise InvalidRequest("give 'add_stock', 'ends_at' or both")
    ends_at = patch.ends_at
    async with ctx.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM seckill_events WHERE id = $1 FOR UPDATE", event_id)
        if row is None:
            raise EventNotFound(event_id)
        if ends_at is not None and ends_at <= row["starts_at"]:
            raise InvalidRequest("field 'ends_at' must be after the event's start")
        if row["stock"] + (patch.add_stock or 0) > MAX_STOCK:
            raise InvalidRequest(
                f"field 'add_stock': the event has {row['stock']} items; it may have {MAX_STOCK} at most"
            )
        row = await conn.fetchrow(
            "UPDATE seckill_events SET stock = stock + $2, ends_at = coalesce($3, ends_at), updated_at = now()"
            " WHERE id = $1 RETURNING *",
            event_id,
            patch.add_stock or 0,
            ends_at,
        )
        assert row is not None
        # The addition is split over the buckets like the stock at creation; each bucket applies its part once.
        change = uuid.uuid4().hex
        end_ms = None if ends_at is None else _ms(ends_at)
        for bucket, share in enumerate(split(patch.add_stock or 0, row["buckets"])):
            await scripts.adjust(
                ctx.redis, keys.event_keys(event_id, bucket), add_stock=share, end_ms=end_ms, change_id=change
            )
    # This process reads the change back at once; the others hear adjust.lua's message.
    cache = ctx.find(EventCache)
    if cache is not None:
        cache.forget(event_id)
    return _public(row)


async def registered_streams(ctx: Context) -> set[tuple[int, int]]:
    """(event id, bucket) of every order stream in the registry."""
    found = (refs.parse_stream_member(str(m)) for m in await ctx.redis.smembers(keys.EVENTS))
    return {stream for stream in found if stream is not None}


async def get_event_row(ctx: Context, event_id: int) -> Any:
    row = await ctx.db.fetchrow("SELECT * FROM seckill_events WHERE id = $1", event_id)
    if row is None:
        raise EventNotFound(event_id)
    return row

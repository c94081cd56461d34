"""Sale events: stored in PostgreSQL, then warmed into Redis (``seckill/outbox.py``: a change is committed
before Redis sees it) before the creation is answered; shoppers read them through the event cache
(``seckill/eventcache.py``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from kit.context import Context
from kit.errors import InvalidRequest
from kit.params import ascii_int
from kit.schema import rule
from seckill import keys, outbox, refs
from seckill.buckets import MAX_BUCKETS
from seckill.errors import ChangePending, EventNotFound, IdempotencyKeyReused
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
    "record_creation",
    "record_patch",
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


async def create_event(ctx: Context, new: NewEvent, idempotency_key: str | None = None) -> dict[str, Any]:
    """Record the event and its creation (committed), then warm Redis: ChangePending (503) when Redis could not
    be reached, and the outbox warms it later. The same ``idempotency_key`` again answers the same event."""
    row, _ = await record_creation(ctx, new, idempotency_key)
    await _apply(ctx, row["id"], "the creation")
    # Every process's event cache forgets that it did not know this id (the outbox's message); here at once.
    cache = ctx.find(EventCache)
    if cache is not None:
        cache.created(row["id"])
    return _public(row)


async def record_creation(
    ctx: Context, new: NewEvent, idempotency_key: str | None = None
) -> tuple[Any, outbox.Change]:
    """The event's row and its creation recorded and committed (or those a key already names); nothing in
    Redis yet (not purchasable)."""
    if new.ends_at <= new.starts_at:
        raise InvalidRequest("field 'ends_at' must be after 'starts_at'")
    if idempotency_key is not None:
        found = await outbox.keyed(ctx.db, "create", idempotency_key)
        if found is not None:
            return _replay(found, _creation_of(found[0]) == _creation(new))
    try:
        async with ctx.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO seckill_events (sku, title, price, stock, starts_at, ends_at, per_user_limit,"
                " payment_timeout_s, buckets, ticket_required, admission_spread_ms)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
                new.sku, new.title, new.price, new.stock, new.starts_at, new.ends_at, new.per_user_limit,
                new.payment_timeout_s, new.buckets, new.ticket_required, new.admission_spread_ms,
            )  # fmt: skip
            assert row is not None
            change = await outbox.record(
                conn, row["id"], "create", new.stock, new.ends_at, idempotency_key=idempotency_key
            )
    except asyncpg.UniqueViolationError:
        # The same key in a request running at the same time, which committed first: its event is the answer.
        found = None if idempotency_key is None else await outbox.keyed(ctx.db, "create", idempotency_key)
        if found is None:
            raise
        return _replay(found, _creation_of(found[0]) == _creation(new))
    return row, change


def _creation(new: NewEvent) -> tuple[Any, ...]:
    return (new.sku, new.title, new.price, new.stock, new.starts_at, new.ends_at, new.per_user_limit,
            new.payment_timeout_s, new.buckets, new.ticket_required, new.admission_spread_ms)  # fmt: skip


def _creation_of(row: Any) -> tuple[Any, ...]:
    """What the creation a key names asked for: its row's fixed fields, the stock and end it was made with."""
    return (row["sku"], row["title"], row["price"], row["change_stock"], row["starts_at"], row["change_ends_at"],
            row["per_user_limit"], row["payment_timeout_s"], row["buckets"], row["ticket_required"],
            row["admission_spread_ms"])  # fmt: skip


def _replay(found: tuple[Any, outbox.Change], same: bool) -> tuple[Any, outbox.Change]:
    """The change an Idempotency-Key names, when this request asks for the same change."""
    if not same:
        raise IdempotencyKeyReused(found[1].event_id)
    return found


async def add_stock_or_move_end(
    ctx: Context, event_id: int, patch: EventPatch, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Record the change with the event's row (committed), then apply it to every bucket once: ChangePending
    (503) when Redis could not be reached, and the outbox applies it later, never twice. The same
    ``idempotency_key`` again makes no second change (it answers the event as it is)."""
    row, _ = await record_patch(ctx, event_id, patch, idempotency_key)
    await _apply(ctx, event_id, "the change")
    # This process reads the change back at once; the others hear adjust.lua's message.
    cache = ctx.find(EventCache)
    if cache is not None:
        cache.forget(event_id)
    return _public(row)


async def record_patch(
    ctx: Context, event_id: int, patch: EventPatch, idempotency_key: str | None = None
) -> tuple[Any, outbox.Change]:
    """The event's row updated and the change recorded, committed (or those a key already names); nothing in
    Redis yet."""
    if patch.add_stock is None and patch.ends_at is None:
        raise InvalidRequest("give 'add_stock', 'ends_at' or both")
    ends_at = patch.ends_at
    async with ctx.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM seckill_events WHERE id = $1 FOR UPDATE", event_id)
        if row is None:
            raise EventNotFound(event_id)
        if idempotency_key is not None:
            # Under the row's lock: a request with the same key waits here for the first one's commit.
            found = await outbox.keyed(conn, "adjust", idempotency_key, event_id)
            if found is not None:
                asked = (found[0]["change_stock"], found[0]["change_ends_at"])
                return _replay(found, asked == (patch.add_stock or 0, ends_at))
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
        change = await outbox.record(
            conn, event_id, "adjust", patch.add_stock or 0, ends_at, idempotency_key=idempotency_key
        )
    return row, change


async def _apply(ctx: Context, event_id: int, what: str) -> None:
    try:
        await outbox.apply_event(ctx, event_id)
    except (RedisError, EventNotFound) as exc:
        # Committed: the outbox finishes it. EventNotFound: Redis lost the event (it is re-derived), not the row.
        raise ChangePending(event_id, what) from exc


async def registered_streams(ctx: Context) -> set[tuple[int, int]]:
    """(event id, bucket) of every order stream in the registry."""
    found = (refs.parse_stream_member(str(m)) for m in await ctx.redis.smembers(keys.EVENTS))
    return {stream for stream in found if stream is not None}


async def get_event_row(ctx: Context, event_id: int) -> Any:
    row = await ctx.db.fetchrow("SELECT * FROM seckill_events WHERE id = $1", event_id)
    if row is None:
        raise EventNotFound(event_id)
    return row

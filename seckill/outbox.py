"""Admin changes of sale events, applied to both stores or to neither: recorded in PostgreSQL first, then
applied to Redis by their change id, then marked applied (an outbox).

``seckill/events.py`` records a creation or a PATCH (``record``) in the transaction that writes the event's row,
commits, and applies it at once (``apply_event``). Redis never holds what PostgreSQL does not: an event is
purchasable only once its row is committed. Each bucket remembers the change ids it applied (``prewarm.lua``,
``adjust.lua``), so applying a change again, whole or after a failure half-way, changes nothing: a PATCH adds
its stock once. A change that the API could not apply (Redis down) or left half done (the process died) is
finished by the workers' ``outbox_loop`` once it is ``PEAK_SECKILL_OUTBOX_AGE_S`` old. The changes of one event
are applied in the order they were recorded (a creation before the PATCHes that follow it); one event whose
change cannot be applied never holds up the others.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from redis.exceptions import RedisError

from kit.context import Context
from kit.db import Connection, Pool
from kit.errors import POSTGRES_OUTAGES, REDIS_OUTAGES
from kit.outage import Outage
from seckill import keys, refs, scripts
from seckill.buckets import split
from seckill.errors import EventNotFound
from seckill.settings import SeckillSettings

__all__ = [
    "Change",
    "apply_event",
    "change_tag",
    "finish_pending",
    "keyed",
    "outbox_loop",
    "reapply_adjustments",
    "record",
]

log = logging.getLogger("seckill.outbox")

_ERROR_MAX = 500
_MARK_FAILURES: tuple[type[BaseException], ...] = (*POSTGRES_OUTAGES, asyncpg.PostgresError)

_CHANGES = (
    "SELECT c.id AS change_id, c.event_id, c.kind, c.stock AS change_stock, c.ends_at AS change_ends_at,"
    " e.sku, e.title, e.price, e.starts_at, e.ends_at, e.per_user_limit, e.payment_timeout_s, e.buckets,"
    " e.ticket_required, e.admission_spread_ms"
    " FROM seckill_event_changes c JOIN seckill_events e ON e.id = c.event_id WHERE c.event_id = $1"
)
_PENDING = _CHANGES + " AND c.applied_at IS NULL ORDER BY c.id"
_ADJUSTMENTS = _CHANGES + " AND c.kind = 'adjust' ORDER BY c.id"


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    event_id: int
    kind: Literal["create", "adjust"]


async def record(
    conn: Connection,
    event_id: int,
    kind: Literal["create", "adjust"],
    stock: int,
    ends_at: Any = None,
    idempotency_key: str | None = None,
) -> Change:
    """Record a change in the caller's transaction (the one writing the event's row): applied after COMMIT.
    A key already used for this kind (and event, for a PATCH) raises UniqueViolationError."""
    change_id = await conn.fetchval(
        "INSERT INTO seckill_event_changes (event_id, kind, stock, ends_at, idempotency_key)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        event_id, kind, stock, ends_at, idempotency_key,
    )  # fmt: skip
    return Change(int(change_id), event_id, kind)


async def keyed(
    conn: Connection | Pool, kind: Literal["create", "adjust"], key: str, event_id: int | None = None
) -> tuple[Any, Change] | None:
    """The event's row (as it is now, with the change's ``change_stock`` and ``change_ends_at``) and the change
    an Idempotency-Key already names, or None: a PATCH's key is the event's own, a creation's is global."""
    row = await conn.fetchrow(
        "SELECT c.id AS change_id, c.stock AS change_stock, c.ends_at AS change_ends_at, e.*"
        " FROM seckill_event_changes c JOIN seckill_events e ON e.id = c.event_id"
        " WHERE c.kind = $1 AND c.idempotency_key = $2 AND ($3::bigint IS NULL OR c.event_id = $3)",
        kind, key, event_id,
    )  # fmt: skip
    return None if row is None else (row, Change(int(row["change_id"]), int(row["id"]), kind))


def change_tag(change_id: int) -> str:
    """The change's id as the buckets remember it (``<tag>:changes``)."""
    return f"c{change_id}"


async def apply_event(ctx: Context, event_id: int) -> int:
    """Apply every change of the event not yet applied, oldest first, and mark each applied; how many. Raises
    the Redis error (nothing is marked past it), or EventNotFound when Redis has no such event for a PATCH."""
    rows = await ctx.db.fetch(_PENDING, event_id)
    for row in rows:
        await _apply(ctx, row)
        try:
            await ctx.db.execute(
                "UPDATE seckill_event_changes SET applied_at = now() WHERE id = $1 AND applied_at IS NULL",
                row["change_id"],
            )
        except _MARK_FAILURES as exc:
            # Applied in Redis; the outbox applies it again (nothing changes) and marks it later.
            log.warning("change %d of event %d applied to Redis, not marked yet: %s", row["change_id"], event_id,
                        type(exc).__name__)  # fmt: skip
    return len(rows)


async def reapply_adjustments(ctx: Context, event_id: int) -> int:
    """Apply again every recorded PATCH of the event, applied or not, oldest first; how many. For a Redis that
    lost writes (a failover): each bucket applies only the change ids it does not remember, so what it kept
    changes nothing and what it lost comes back. Creations are not replayed (a bucket warmed again would forget
    the orders it sold). EventNotFound when Redis has no such event."""
    rows = await ctx.db.fetch(_ADJUSTMENTS, event_id)
    for row in rows:
        await _apply(ctx, row)
    return len(rows)


async def _apply(ctx: Context, row: Any) -> None:
    event_id, tag = row["event_id"], change_tag(row["change_id"])
    if row["kind"] == "create":
        await _warm(ctx, row, tag)
        return
    end_ms = None if row["change_ends_at"] is None else _ms(row["change_ends_at"])
    for bucket, share in enumerate(split(row["change_stock"], row["buckets"])):
        await scripts.adjust(
            ctx.redis, keys.event_keys(event_id, bucket), add_stock=share, end_ms=end_ms, change_id=tag
        )


async def _warm(ctx: Context, row: Any, tag: str) -> None:
    event_id = row["event_id"]
    # The event's own ticket secret, in Redis only (view.lua withholds it until the sale starts). Only bucket 0
    # keeps it and a warm bucket is never overwritten, so a second apply's new secret is never used.
    secret = secrets.token_bytes(32)
    shares = list(enumerate(split(row["change_stock"], row["buckets"])))
    # Bucket 0 last: the event view (and so every purchase) reads bucket 0 first, so nobody buys before every
    # bucket is warm.
    for bucket, share in reversed(shares):
        await scripts.prewarm(
            ctx.redis, keys.event_keys(event_id, bucket), sku=row["sku"], title=row["title"],
            price=row["price"], stock=share, start_ms=_ms(row["starts_at"]), end_ms=_ms(row["ends_at"]),
            per_user_limit=row["per_user_limit"], payment_timeout_s=row["payment_timeout_s"],
            buckets=row["buckets"], ticket_required=row["ticket_required"],
            spread_ms=row["admission_spread_ms"], secret=secret, change_id=tag,
        )  # fmt: skip
    await ctx.redis.sadd(keys.EVENTS, *(refs.stream_member(event_id, bucket) for bucket, _ in shares))
    await ctx.redis.zadd(keys.LAST_EVENT_ID, {"id": event_id}, gt=True)
    # Every process's event cache forgets that it did not know this id (and raises its highest id).
    await ctx.redis.publish(keys.STOCK_BACK_CHANNEL, event_id)


async def finish_pending(ctx: Context, *, older_than_s: float) -> int:
    """Apply the changes recorded at least ``older_than_s`` ago and not applied yet; how many were applied.
    An event whose change Redis refuses is recorded (attempts, last error) and passed over; Redis or
    PostgreSQL out of reach ends the pass (raised)."""
    due = await ctx.db.fetch(
        "SELECT DISTINCT event_id FROM seckill_event_changes"
        " WHERE applied_at IS NULL AND created_at <= now() - make_interval(secs => $1) ORDER BY event_id",
        float(older_than_s),
    )
    applied = 0
    for row in due:
        event_id = row["event_id"]
        try:
            applied += await apply_event(ctx, event_id)
        except EventNotFound:
            await _failed(ctx, event_id, "the event is not in Redis (its state was lost): not applied")
        except RedisError as exc:
            if isinstance(exc, REDIS_OUTAGES):
                raise
            await _failed(ctx, event_id, f"Redis refused it: {type(exc).__name__}: {exc}")
    return applied


async def _failed(ctx: Context, event_id: int, reason: str) -> None:
    log.warning("admin change of event %d left pending: %s", event_id, reason)
    await ctx.db.execute(
        "UPDATE seckill_event_changes SET attempts = attempts + 1, last_error = $2"
        " WHERE id = (SELECT min(id) FROM seckill_event_changes WHERE event_id = $1 AND applied_at IS NULL)",
        event_id, reason[:_ERROR_MAX],
    )  # fmt: skip


async def outbox_loop(ctx: Context) -> None:
    """The workers' loop: every ``PEAK_SECKILL_OUTBOX_INTERVAL_S``, finish the changes an API process left."""
    settings = ctx.settings.of(SeckillSettings)
    outage = Outage(
        log, "admin-change outbox", "admin changes already recorded (events created, stock added, ends moved) are"
        " applied to Redis once it answers; nothing is lost", cap_s=ctx.settings.outage_retry_max_s,
    )  # fmt: skip

    async def step() -> None:
        applied = await finish_pending(ctx, older_than_s=settings.outbox_age_s)
        if applied:
            log.info("outbox applied %d admin changes left pending", applied)

    await outage.every(settings.outbox_interval_s, step)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000)

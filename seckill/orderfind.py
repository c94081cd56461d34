"""Where an order is: queued in Redis (found by the event and home bucket its id names) or in PostgreSQL; and
the news that orders changed.

An order is queued (or dead-lettered) in the hashes of the bucket whose stock it took: its home bucket, or for
a bucketed event whose home bucket was sold out, another bucket (``seckill/buckets.py``). All of the event's
buckets are asked in one pipeline, the home bucket first. Redis is asked before PostgreSQL: the order writer
forgets an order as queued only after its COMMIT, so an order not queued any more is in PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from kit.context import Context
from kit.redis import RedisClient
from seckill import keys
from seckill.events import iso, registered_streams
from seckill.ids import home_of

__all__ = ["BucketCounts", "find_queued", "order_view", "publish_changes", "still_queued"]

log = logging.getLogger("peak.seckill")

# Events whose bucket count a process remembers (fixed at creation); past that it starts over.
_COUNTS_KEPT = 10_000


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


class BucketCounts:
    """Event id -> its number of stock buckets, learnt from Redis once per process (only for events that exist,
    so made-up ids cannot fill it)."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def get(self, event_id: int) -> int | None:
        return self._counts.get(event_id)

    def learn(self, event_id: int, count: int) -> None:
        if len(self._counts) >= _COUNTS_KEPT:
            self._counts.clear()
        self._counts[event_id] = count


def _buckets_in_turn(home: int, count: int) -> list[int]:
    return [(home + step) % count for step in range(count)]


async def find_queued(ctx: Context, key: uuid.UUID, counts: BucketCounts) -> tuple[int, str] | None:
    """(event id, owner) of an order still queued or dead-lettered in Redis; None if it is not there. One
    round trip (two the first time a process meets a bucketed event)."""
    order_id = str(key)
    home = home_of(key)
    if home is None:
        return await _scan(ctx, order_id)
    event_id, bucket = home
    count = counts.get(event_id)
    first = [bucket] if count is None else _buckets_in_turn(bucket, count) if bucket < count else []
    if not first:
        return None  # the id names a bucket the event does not have
    async with ctx.redis.pipeline(transaction=False) as pipe:
        if count is None:
            # A one-bucket event's meta has no "buckets" field; "start_ms" tells that the event is there.
            pipe.hmget(keys.event_keys(event_id, bucket).meta, ["start_ms", "buckets"])
        for b in first:
            k = keys.event_keys(event_id, b)
            pipe.hget(k.queued, order_id)
            pipe.hget(k.dead_orders, order_id)
        replies: list[Any] = await pipe.execute()
    if count is None:
        start, learnt = replies.pop(0)
        if start is None:
            return None  # no such event in Redis (or no such bucket)
        count = int(learnt or 1)
        counts.learn(event_id, count)
    owner = next((o for o in replies if o is not None), None)
    if owner is not None:
        return event_id, str(owner)
    rest = [b for b in _buckets_in_turn(bucket, count) if b not in first]
    if not rest:
        return None
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for b in rest:
            k = keys.event_keys(event_id, b)
            pipe.hget(k.queued, order_id)
            pipe.hget(k.dead_orders, order_id)
        replies = await pipe.execute()
    owner = next((o for o in replies if o is not None), None)
    return None if owner is None else (event_id, str(owner))


async def still_queued(
    ctx: Context, order_ids: Sequence[str], counts: BucketCounts
) -> tuple[set[str], set[str]]:
    """Of these queued orders, those still queued (or dead-lettered) and those gone from Redis, in one pipeline
    of two HMGETs per bucket of each event (not per order: a recheck of 600 orders cost 20 ms of CPU with two
    HGETs each, 3 ms like this). An order whose id names no event and bucket known to this process is in neither."""
    by_event: dict[int, tuple[int, list[str]]] = {}
    for order_id in order_ids:
        home = home_of(uuid.UUID(order_id))
        count = None if home is None else counts.get(home[0])
        if home is not None and count is not None and home[1] < count:
            by_event.setdefault(home[0], (count, []))[1].append(order_id)
    if not by_event:
        return set(), set()
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for event_id, (count, ids) in by_event.items():
            for b in range(count):
                k = keys.event_keys(event_id, b)
                pipe.hmget(k.queued, ids)
                pipe.hmget(k.dead_orders, ids)
        replies: list[Any] = await pipe.execute()
    still: set[str] = set()
    at = 0
    for count, ids in by_event.values():
        for owners in replies[at : at + 2 * count]:
            still.update(o for o, owner in zip(ids, owners, strict=True) if owner is not None)
        at += 2 * count
    asked = {o for _, ids in by_event.values() for o in ids}
    return still, asked - still


async def _scan(ctx: Context, order_id: str) -> tuple[int, str] | None:
    """The order ids made before ids named their event (and those of events beyond 32 bits): every registered
    stream is asked, in one pipeline."""
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
        owner = owners[2 * i] or owners[2 * i + 1]
        if owner is not None:
            return event_id, str(owner)
    return None


async def publish_changes(redis: RedisClient, order_ids: Iterable[object], origin: str = "-") -> None:
    """Tell every API process that these orders changed (one PUBLISH of "<origin> <id>,<id>,..."; the process
    named ``origin`` has forgotten them already). A failure is logged, not raised: the change is made, and the
    caches' short lifetimes bound what a lost message costs."""
    joined = ",".join(str(o) for o in order_ids)
    if not joined:
        return
    try:
        await redis.publish(keys.ORDERS_CHANNEL, f"{origin} {joined}")
    except (RedisError, OSError) as exc:
        log.warning("order change message lost (%s); caches catch up within their lifetime", exc)

"""Cancellation and the give-back of stock and quota to Redis, exactly once per order.

A cancellation is one conditional UPDATE (``status = 'pending_payment'``), so a payment and a timeout (or the
owner) can never both win. The same UPDATE marks the give-back as pending in PostgreSQL; the Lua give-back is
idempotent per order id; only then is the give-back marked done. A sweeper that dies between the two steps
leaves pending give-backs that the next sweep applies again, and the Lua set of returned orders makes the
second application a no-op. An order of a bucketed event gives its stock back to the bucket it came from and
its quota to its user's home bucket (two idempotent calls when those differ; marked done after both).

The sweeper also settles the holds of bucketed events that their buying process left unresolved (it died
between the calls, or lost Redis for a moment): see ``seckill/buckets.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from kit.context import Context
from seckill import keys, scripts
from seckill.events import registered_streams
from seckill.orderwatch import announce
from seckill.settings import SeckillSettings

__all__ = ["cancel_due", "finish_givebacks", "give_back", "settle_stale_holds", "sweep_loop"]

log = logging.getLogger("peak.seckill")

_SWEEP_BATCH = 500
# A give-back younger than this is probably being applied right now by whoever cancelled the order.
_GIVEBACK_GRACE_S = 2.0


async def give_back(ctx: Context, rows: Iterable[Any]) -> int:
    """Return the stock and quota of cancelled orders (rows with order_id, event_id, user_id, bucket, home)."""
    by_event: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_event[row["event_id"]].append(row)
    applied = 0
    for event_id, orders in by_event.items():
        calls: dict[tuple[int, Literal["both", "stock", "quota"]], list[Any]] = defaultdict(list)
        for row in orders:
            if row["bucket"] == row["home"]:
                calls[(row["bucket"], "both")].append(row)
            else:
                calls[(row["bucket"], "stock")].append(row)
                calls[(row["home"], "quota")].append(row)
        missing = False
        for (bucket, what), some in calls.items():
            k = keys.event_keys(event_id, bucket)
            result = await scripts.give_back(
                ctx.redis, k, what, [(str(row["order_id"]), row["user_id"]) for row in some]
            )
            if result is None:
                log.error(
                    "event %d/%d is not in Redis; %d give-backs wait for it", event_id, bucket, len(some)
                )
                missing = True
            elif what != "quota":
                applied += result
        if missing:
            continue
        await ctx.db.execute(
            "UPDATE seckill_orders SET giveback = 'done' WHERE order_id = ANY($1::uuid[]) AND giveback = 'pending'",
            [row["order_id"] for row in orders],
        )
    return applied


async def cancel_due(ctx: Context, order_ids: Sequence[str] | None = None) -> int:
    """Cancel unpaid orders past pay_by (all due ones, or only those listed) and give their stock back."""
    rows = await ctx.db.fetch(
        """
        UPDATE seckill_orders SET status = 'cancelled', cancelled_at = now(), cancel_reason = 'timeout',
            giveback = 'pending'
        WHERE order_id IN (
            SELECT order_id FROM seckill_orders
            WHERE status = 'pending_payment' AND pay_by <= now()
              AND ($1::uuid[] IS NULL OR order_id = ANY($1::uuid[]))
            ORDER BY pay_by LIMIT $2 FOR UPDATE SKIP LOCKED
        ) AND status = 'pending_payment'
        RETURNING order_id, event_id, user_id, bucket, home
        """,
        order_ids,
        _SWEEP_BATCH,
    )
    if rows:
        await announce(ctx, [row["order_id"] for row in rows])
        await give_back(ctx, rows)
    return len(rows)


async def finish_givebacks(ctx: Context, *, grace_s: float = _GIVEBACK_GRACE_S) -> int:
    """Apply give-backs left pending by a process that died after cancelling (idempotent, so safe to race)."""
    rows = await ctx.db.fetch(
        "SELECT order_id, event_id, user_id, bucket, home FROM seckill_orders WHERE giveback = 'pending'"
        " AND cancelled_at <= now() - make_interval(secs => $1) ORDER BY cancelled_at LIMIT $2",
        grace_s,
        _SWEEP_BATCH,
    )
    return await give_back(ctx, rows) if rows else 0


async def settle_stale_holds(ctx: Context, *, older_than_ms: int = keys.HOLD_MS) -> int:
    """Resolve the holds older than `older_than_ms`: confirmed if a bucket took the order, else voided in
    every bucket and released (the user's quota back). Returns the holds settled."""
    bucketed = sorted({e for e, b in await registered_streams(ctx) if b > 0})
    settled = 0
    now_ms = time.time() * 1000
    for event_id in bucketed:
        buckets = int(await ctx.redis.hget(keys.event_keys(event_id).meta, "buckets") or 1)
        for home in range(buckets):
            home_keys = keys.event_keys(event_id, home)
            holds: Any = await ctx.redis.hgetall(home_keys.holds)
            for order_id, hold in holds.items():
                if now_ms - int(hold.split("\n")[2]) < older_than_ms:
                    continue
                taken = False
                for bucket in range(buckets):
                    if bucket != home:
                        taken |= await scripts.void(ctx.redis, keys.event_keys(event_id, bucket), order_id)
                how: Literal["confirm", "release"] = "confirm" if taken else "release"
                settled += await scripts.resolve_hold(ctx.redis, home_keys, how, order_id)
                log.warning("stale hold %s of event %d settled: %s", order_id, event_id, how)
    return settled


async def sweep_loop(ctx: Context) -> None:
    """`peak worker` loop: cancel what is due, finish interrupted give-backs, settle stale holds, sleep."""
    interval_s = ctx.settings.of(SeckillSettings).sweep_interval_s
    while True:
        while await cancel_due(ctx) == _SWEEP_BATCH:
            pass
        await finish_givebacks(ctx)
        await settle_stale_holds(ctx)
        await asyncio.sleep(interval_s)

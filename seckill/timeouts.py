"""Cancellation and the give-back of stock and quota to Redis, exactly once per order.

A cancellation is one conditional UPDATE (``status = 'pending_payment'``), so a payment and a timeout (or the
owner) can never both win. The same UPDATE marks the give-back as pending in PostgreSQL; the Lua give-back is
idempotent per order id; only then is the give-back marked done. A sweeper that dies between the two steps
leaves pending give-backs that the next sweep applies again, and the Lua set of returned orders makes the
second application a no-op. An order of a bucketed event gives its stock back to the bucket it came from and
its quota to its user's home bucket (two idempotent calls when those differ; marked done after both).

The sweeper also settles the holds of bucketed events that their buying process left unresolved (it died
between the calls, or lost Redis for a moment): see ``seckill/buckets.py``.

A give-back whose event Redis no longer knows (its keys deleted, expired, or lost with Redis's data) can never
be applied: it is set aside (``giveback = 'set_aside'``, migration 0008), reported (an error the first time an
event has one, ``set_aside_givebacks`` for a listing), and the give-backs behind it go on. Should the event come
back to Redis (restored, re-created), the sweeper finds it within ``_RESUME_EVERY_S`` and its set-aside
give-backs are applied then, once (``resume_set_aside``). While PostgreSQL or
Redis is out of reach the sweeper pauses (kit/outage.py) and resumes by itself; what was due is cancelled then.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from kit.context import Context
from kit.outage import Outage
from seckill import keys, scripts
from seckill.events import registered_streams
from seckill.orderwatch import announce
from seckill.settings import SeckillSettings

__all__ = [
    "cancel_due",
    "finish_givebacks",
    "give_back",
    "resume_set_aside",
    "set_aside_givebacks",
    "settle_stale_holds",
    "sweep_loop",
]

log = logging.getLogger("peak.seckill")

_SWEEP_BATCH = 500
# A give-back younger than this is probably being applied right now by whoever cancelled the order.
_GIVEBACK_GRACE_S = 2.0
# How often the sweeper looks whether an event with set-aside give-backs is known to Redis again.
_RESUME_EVERY_S = 10.0
_DONE = (
    "UPDATE seckill_orders SET giveback = 'done' WHERE order_id = ANY($1::uuid[]) AND giveback = 'pending'"
)
_SET_ASIDE = """
WITH before AS (
    SELECT count(*) AS n FROM seckill_orders WHERE event_id = $2 AND giveback = 'set_aside'
), moved AS (
    UPDATE seckill_orders SET giveback = 'set_aside' WHERE order_id = ANY($1::uuid[]) AND giveback = 'pending'
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT n FROM before) AS before
"""


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
        missing: set[Any] = set()
        gone: list[int] = []
        for (bucket, what), some in calls.items():
            k = keys.event_keys(event_id, bucket)
            result = await scripts.give_back(
                ctx.redis, k, what, [(str(row["order_id"]), row["user_id"]) for row in some]
            )
            if result is None:
                missing.update(row["order_id"] for row in some)
                gone.append(bucket)
            elif what != "quota":
                applied += result
        done = [row["order_id"] for row in orders if row["order_id"] not in missing]
        if done:
            await ctx.db.execute(_DONE, done)
        if missing:
            await _set_aside(ctx, event_id, sorted(set(gone)), list(missing))
    return applied


async def _set_aside(ctx: Context, event_id: int, buckets: list[int], order_ids: list[Any]) -> None:
    """Give-backs that can never be applied, out of the way of the ones behind them; an error the first time."""
    row = await ctx.db.fetchrow(_SET_ASIDE, order_ids, event_id)
    if row is None or not row["moved"]:
        return
    where = ", ".join(map(str, buckets))
    if row["before"]:
        log.warning("%d more give-backs of event %d set aside (not in Redis)", row["moved"], event_id)
        return
    log.error(
        "%d give-backs of event %d set aside: Redis does not know the event (bucket %s: deleted, expired or lost"
        " with Redis's data), so their stock and quota cannot be given back there. The orders stay cancelled;"
        " the give-backs behind them go on. If the event comes back to Redis (restored from a backup,"
        " re-created), they are applied then, once, by themselves; meanwhile they are the rows of event %d with"
        " giveback = 'set_aside' in seckill_orders",
        row["moved"], event_id, where, event_id,
    )  # fmt: skip


async def resume_set_aside(ctx: Context) -> int:
    """Set-aside give-backs of the events Redis knows again (every bucket): pending again, so that the next
    sweep applies them (once: giveback.lua records each order). Returns how many."""
    events = await ctx.db.fetch(
        "SELECT a.event_id, coalesce(e.buckets, 1) AS buckets FROM (SELECT DISTINCT event_id FROM seckill_orders"
        " WHERE giveback = 'set_aside') a LEFT JOIN seckill_events e ON e.id = a.event_id"
    )
    resumed = 0
    for event in events:
        event_id = int(event["event_id"])
        metas = [keys.event_keys(event_id, b).meta for b in range(int(event["buckets"]))]
        if await ctx.redis.exists(*metas) != len(metas):
            continue
        status = await ctx.db.execute(
            "UPDATE seckill_orders SET giveback = 'pending' WHERE event_id = $1 AND giveback = 'set_aside'",
            event_id,
        )
        count = int(status.rsplit(" ", 1)[1])
        resumed += count
        log.warning(
            "%d set-aside give-backs of event %d resumed: Redis knows the event again", count, event_id
        )
    return resumed


async def set_aside_givebacks(ctx: Context, event_ids: Sequence[int] | None = None) -> dict[int, int]:
    """How many give-backs of each event (of those given, or of every event) are set aside."""
    rows = await ctx.db.fetch(
        "SELECT event_id, count(*) AS n FROM seckill_orders WHERE giveback = 'set_aside'"
        " AND ($1::bigint[] IS NULL OR event_id = ANY($1::bigint[])) GROUP BY event_id ORDER BY event_id",
        None if event_ids is None else list(event_ids),
    )
    return {int(r["event_id"]): int(r["n"]) for r in rows}


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
    """Apply give-backs left pending by a process that died after cancelling (idempotent, so safe to race).
    One event failing does not hold back the others: its failure is raised after they are done."""
    rows = await ctx.db.fetch(
        "SELECT order_id, event_id, user_id, bucket, home FROM seckill_orders WHERE giveback = 'pending'"
        " AND cancelled_at <= now() - make_interval(secs => $1) ORDER BY cancelled_at LIMIT $2",
        grace_s,
        _SWEEP_BATCH,
    )
    by_event: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_event[row["event_id"]].append(row)
    applied = 0
    failure: Exception | None = None
    for some in by_event.values():
        try:
            applied += await give_back(ctx, some)
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return applied


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
    outage = Outage(
        log, "payment-timeout sweeper", "unpaid orders past their time are cancelled (and their stock given back)"
        " once it answers; nothing is lost", cap_s=ctx.settings.outage_retry_max_s,
    )  # fmt: skip
    resume_at = 0.0

    async def step() -> None:
        nonlocal resume_at
        while await cancel_due(ctx) == _SWEEP_BATCH:
            pass
        if time.monotonic() >= resume_at:
            await resume_set_aside(ctx)
            resume_at = time.monotonic() + _RESUME_EVERY_S
        await finish_givebacks(ctx)
        await settle_stale_holds(ctx)

    await outage.every(interval_s, step)

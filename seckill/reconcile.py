"""Stats and reconciliation of one event: Redis read at one moment, PostgreSQL matched against that moment.

stock_total = stock_left + queued + pending_payment + paid + dead_letters + cancelled_not_returned

PostgreSQL counts only orders reserved up to the snapshot (their ``rsv`` number), and an order both still in
the queued map and already in PostgreSQL (written, not yet acknowledged) counts once, as written. So the
equation holds exactly while sales, writers and sweepers run; any difference is drift.

After a re-derivation (``seckill/rederive.py``) the reservation numbers that no order carries (reservations lost
with a Redis primary, above which PostgreSQL held later ones) are not reservations: they are left out.

An event split into stock buckets is read one bucket at a time (each bucket atomically) and its terms added
up. Each order counts against the snapshot of the bucket its stock came from (``rsv`` is n * buckets +
bucket), so the equation holds bucket by bucket, hence for their sum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kit.context import Context
from kit.redis import replication_of
from seckill import keys, scripts
from seckill.events import get_event_row

__all__ = ["Balance", "balance", "event_ids", "stats", "terms"]


@dataclass(frozen=True)
class Balance:
    event_id: int
    stock_total: int
    stock_left: int
    queued: int
    pending_payment: int
    paid: int
    dead_letters: int
    cancelled: int
    cancelled_not_returned: int
    redis_stock_total: int
    reservations: int
    returned: int
    # Buckets whose state was written by another Redis node than the one serving them now (a failover or a
    # restart) and not yet re-derived: they sell nothing, and PostgreSQL may hold orders they lost.
    unrepaired: int = 0

    @property
    def accounted(self) -> int:
        return (
            self.stock_left + self.queued + self.pending_payment + self.paid + self.dead_letters
            + self.cancelled_not_returned
        )  # fmt: skip

    @property
    def drift(self) -> int:
        return self.stock_total - self.accounted

    def problems(self) -> list[str]:
        found = []
        if self.drift:
            found.append(f"stock_total - accounted = {self.drift}")
        if self.redis_stock_total != self.stock_total:
            found.append(
                f"Redis stock total {self.redis_stock_total} differs from PostgreSQL {self.stock_total}"
            )
        redis_books = self.stock_left + self.reservations - self.returned
        if redis_books != self.redis_stock_total:
            found.append(
                f"in Redis, stock_left + reservations - returned = {redis_books}, "
                f"not its stock total {self.redis_stock_total}"
            )
        orders = self.queued + self.dead_letters + self.pending_payment + self.paid + self.cancelled
        if orders < self.reservations:
            found.append(
                f"{self.reservations - orders} reservation(s) are neither queued, dead-lettered nor in PostgreSQL"
            )
        elif orders > self.reservations:
            found.append(f"{orders - self.reservations} order(s) in PostgreSQL have no reservation in Redis")
        if self.cancelled_not_returned < 0:
            found.append(f"{-self.cancelled_not_returned} give-backs have no cancelled order")
        if self.unrepaired:
            found.append(
                f"{self.unrepaired} bucket(s) written by another Redis node (a failover or restart) and not yet "
                f"re-derived: run `peak seckill reconcile {self.event_id} --repair`"
            )
        return found


async def balance(ctx: Context, event_id: int) -> Balance:
    event = await get_event_row(ctx, event_id)
    buckets = event["buckets"]
    stock_left = redis_total = returned = 0
    reserved: list[int] = []
    queued_ids: list[str] = []
    dead_ids: list[str] = []
    skipped = unrepaired = 0
    for bucket in range(buckets):
        k = keys.event_keys(event_id, bucket)
        snap = await scripts.snapshot(ctx.redis, k)
        stock_left += snap.stock_left
        redis_total += snap.stock_total
        reserved.append(snap.reservations)
        returned += snap.returned
        # Reservation numbers no order carries (lost with a Redis primary, seckill/rederive.py): changed only by
        # a re-derivation, while that bucket sells nothing, so reading it beside the snapshot is exact.
        skipped_field, gen = await ctx.redis.hmget(k.meta, ["skipped", "gen"])
        skipped += int(skipped_field or 0)
        unrepaired += gen != (await replication_of(ctx.redis, k.meta)).get("master_replid")
        queued_ids += snap.queued
        dead_ids += snap.dead
    # The queued and dead-lettered ids already written are counted by primary-key lookups: a FILTER testing
    # every row of the event against a list of 100,000 ids took minutes after a big backlog.
    row = await ctx.db.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'pending_payment') AS pending_payment,
               count(*) FILTER (WHERE status = 'paid') AS paid,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               (SELECT count(*) FROM seckill_orders w WHERE w.order_id = ANY($3::uuid[]) AND w.event_id = $1
                  AND w.rsv / $5 <= ($2::bigint[])[w.rsv % $5 + 1]) AS written_queued,
               (SELECT count(*) FROM seckill_orders w WHERE w.order_id = ANY($4::uuid[]) AND w.event_id = $1
                  AND w.rsv / $5 <= ($2::bigint[])[w.rsv % $5 + 1]) AS written_dead
        FROM seckill_orders WHERE event_id = $1 AND rsv / $5 <= ($2::bigint[])[rsv % $5 + 1]
        """,
        event_id,
        reserved,
        queued_ids,
        dead_ids,
        buckets,
    )
    assert row is not None
    return Balance(
        event_id=event_id,
        stock_total=event["stock"],
        stock_left=stock_left,
        queued=len(queued_ids) - row["written_queued"],
        pending_payment=row["pending_payment"],
        paid=row["paid"],
        dead_letters=len(dead_ids) - row["written_dead"],
        cancelled=row["cancelled"],
        cancelled_not_returned=row["cancelled"] - returned,
        redis_stock_total=redis_total,
        reservations=sum(reserved) - skipped,
        returned=returned,
        unrepaired=unrepaired,
    )


async def stats(ctx: Context, event_id: int) -> dict[str, Any]:
    b = await balance(ctx, event_id)
    return {
        "stock_total": b.stock_total,
        "stock_left": b.stock_left,
        "reserved": b.stock_total - b.stock_left,
        "queued": b.queued,
        "orders_pending_payment": b.pending_payment,
        "orders_paid": b.paid,
        "orders_cancelled": b.cancelled,
        "dead_letters": b.dead_letters,
        "cancelled_not_returned": b.cancelled_not_returned,
        "drift": b.drift,
    }


def terms(b: Balance) -> dict[str, int]:
    return {k: v for k, v in asdict(b).items() if k != "event_id"}


async def event_ids(ctx: Context) -> list[int]:
    return [r["id"] for r in await ctx.db.fetch("SELECT id FROM seckill_events ORDER BY id")]

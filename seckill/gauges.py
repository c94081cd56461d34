"""seckill's Prometheus figures: per-event gauges read from Redis right before a scrape, and orders written.

Per event (its buckets added up): ``peak_seckill_stock_left``, ``peak_seckill_queue_depth`` (orders reserved
and not yet written to PostgreSQL), ``peak_seckill_dead_letters`` and ``peak_seckill_reservations_total``
(reservations ever: ``rate()`` of it is the fleet's purchases per second, with no per-purchase work). They are
fleet-wide figures (``kit.metrics.FleetGauge``): the scraping process reads them, once per second at most,
with two calls (SMEMBERS of the registry of order streams, then one pipeline of three reads per stream), and
only for recent events: of the ``_NEWEST`` highest event ids, those upcoming, on sale or ended less than
``_RECENT_MS`` ago, ``_EVENTS_MAX`` at most. Redis down: the scrape answers without them.

Purchases by result need no counter of their own: ``peak_requests_total{route="/seckill/events/{event_id}/
orders"}`` by ``status`` (202 accepted, 409 refused: sold out, limit, window, 429 rate limited, 503).
``peak_seckill_orders_written_total`` counts the orders the order writers acknowledged as written (a worker
process's counter; `peak up` shares PROMETHEUS_MULTIPROC_DIR, so the API's /metrics adds every worker's up).
"""

from __future__ import annotations

import time

from prometheus_client import Counter

from kit.context import Context
from kit.metrics import FleetGauge
from seckill import keys
from seckill.refs import parse_stream_member

__all__ = ["DEAD_LETTERS", "ORDERS_WRITTEN", "QUEUE_DEPTH", "RESERVATIONS", "STOCK_LEFT", "refresh"]

_NEWEST = 200
_EVENTS_MAX = 50
_RECENT_MS = 3_600_000

STOCK_LEFT = FleetGauge("peak_seckill_stock_left", "Stock left of a recent sale event", ["event"])
QUEUE_DEPTH = FleetGauge(
    "peak_seckill_queue_depth", "Orders reserved and not yet written to PostgreSQL, per event", ["event"]
)
DEAD_LETTERS = FleetGauge("peak_seckill_dead_letters", "Dead-lettered orders of an event", ["event"])
RESERVATIONS = FleetGauge(
    "peak_seckill_reservations_total",
    "Reservations (accepted purchases) ever of an event; rate() of it is purchases per second",
    ["event"],
    kind="counter",
)
_GAUGES = (STOCK_LEFT, QUEUE_DEPTH, DEAD_LETTERS, RESERVATIONS)

ORDERS_WRITTEN = Counter("peak_seckill_orders_written", "Orders the order writers wrote and acknowledged")


async def refresh(ctx: Context) -> None:
    """seckill's gauge refresher (``Component.gauges``); on a Redis error the gauges are cleared, left out."""
    try:
        await _refresh(ctx)
    except BaseException:
        for gauge in _GAUGES:
            gauge.clear()
        raise


async def _refresh(ctx: Context) -> None:
    members: set[str] = await ctx.redis.smembers(keys.EVENTS)  # type: ignore[assignment]
    streams = sorted(
        (ref for ref in map(parse_stream_member, members) if ref is not None), key=lambda r: (-r[0], r[1])
    )
    newest = sorted({event for event, _ in streams}, reverse=True)[:_NEWEST]
    chosen = set(newest)
    streams = [ref for ref in streams if ref[0] in chosen]
    replies: list[object] = []
    if streams:
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for event, bucket in streams:
                k = keys.event_keys(event, bucket)
                pipe.hmget(k.meta, ["stock", "end_ms", "reserved"])
                pipe.hlen(k.queued)
                pipe.hlen(k.dead_orders)
            replies = await pipe.execute()
    now_ms = time.time() * 1000
    totals: dict[int, list[int]] = {}
    recent: set[int] = set()
    for i, (event, _) in enumerate(streams):
        meta, queued, dead = replies[3 * i : 3 * i + 3]
        if not isinstance(meta, list) or meta[0] is None:
            continue  # a stream whose event Redis no longer knows
        stock, end_ms, reserved = (int(x or 0) for x in meta)
        if end_ms >= now_ms - _RECENT_MS:
            recent.add(event)
        row = totals.setdefault(event, [0, 0, 0, 0])
        row[0] += stock
        row[1] += int(queued)  # type: ignore[call-overload]
        row[2] += int(dead)  # type: ignore[call-overload]
        row[3] += reserved
    shown = sorted(recent, reverse=True)[:_EVENTS_MAX]
    for n, gauge in enumerate(_GAUGES):
        gauge.replace({(str(event),): totals[event][n] for event in shown})

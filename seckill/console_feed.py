"""The ops console's "sale" panel: the recent events and their books (``seckill.reconcile.stats``).

Recent: on sale, upcoming, or ended within the last hour; at most 20, the latest start first. The console's
hub calls this at most once per second per API process, and only while a console is open; the page computes
purchases/s from successive ``reserved`` values and ``at_ms``. PostgreSQL or Redis out of reach is reported
in the answer (``error``), never raised: the stream goes on.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from kit.context import Context
from kit.errors import REDIS_OUTAGES, STORE_OUTAGES
from seckill import reconcile
from seckill.errors import EventNotFound

__all__ = ["RECENT_EVENTS", "sale_feed"]

RECENT_EVENTS = 20
_ENDED_WITHIN = dt.timedelta(hours=1)
_RECENT = """
    SELECT id, title, starts_at, ends_at, now() AS now FROM seckill_events
    WHERE ends_at > now() - $1::interval ORDER BY starts_at DESC, id DESC LIMIT $2
"""


def _status(row: Any, stock_left: int) -> str:
    if row["now"] < row["starts_at"]:
        return "upcoming"
    if row["now"] >= row["ends_at"]:
        return "ended"
    return "sold_out" if stock_left <= 0 else "active"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def sale_feed(ctx: Context) -> dict[str, Any]:
    try:
        rows = await ctx.db.fetch(_RECENT, _ENDED_WITHIN, RECENT_EVENTS)
        events = []
        for row in rows:
            try:
                stats = await reconcile.stats(ctx, row["id"])
            except EventNotFound:
                continue
            events.append(
                {
                    "id": row["id"],
                    "name": row["title"],
                    "status": _status(row, stats["stock_left"]),
                    "starts_at": _iso(row["starts_at"]),
                    "ends_at": _iso(row["ends_at"]),
                    **{k: v for k, v in stats.items() if k != "cancelled_not_returned"},
                    "at_ms": int(time.time() * 1000),
                }
            )
    except STORE_OUTAGES as exc:
        store = "Redis" if isinstance(exc, REDIS_OUTAGES) else "PostgreSQL"
        return {
            "events": [],
            "error": {"code": "unavailable", "message": f"{store} cannot be reached; retrying"},
        }
    return {"events": events}

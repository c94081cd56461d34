"""A shopper's own orders, newest first, in keyset pages (``GET /seckill/orders?limit=&after=``).

Written orders only (PostgreSQL, index ``seckill_orders_by_user`` of migration 0006): an order still queued
appears once the order writer has stored it, normally within a second. The cursor is opaque to clients:
base64url of "<reserved_at in epoch microseconds>.<order id hex>" of the page's last order; anything else is
422, never a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from typing import Any

from kit.context import Context
from kit.errors import InvalidRequest
from seckill.orderfind import order_view

__all__ = ["MAX_LIMIT", "cursor_of", "list_orders", "parse_cursor"]

MAX_LIMIT = 100
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CURSOR_TEXT = re.compile(r"(-?[0-9]{1,17})\.([0-9a-f]{32})")
_CURSOR_CHARS = re.compile(r"[A-Za-z0-9_-]{1,80}")
_PAGE = """
SELECT * FROM seckill_orders
WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (reserved_at, order_id) < ($2, $3))
ORDER BY reserved_at DESC, order_id DESC LIMIT $4
"""
_BAD = "query parameter 'after' must be the 'next' of a previous page"


def cursor_of(reserved_at: dt.datetime, order_id: uuid.UUID) -> str:
    us = (reserved_at - _EPOCH) // dt.timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{us}.{order_id.hex}".encode()).decode().rstrip("=")


def parse_cursor(raw: str) -> tuple[dt.datetime, uuid.UUID]:
    if not _CURSOR_CHARS.fullmatch(raw) or len(raw) % 4 == 1:
        raise InvalidRequest(_BAD)
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(_BAD) from None
    found = _CURSOR_TEXT.fullmatch(text)
    if found is None:
        raise InvalidRequest(_BAD)
    try:
        at = _EPOCH + dt.timedelta(microseconds=int(found[1]))
    except OverflowError:
        raise InvalidRequest(_BAD) from None
    if not dt.datetime(1, 1, 2, tzinfo=dt.UTC) <= at <= dt.datetime(9999, 12, 30, tzinfo=dt.UTC):
        raise InvalidRequest(_BAD)
    return at, uuid.UUID(found[2])


async def list_orders(ctx: Context, user_id: str, *, limit: int, after: str | None) -> dict[str, Any]:
    at, last = parse_cursor(after) if after is not None else (None, None)
    rows = await ctx.db.fetch(_PAGE, user_id, at, last, limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "orders": [order_view(r) for r in page],
        "next": cursor_of(page[-1]["reserved_at"], page[-1]["order_id"]) if more else None,
    }

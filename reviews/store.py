"""Reviews in PostgreSQL, and the summary cached in Redis for when reviews is shed."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson

from kit.context import Context
from kit.errors import Conflict
from reviews import keys, scripts
from reviews.settings import ReviewsSettings

__all__ = ["add", "cached", "page"]


def _review(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "author": row["username"],
        "rating": row["rating"],
        "text": row["text"],
        "created_at": row["created_at"].isoformat(),
    }


async def page(ctx: Context, sku: str, *, before: int | None) -> dict[str, Any]:
    size = ctx.settings.of(ReviewsSettings).page_size
    async with ctx.db.acquire() as conn:
        summary = await conn.fetchrow("SELECT count, total FROM review_summaries WHERE sku = $1", sku)
        rows = await conn.fetch(
            "SELECT id, username, rating, text, created_at FROM reviews"
            " WHERE sku = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            sku,
            before,
            size + 1,
        )
    count, total = (summary["count"], summary["total"]) if summary else (0, 0)
    body = {
        "sku": sku,
        "count": count,
        "average": round(total / count, 2) if count else None,
        "reviews": [_review(r) for r in rows[:size]],
        "next_cursor": str(rows[size - 1]["id"]) if len(rows) > size else None,
        "stale": False,
    }
    if before is None and count:
        # Only products with reviews: a crowd reading made-up skus must not fill Redis with empty summaries.
        await _cache(ctx, sku, body)
    return body


async def _cache(ctx: Context, sku: str, body: dict[str, Any]) -> None:
    cached = {**body, "next_cursor": None, "cached_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    ttl_s = ctx.settings.of(ReviewsSettings).cache_ttl_s
    await scripts.cache_summary(ctx.redis, sku, orjson.dumps(cached), body["count"], ttl_s=ttl_s)


async def cached(ctx: Context, sku: str) -> dict[str, Any] | None:
    raw = await ctx.redis.get(keys.summary(sku))
    if raw is None:
        return None
    body: dict[str, Any] = orjson.loads(raw)
    body["stale"] = True
    return body


async def add(
    ctx: Context, sku: str, *, user_id: str, username: str, rating: int, text: str
) -> dict[str, Any]:
    async with ctx.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO reviews (sku, user_id, username, rating, text) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (sku, user_id) DO NOTHING RETURNING id, username, rating, text, created_at",
            sku,
            user_id,
            username,
            rating,
            text,
        )
        if row is None:
            raise Conflict(f"you already reviewed {sku}", code="already_reviewed")
        await conn.execute(
            "INSERT INTO review_summaries (sku, count, total) VALUES ($1, 1, $2)"
            " ON CONFLICT (sku) DO UPDATE SET count = review_summaries.count + 1,"
            " total = review_summaries.total + EXCLUDED.total",
            sku,
            rating,
        )
    # The cached first page now shows this review too.
    await page(ctx, sku, before=None)
    return _review(row)

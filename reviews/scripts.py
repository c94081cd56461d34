"""reviews' Lua script (``reviews/lua/``), bound once, with its keys and its reply. Keys come from
``reviews/keys.py``; the component loads ``ALL`` at start."""

from __future__ import annotations

from kit.lua import Script
from kit.redis import RedisClient
from reviews import keys

__all__ = ["ALL", "CACHE_SUMMARY", "cache_summary"]

CACHE_SUMMARY = Script.of("reviews", "cache_summary")

ALL = (CACHE_SUMMARY,)


async def cache_summary(redis: RedisClient, sku: str, body: bytes, count: int, *, ttl_s: int) -> bool:
    """Cache ``body`` (``count`` reviews) as the product's summary; False when the cached one counts more."""
    return bool(await CACHE_SUMMARY(redis, (keys.summary(sku),), [body, count, ttl_s * 1000]))

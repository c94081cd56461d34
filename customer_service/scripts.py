"""customer_service's Lua scripts (``customer_service/lua/``), each bound once, with its keys and its reply.

Keys come from ``customer_service/keys.py``; a refusal of ``post.lua`` becomes an exception of
``customer_service/errors.py`` there (``refusal``) and nowhere else. The component loads ``ALL`` at start.
"""

from __future__ import annotations

from collections.abc import Mapping

from customer_service import keys
from customer_service.errors import refusal
from kit.lua import Script
from kit.redis import RedisClient

__all__ = ["ALL", "DEAD_LETTER", "POST", "REQUEUE", "dead_letter", "post", "requeue"]

POST = Script.of("customer_service", "post")
DEAD_LETTER = Script.of("customer_service", "dead_letter")
REQUEUE = Script.of("customer_service", "requeue")

ALL = (POST, DEAD_LETTER, REQUEUE)


async def post(
    redis: RedisClient,
    user_id: str,
    *,
    per_window: int,
    window_s: int,
    queue_into: int = 0,
    fields: Mapping[str, str] | None = None,
) -> str | None:
    """Count the shopper's message, and queue ``fields`` in the inbox when ``queue_into`` (its capacity) is
    set: the inbox entry id (None when not queued), or MessageRateLimited / InboxFull."""
    pairs = [part for item in (fields or {}).items() for part in item] if queue_into else []
    reply = await POST(
        redis, (keys.INBOX, keys.rate(user_id)), [per_window, window_s * 1000, queue_into, *pairs]
    )
    error = refusal(reply)
    if error is not None:
        raise error
    return str(reply[1]) or None


async def dead_letter(redis: RedisClient, entry_id: str, reason: str, *, keep: int) -> str | None:
    """The dead letter's id, or None when the entry was no longer pending (handled elsewhere)."""
    dead_id = await DEAD_LETTER(
        redis, (keys.INBOX, keys.DEAD_LETTERS), [keys.INBOX_GROUP, entry_id, reason, keep]
    )
    return str(dead_id) if dead_id else None


async def requeue(redis: RedisClient, dead_id: str) -> str | None:
    """The new inbox entry id, or None when there is no such dead letter."""
    new_id = await REQUEUE(redis, (keys.DEAD_LETTERS, keys.INBOX), [dead_id])
    return str(new_id) if new_id else None

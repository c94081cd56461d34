"""The worker loop that moves messages queued while customer_service was shed into PostgreSQL.

Nothing is lost: an entry is acknowledged (and deleted) only after the transaction that inserted it has
committed; a worker killed in between leaves it pending, and the next one (or another worker, after
PEAK_CS_CLAIM_IDLE_MS) inserts it again, which the message id turns into a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from redis.exceptions import ResponseError

from customer_service import keys, store
from customer_service.settings import CustomerServiceSettings
from degrade.client import is_shed
from kit.context import Context

__all__ = ["drain_once", "move_queued_messages"]

log = logging.getLogger("peak.customer_service")

_BATCH = 200
_SHED_POLL_S = 0.5


async def _ensure_group(ctx: Context) -> None:
    try:
        await ctx.redis.xgroup_create(keys.INBOX, keys.INBOX_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _store(ctx: Context, entries: list[tuple[str, dict[str, str]]]) -> int:
    messages, ids = [], []
    for entry_id, fields in entries:
        ids.append(entry_id)
        try:
            messages.append(store.from_inbox(fields))
        except (KeyError, ValueError):
            log.error("customer_service: dropping malformed inbox entry %s", entry_id)
    if messages:
        await store.insert_many(ctx, messages, queued=True)
    if ids:
        # Not a MULTI (cluster pipelines may refuse one): both commands are idempotent and retried next batch.
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.INBOX, keys.INBOX_GROUP, *ids)
            pipe.xdel(keys.INBOX, *ids)
            await pipe.execute()
    return len(messages)


async def drain_once(ctx: Context, consumer: str, *, block_ms: int | None = None) -> int:
    """Move one batch: this consumer's own pending entries, then others' stale ones, then new ones."""
    await _ensure_group(ctx)
    mine: Any = await ctx.redis.xreadgroup(keys.INBOX_GROUP, consumer, {keys.INBOX: "0"}, count=_BATCH)
    entries = [e for e in (mine[0][1] if mine else []) if e[1]]
    if not entries:
        idle_ms = ctx.settings.of(CustomerServiceSettings).claim_idle_ms
        claimed: Any = await ctx.redis.xautoclaim(
            keys.INBOX, keys.INBOX_GROUP, consumer, idle_ms, count=_BATCH
        )
        entries = [e for e in claimed[1] if e[1]]
    if not entries:
        fresh: Any = await ctx.redis.xreadgroup(
            keys.INBOX_GROUP, consumer, {keys.INBOX: ">"}, count=_BATCH, block=block_ms
        )
        entries = fresh[0][1] if fresh else []
    return await _store(ctx, entries)


async def move_queued_messages(ctx: Context) -> None:
    consumer = f"{socket.gethostname()}:{os.getpid()}"
    while True:
        if is_shed(ctx, "customer_service"):
            # Shed means: keep PostgreSQL free for the core; the messages wait safely in the stream.
            await asyncio.sleep(_SHED_POLL_S)
            continue
        moved = await drain_once(ctx, consumer, block_ms=1000)
        if moved:
            log.info("customer_service: moved %d queued messages into PostgreSQL", moved)

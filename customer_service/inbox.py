"""The worker loop that moves messages queued while customer_service was shed into PostgreSQL.

Nothing is lost: an entry is acknowledged (and deleted) only after the transaction that inserted it has
committed; a worker killed in between leaves it pending, and the next one (or another worker, after
PEAK_CS_CLAIM_IDLE_MS) inserts it again, which the message id turns into a no-op.

Nothing jams either: a batch that PostgreSQL refuses for its data (a NUL in a text, a value a column does not
take) is retried one message at a time, and each message it still refuses goes to the dead letters
(``customer_service/lua/dead_letter.lua``) with the reason, so the entries behind it are stored. An entry that
cannot even be read as a message goes there too. PostgreSQL or Redis being unreachable is no reason to give up
on a message: the loop pauses (kit/outage.py: a growing pause, one warning per outage) and tries the same
entries again; nothing new is read or claimed meanwhile. Entries are read as bytes, so that one which
is not UTF-8 (written by something else than this package) is dead-lettered instead of failing every read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import asyncpg
from redis.client import NEVER_DECODE
from redis.exceptions import RedisError, ResponseError

from customer_service import keys, scripts, store
from customer_service.settings import CustomerServiceSettings
from degrade.client import is_shed
from kit.context import Context
from kit.outage import Outage, store_outage

__all__ = ["drain_once", "move_queued_messages", "unstorable"]

log = logging.getLogger("peak.customer_service")

_BATCH = 200
_SHED_POLL_S = 0.5
_RAW = {NEVER_DECODE: True}
_REASON_MAX = 500
# SQLSTATE classes of a refusal that the same row meets on every try: data exceptions (22: NUL in text, a
# value out of range), integrity violations (23: a check or not-null constraint), program limits (54).
_DATA_CLASSES = ("22", "23", "54")

Entry = tuple[str, dict[str, str]]


def unstorable(exc: BaseException) -> bool:
    """Whether PostgreSQL (or the driver, encoding the row) refuses this data itself, so that trying again
    can never succeed; anything else (a lost connection, a timeout) is worth another try."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _DATA_CLASSES
    # The driver's own refusal of a value (a string it cannot encode, a wrong type): ValueError, as is
    # asyncpg.exceptions._base.DataError ("invalid input for query argument").
    driver_refused = isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)
    return driver_refused or isinstance(exc, UnicodeError)


async def _ensure_group(ctx: Context) -> None:
    try:
        await ctx.redis.xgroup_create(keys.INBOX, keys.INBOX_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _dead_letter(ctx: Context, entry_id: str, reason: str) -> None:
    keep = ctx.settings.of(CustomerServiceSettings).dead_letters_max
    dead_id = await scripts.dead_letter(ctx.redis, entry_id, reason[:_REASON_MAX], keep=keep)
    if dead_id is not None:
        log.error("customer_service: inbox entry %s dead-lettered as %s: %s", entry_id, dead_id, reason)


async def _insert_each(ctx: Context, parsed: list[tuple[str, store.Message]]) -> list[str]:
    """One message at a time: the ids stored; each one PostgreSQL refuses is dead-lettered."""
    stored = []
    for entry_id, message in parsed:
        try:
            await store.insert_many(ctx, [message], queued=True)
        except Exception as exc:
            if not unstorable(exc):
                raise
            await _dead_letter(ctx, entry_id, f"PostgreSQL refused it: {type(exc).__name__}: {exc}")
            continue
        stored.append(entry_id)
    return stored


async def _store(ctx: Context, entries: list[Entry]) -> int:
    parsed: list[tuple[str, store.Message]] = []
    for entry_id, fields in entries:
        try:
            parsed.append((entry_id, store.from_inbox(fields)))
        except (KeyError, ValueError, TypeError) as exc:
            await _dead_letter(ctx, entry_id, f"not a message: {type(exc).__name__}: {exc}")
    if not parsed:
        return 0
    try:
        # One statement for the batch (atomic: all rows or none).
        await store.insert_many(ctx, [m for _, m in parsed], queued=True)
        ids = [entry_id for entry_id, _ in parsed]
    except Exception as exc:
        if not unstorable(exc):
            raise
        ids = await _insert_each(ctx, parsed)
    if ids:
        # Not a MULTI (cluster pipelines may refuse one): both commands are idempotent and retried next batch.
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.INBOX, keys.INBOX_GROUP, *ids)
            pipe.xdel(keys.INBOX, *ids)
            await pipe.execute()
    return len(ids)


async def _usable(ctx: Context, raw: Any) -> list[Entry]:
    """Entries read without decoding (one that is not UTF-8 must not fail the whole read, every time): the
    ones that are text; the others are dead-lettered, and pending ones whose data is gone (deleted after a
    crash between XDEL and XACK) acknowledged, so that neither comes back."""
    usable, gone = [], []
    for raw_id, raw_fields in raw or ():
        entry_id = raw_id.decode()
        if not raw_fields:
            gone.append(entry_id)
            continue
        try:
            usable.append((entry_id, {k.decode(): v.decode() for k, v in raw_fields.items()}))
        except UnicodeDecodeError as exc:
            await _dead_letter(ctx, entry_id, f"not UTF-8 text: {exc}")
    if gone:
        await ctx.redis.xack(keys.INBOX, keys.INBOX_GROUP, *gone)
    return usable


def _read(consumer: str, start: str, block_ms: int | None = None) -> list[Any]:
    block = [] if block_ms is None else ["BLOCK", block_ms]
    return [
        "XREADGROUP",
        "GROUP",
        keys.INBOX_GROUP,
        consumer,
        "COUNT",
        _BATCH,
        *block,
        "STREAMS",
        keys.INBOX,
        start,
    ]


async def drain_once(ctx: Context, consumer: str, *, block_ms: int | None = None) -> int:
    """Move one batch: this consumer's own pending entries, then others' stale ones, then new ones."""
    await _ensure_group(ctx)
    # redis-py types execute_command only on the single-server client.
    redis: Any = ctx.redis
    mine: Any = await redis.execute_command(*_read(consumer, "0"), **_RAW)
    entries = await _usable(ctx, mine[0][1] if mine else [])
    if not entries:
        idle_ms = ctx.settings.of(CustomerServiceSettings).claim_idle_ms
        claimed: Any = await redis.execute_command(
            "XAUTOCLAIM", keys.INBOX, keys.INBOX_GROUP, consumer, idle_ms, "0-0", "COUNT", _BATCH, **_RAW
        )
        entries = await _usable(ctx, claimed[1])
    if not entries:
        fresh: Any = await redis.execute_command(*_read(consumer, ">", block_ms), **_RAW)
        entries = await _usable(ctx, fresh[0][1] if fresh else [])
    return await _store(ctx, entries)


async def move_queued_messages(ctx: Context) -> None:
    consumer = f"{socket.gethostname()}:{os.getpid()}"
    outage = Outage(
        log, "customer_service inbox mover", "messages sent meanwhile wait in the Redis inbox; none is"
        " dead-lettered for it", cap_s=ctx.settings.outage_retry_max_s,
    )  # fmt: skip
    while True:
        if is_shed(ctx, "customer_service"):
            # Shed means: keep PostgreSQL free for the core; the messages wait safely in the stream.
            await asyncio.sleep(_SHED_POLL_S)
            continue
        try:
            moved = await drain_once(ctx, consumer, block_ms=1000)
        except Exception as exc:
            if not store_outage(exc) and not isinstance(exc, (RedisError, asyncpg.PostgresError)):
                raise  # a fault of ours: the supervisor logs it and starts the loop again
            # The entries stay pending and are tried again (another refusal by PostgreSQL or Redis than an
            # outage too: the same entries, the same pause, rather than a traceback a second).
            await outage.wait(exc)
            continue
        outage.over()
        if moved:
            log.info("customer_service: moved %d queued messages into PostgreSQL", moved)

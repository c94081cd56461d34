"""The order writer (`peak worker` loop): event streams -> PostgreSQL in batches, acknowledged after COMMIT.

One consumer group per order stream (one per stock bucket of an event, each in its bucket's slot); one reading
task per stream found in the registry. Entries left pending by
a dead consumer are reclaimed with XAUTOCLAIM once idle for PEAK_SECKILL_CLAIM_IDLE_MS; an entry delivered more
than PEAK_SECKILL_MAX_DELIVERIES times moves to the event's dead-letter stream. Entries are deleted from the
stream only once acknowledged, never before.

Only a failure of the message itself counts as a delivery. While PostgreSQL is out of reach (down, restarting,
a connection cut mid-batch, no connection within PEAK_DB_ACQUIRE_TIMEOUT_S) the writer reclaims nothing, reads
nothing new, and takes back the delivery its interrupted batch counted (XCLAIM RETRYCOUNT): an outage of any
length brings no order closer to the dead letters. It waits with a growing pause (kit/outage.py) and resumes
by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from redis.exceptions import ResponseError
from redis.typing import StreamIdT

from kit.context import Context
from kit.db import postgres_outage
from kit.outage import Outage, store_outage
from seckill import keys, scripts
from seckill.events import registered_streams
from seckill.gauges import ORDERS_WRITTEN
from seckill.messages import ORDER_ID, USER_ID, insert_orders
from seckill.orderwatch import announce
from seckill.settings import SeckillSettings

__all__ = ["DatabaseUnreachable", "OrderWriter", "ensure_group", "order_writer"]

log = logging.getLogger("peak.seckill")

_READ_BLOCK_MS = 500
_DISCOVER_S = 1.0
_ERRORS_KEPT = 10_000
# An event keeps a reader this long after its end even with an empty stream (late requeues, clock skew).
_FOLLOW_AFTER_END_MS = 60_000
_LINGER_S = 0.05
_REASON_MAX = 500
_COLLISION = "another order holds the same (event, user, seq)"
# A PostgreSQL outage (kit.db.postgres_outage) blames no message: claiming (which counts a delivery) waits until
# PostgreSQL answers again, and the delivery an interrupted batch counted is taken back.
# Refusals of a message's own data (a field PostgreSQL cannot read, a column's bound or check): every
# delivery would fail the same way, so it is dead-lettered at once instead of after PEAK_SECKILL_MAX_DELIVERIES.
_LASTING = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class DatabaseUnreachable(Exception):
    """PostgreSQL did not answer the order writer; the entries it was writing stay pending."""


async def ensure_group(ctx: Context, event_id: int, bucket: int = 0) -> None:
    try:
        await ctx.redis.xgroup_create(
            keys.event_keys(event_id, bucket).stream, keys.GROUP, id="0", mkstream=True
        )
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class OrderWriter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._settings = ctx.settings.of(SeckillSettings)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self._tasks: dict[tuple[int, int], asyncio.Task[None]] = {}
        # The last failure of each entry, so a dead letter says why it died.
        self._errors: dict[str, str] = {}
        # Shared by the streams' tasks: one warning per outage, not one per stream and try.
        self.outage = Outage(
            log, "order writer", "orders wait in their Redis streams (purchases go on); none is reclaimed, "
            "counted as a delivery or dead-lettered meanwhile", cap_s=ctx.settings.outage_retry_max_s,
        )  # fmt: skip

    async def run(self) -> None:
        try:
            while True:
                try:
                    found = await self.live_streams()
                except Exception as exc:
                    if not store_outage(exc):
                        raise
                    # Redis is gone: keep the streams' tasks (and this consumer's name) and look again.
                    await self.outage.wait(exc)
                    continue
                if not self._tasks:
                    self.outage.over()
                for stream, live in found.items():
                    task = self._tasks.get(stream)
                    if live and (task is None or task.done()):
                        self._tasks[stream] = asyncio.create_task(self._follow(*stream))
                    elif not live and task is not None:
                        # Nothing unacknowledged is left (acknowledged entries are deleted), so nothing is
                        # interrupted; a dead letter put back later makes the stream live again.
                        task.cancel()
                        del self._tasks[stream]
                await asyncio.sleep(_DISCOVER_S)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def live_streams(self) -> dict[tuple[int, int], bool]:
        """Every registered (event, bucket) stream, and whether it needs a reader: open (or recently ended) or
        with a backlog."""
        found = sorted(await registered_streams(self.ctx))
        if not found:
            return {}
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            for event_id, bucket in found:
                k = keys.event_keys(event_id, bucket)
                pipe.hget(k.meta, "end_ms")
                pipe.xlen(k.stream)
            answers = await pipe.execute()
        now_ms = time.time() * 1000
        live = {}
        for i, stream in enumerate(found):
            end_ms, backlog = answers[2 * i], int(answers[2 * i + 1])
            live[stream] = backlog > 0 or (end_ms is not None and now_ms < int(end_ms) + _FOLLOW_AFTER_END_MS)
        return live

    async def _follow(self, event_id: int, bucket: int) -> None:
        claim_every_s = max(0.1, self._settings.claim_idle_ms / 2000)
        next_claim = 0.0
        grouped = False
        while True:
            try:
                if not grouped:
                    await ensure_group(self.ctx, event_id, bucket)
                    grouped = True
                if time.monotonic() >= next_claim:
                    await self.claim(event_id, bucket)
                    next_claim = time.monotonic() + claim_every_s
                read, _ = await self._step(event_id, bucket, _READ_BLOCK_MS)
                # Both stores answered this round (after an outage, the round starts with a claim).
                self.outage.over()
                if 0 < read < self._settings.batch_size:
                    # Orders are trickling in: let a batch gather. Fewer, larger transactions cost
                    # PostgreSQL and this process far less per order while the sale is hot.
                    await asyncio.sleep(_LINGER_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, DatabaseUnreachable) or store_outage(exc):
                    # Everything read stays pending. The next try is a claim, which first asks PostgreSQL
                    # whether it answers: nothing new is read meanwhile.
                    next_claim = 0.0
                    await self.outage.wait(exc.__cause__ or exc)
                elif isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    # The stream or its group vanished (Redis restarted empty): make them again and go on.
                    log.warning("order stream %d/%d has no consumer group; creating it", event_id, bucket)
                    grouped = False
                else:
                    # Whatever was read stays pending and is reclaimed; keep following the stream.
                    log.exception("order writer for stream %d/%d failed; going on", event_id, bucket)
                    await asyncio.sleep(1.0)

    async def step(self, event_id: int, *, bucket: int = 0, block_ms: int | None = None) -> int:
        """Read new entries once (waiting up to block_ms) and write them; returns orders acknowledged."""
        return (await self._step(event_id, bucket, block_ms))[1]

    async def _step(self, event_id: int, bucket: int, block_ms: int | None) -> tuple[int, int]:
        reply: Any = await self.ctx.redis.xreadgroup(
            keys.GROUP, self.consumer, {keys.event_keys(event_id, bucket).stream: ">"},
            count=self._settings.batch_size, block=block_ms,
        )  # fmt: skip
        read = written = 0
        for _, entries in reply or ():
            read += len(entries)
            written += await self.write(event_id, entries, bucket=bucket)
        return read, written

    async def write(
        self,
        event_id: int,
        entries: Sequence[tuple[str, dict[str, str] | None]],
        *,
        bucket: int = 0,
        deliveries: Mapping[str, int] | None = None,
    ) -> int:
        """Store a batch and acknowledge what is stored; returns how many orders were acknowledged. An order
        that can never be stored (its own data is refused) is dead-lettered at once; one that failed for a
        reason that may pass stays pending, for a later delivery. With PostgreSQL out of reach nothing is
        tried one by one: DatabaseUnreachable, every entry stays pending, and the delivery this attempt counted
        is taken back."""
        messages: list[tuple[str, dict[str, str]]] = []
        gone: list[str] = []
        for entry_id, fields in entries:
            if not fields:
                gone.append(entry_id)
            elif ORDER_ID in fields and USER_ID in fields:
                messages.append((entry_id, fields))
            else:
                reason = f"malformed order message: {fields!r}"[:_REASON_MAX]
                await self.dead_letter(event_id, entry_id, reason, 1, bucket=bucket)
        try:
            stored, failed = await self._store(event_id, messages)
        except DatabaseUnreachable:
            await self._uncount(event_id, bucket, [entry_id for entry_id, _ in messages], deliveries)
            raise
        done = [(entry_id, fields[ORDER_ID]) for entry_id, fields in messages if fields[ORDER_ID] in stored]
        for entry_id, fields in messages:
            if fields[ORDER_ID] in stored:
                continue
            reason, lasting = failed.get(entry_id, (_COLLISION, True))
            if lasting:
                count = (deliveries or {}).get(entry_id, 1)
                await self.dead_letter(event_id, entry_id, reason, count, bucket=bucket)
            else:
                self._remember(entry_id, reason)
        entry_ids = [entry_id for entry_id, _ in done] + gone
        if entry_ids:
            if self._errors:
                for entry_id in entry_ids:
                    self._errors.pop(entry_id, None)
            await self._acknowledge(event_id, bucket, entry_ids, [order_id for _, order_id in done])
            ORDERS_WRITTEN.inc(len(done))
            # After the acknowledgement, which forgot them as queued: a poll woken by this finds them written.
            await announce(self.ctx, [order_id for _, order_id in done])
        return len(done)

    async def _acknowledge(
        self, event_id: int, bucket: int, entry_ids: Sequence[str], order_ids: Sequence[str]
    ) -> None:
        """Acknowledge entries and forget their orders as queued; with none, only trim what is acknowledged."""
        await scripts.ack(self.ctx.redis, keys.event_keys(event_id, bucket), entry_ids, order_ids)

    async def _store(
        self, event_id: int, messages: Sequence[tuple[str, dict[str, str]]]
    ) -> tuple[set[str], dict[str, tuple[str, bool]]]:
        """The order ids stored, and for each entry that failed: why, and whether it always will."""
        if not messages:
            return set(), {}
        try:
            async with self.ctx.db.acquire() as conn:
                return await insert_orders(conn, event_id, [fields for _, fields in messages]), {}
        except Exception as exc:
            if postgres_outage(exc):
                raise DatabaseUnreachable(f"{type(exc).__name__}: {exc}") from exc
            if len(messages) == 1:
                why = f"{type(exc).__name__}: {exc}"[:_REASON_MAX]
                return set(), {messages[0][0]: (why, isinstance(exc, _LASTING))}
            log.warning("order batch of event %d failed (%s); writing one by one", event_id, exc)
        # One bad order must not hold back (and finally dead-letter) the good ones of its batch.
        stored: set[str] = set()
        failed: dict[str, tuple[str, bool]] = {}
        for m in messages:
            one, reasons = await self._store(event_id, [m])
            stored |= one
            failed |= reasons
        return stored, failed

    async def _uncount(
        self, event_id: int, bucket: int, entry_ids: Sequence[str], deliveries: Mapping[str, int] | None
    ) -> None:
        """Take back the delivery that reading or claiming these entries counted: PostgreSQL was out of reach,
        so no attempt was made. (XCLAIM to their owner, this consumer, with RETRYCOUNT; JUSTID counts none.)"""
        stream = keys.event_keys(event_id, bucket).stream
        by_count: dict[int, list[StreamIdT]] = defaultdict(list)
        for entry_id in entry_ids:
            by_count[max(0, (deliveries or {}).get(entry_id, 1) - 1)].append(entry_id)
        for count, some in by_count.items():
            await self.ctx.redis.xclaim(
                stream, keys.GROUP, self.consumer, 0, some, retrycount=count, justid=True
            )

    def _remember(self, entry_id: str, reason: str) -> None:
        if len(self._errors) >= _ERRORS_KEPT:
            self._errors.pop(next(iter(self._errors)))
        self._errors[entry_id] = reason

    async def _reachable(self) -> None:
        """DatabaseUnreachable unless PostgreSQL answers: while it is down, nothing is claimed (each claim
        counts a delivery, and enough of them would dead-letter every order waiting for it)."""
        try:
            await self.ctx.db.fetchval("SELECT 1")
        except Exception as exc:
            if postgres_outage(exc):
                raise DatabaseUnreachable(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def claim(self, event_id: int, bucket: int = 0) -> int:
        """Take over entries pending too long; dead-letter those delivered too often. Returns entries seen."""
        settings = self._settings
        await self._reachable()
        stream = keys.event_keys(event_id, bucket).stream
        start, seen = "0-0", 0
        while True:
            reply: list[Any] = await self.ctx.redis.xautoclaim(
                stream, keys.GROUP, self.consumer, settings.claim_idle_ms, start_id=start,
                count=settings.batch_size,
            )  # fmt: skip
            start, claimed = reply[0], reply[1]
            if claimed:
                seen += len(claimed)
                pending = await self.ctx.redis.xpending_range(
                    stream, keys.GROUP, min=claimed[0][0], max=claimed[-1][0], count=len(claimed),
                    consumername=self.consumer,
                )  # fmt: skip
                deliveries = {str(p["message_id"]): int(p["times_delivered"]) for p in pending}
                retry = []
                for entry in claimed:
                    count = deliveries.get(entry[0], 1)
                    if count > settings.max_deliveries:
                        reason = self._errors.pop(entry[0], "no delivery succeeded")
                        await self.dead_letter(event_id, entry[0], reason, count - 1, bucket=bucket)
                    else:
                        retry.append(entry)
                if retry:
                    await self.write(event_id, retry, bucket=bucket, deliveries=deliveries)
            if start in ("0-0", "0"):
                return seen

    async def dead_letter(
        self, event_id: int, entry_id: str, reason: str, deliveries: int, *, bucket: int = 0
    ) -> None:
        log.error("order message %s of event %d/%d dead-lettered: %s", entry_id, event_id, bucket, reason)
        await scripts.dead_letter(
            self.ctx.redis, keys.event_keys(event_id, bucket), entry_id, reason, deliveries
        )
        # The acknowledged entries after it may have waited for this one to leave the stream.
        await self._acknowledge(event_id, bucket, [], [])


async def order_writer(ctx: Context) -> None:
    await OrderWriter(ctx).run()

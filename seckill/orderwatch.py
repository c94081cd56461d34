"""Each API process's memory of orders (L1) and its long polls, kept current by the order news.

A poll of a cached order costs no Redis call and no PostgreSQL query. What an entry holds, and how long:

- paid or cancelled (final): until evicted (``PEAK_SECKILL_ORDER_CACHE_SIZE`` entries, the oldest first);
- queued or pending_payment: until a change message names it or the recheck finds it changed;
- no such order: ``PEAK_SECKILL_ORDER_QUEUED_TTL_S``.

Every change (written by the order writer, paid, cancelled by its owner or the timeout) is published with the
order ids on ``keys.ORDERS_CHANNEL``; each process drops those entries and wakes the long polls waiting on them.
After a (re)subscription every entry that is not final is dropped. Against a lost message, every
``PEAK_SECKILL_ORDER_RECHECK_S`` the cached queued and pending orders (and those long polls wait on) are checked
in one Redis pipeline and one PostgreSQL query for all of them: a lost message leaves an entry stale for that
long at most, and a polled order is never read one by one while it does not change. Should the recheck fail
(a store down), queued entries expire after ``PEAK_SECKILL_ORDER_QUEUED_TTL_S`` and pending ones after
``PEAK_SECKILL_ORDER_PENDING_TTL_S``, counted from their last confirmation. Concurrent misses of one order share
one read, and a read that a change message overtook is answered but not kept. An entry holds its owner: a
poll by anyone else is answered 404 as for no order at all.

Long polls wait on a future per request in ``order id -> futures``: while nothing changes they cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kit.context import Context
from kit.responses import dumps
from seckill import keys
from seckill.errors import OrderNotFound
from seckill.news import News
from seckill.orderfind import BucketCounts, find_queued, order_view, publish_changes, still_queued
from seckill.settings import SeckillSettings

__all__ = ["FINAL", "MAX_WAITING", "STATUSES", "Known", "OrderWatch", "announce", "parse_order_id"]

log = logging.getLogger("peak.seckill")

STATUSES = ("queued", "pending_payment", "paid", "cancelled")
FINAL = frozenset(("paid", "cancelled"))
_UUID_CHARS = frozenset("0123456789abcdefABCDEF-")
_DASHES = [8, 13, 18, 23]
# Orders rechecked per round at most (the rest wait for their deadline or the next round).
_RECHECK_MAX = 10_000
# Long polls waiting at once in one process (a few KiB each); past that a long poll is answered at once, as if
# its wait were over, and the client polls again.
MAX_WAITING = 20_000
_ROW = "SELECT * FROM seckill_orders WHERE order_id = $1"
_STATES = "SELECT order_id::text, status FROM seckill_orders WHERE order_id = ANY($1::uuid[])"


def parse_order_id(raw: str) -> uuid.UUID:
    """An order id as shown to shoppers (8-4-4-4-12 ASCII hex); OrderNotFound for anything else. uuid.UUID
    alone takes braces, "urn:uuid:" and non-ASCII digits."""
    if len(raw) != 36 or not set(raw) <= _UUID_CHARS or [i for i, c in enumerate(raw) if c == "-"] != _DASHES:
        raise OrderNotFound()
    return uuid.UUID(raw)


@dataclass(slots=True)
class Known:
    """What this process knows of one order: its owner (None: no such order), status and rendered view."""

    owner: str | None
    status: str
    body: bytes
    # time.monotonic() after which it must be read again (inf: final).
    until: float


class OrderWatch:
    def __init__(self, ctx: Context) -> None:
        settings = ctx.settings.of(SeckillSettings)
        self._ctx = ctx
        self._queued_ttl_s = settings.order_queued_ttl_s
        self._pending_ttl_s = settings.order_pending_ttl_s
        self._recheck_s = settings.order_recheck_s
        self._size = settings.order_cache_size
        self._known: dict[str, Known] = {}
        self._loading: dict[str, asyncio.Task[Known]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        # Cached orders that may still change (queued, pending): what the recheck reads.
        self._open: set[str] = set()
        self._waiting = 0
        self._counts = BucketCounts()
        self._closed = False
        # The process is stopping (kit.stopping): long polls answer now and no new one waits, so the server's
        # drain is not held up to a poll's 30 s.
        self._stopping = False
        # Names this process's own change messages: it forgot those orders before publishing, and reading
        # them again when the message comes back would cost a second PostgreSQL read per change.
        self.origin = os.urandom(6).hex()

    def hear(self, news: News) -> None:
        news.on(keys.ORDERS_CHANNEL, self._heard, self._reset)

    @property
    def waiting(self) -> int:
        """Long polls waiting right now (tests and metrics)."""
        return self._waiting

    async def get(self, raw: str, user_id: str) -> Known:
        """The order as its owner sees it; OrderNotFound for no such order and for anyone else's."""
        known = self._known.get(raw)
        if known is None or known.until <= time.monotonic():
            key = parse_order_id(raw)
            order_id = str(key)
            known = self._known.get(order_id)
            if known is None or known.until <= time.monotonic():
                known = await self._load(order_id, key)
        if known.owner != user_id:
            raise OrderNotFound()
        return known

    async def wait(self, raw: str, user_id: str, status: str, timeout_s: float) -> Known:
        """The order once its status is not ``status``, or after ``timeout_s`` as it is then."""
        known = await self.get(raw, user_id)
        if known.status != status or timeout_s <= 0 or self._waiting >= MAX_WAITING or self._stopping:
            return known
        order_id = str(parse_order_id(raw))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            woken: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(order_id, set())
            waiters.add(woken)
            self._waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await woken
            finally:
                self._waiting -= 1
                waiters.discard(woken)
                if not waiters and self._waiters.get(order_id) is waiters:
                    del self._waiters[order_id]
            known = await self.get(order_id, user_id)
            if known.status != status or self._stopping:
                return known
        return known

    async def _load(self, order_id: str, key: uuid.UUID) -> Known:
        task = self._loading.get(order_id)
        if task is None:
            task = asyncio.ensure_future(self._read(order_id, key))
            self._loading[order_id] = task
            task.add_done_callback(lambda done: self._loaded(order_id, done))
        # Shielded: a client gone away must not cancel the read that others wait for.
        return await asyncio.shield(task)

    def _loaded(self, order_id: str, task: asyncio.Task[Known]) -> None:
        current = self._loading.get(order_id) is task
        if current:
            del self._loading[order_id]
        if task.cancelled() or task.exception() is not None or not current:
            return  # failed (its waiters got the error), or a change message came while it read: not kept
        self._store(order_id, task.result())

    def _store(self, order_id: str, known: Known) -> None:
        if order_id not in self._known and len(self._known) >= self._size:
            oldest = next(iter(self._known))
            del self._known[oldest]
            self._open.discard(oldest)
        self._known[order_id] = known
        if known.owner is not None and known.until != math.inf:
            self._open.add(order_id)
        else:
            self._open.discard(order_id)

    async def _read(self, order_id: str, key: uuid.UUID) -> Known:
        started = time.monotonic()
        queued = await find_queued(self._ctx, key, self._counts)
        if queued is not None:
            event_id, owner = queued
            body = dumps({"order_id": order_id, "event_id": event_id, "status": "queued", "pay_by": None})
            return Known(owner, "queued", body, started + self._queued_ttl_s)
        row = await self._ctx.db.fetchrow(_ROW, key)
        if row is None:
            return Known(None, "", b"", started + self._queued_ttl_s)
        status = str(row["status"])
        until = math.inf if status in FINAL else started + self._pending_ttl_s
        return Known(str(row["user_id"]), status, dumps(order_view(row)), until)

    def forget(self, order_ids: list[str]) -> None:
        """These orders changed: drop them, and wake the long polls waiting on them."""
        for order_id in order_ids:
            self._known.pop(order_id, None)
            self._open.discard(order_id)
            self._loading.pop(order_id, None)
            for woken in self._waiters.pop(order_id, ()):
                if not woken.done():
                    woken.set_result(None)

    def _heard(self, data: str) -> None:
        origin, _, order_ids = data.rpartition(" ")
        if origin != self.origin:
            self.forget(order_ids.split(","))

    def _reset(self) -> None:
        """Messages may have been missed: drop every entry that is not final, wake every long poll."""
        self._known = {o: k for o, k in self._known.items() if k.until == math.inf}
        self._open.clear()
        self._loading.clear()
        self.forget(list(self._waiters))

    def close(self) -> None:
        self._closed = True

    def stop_waiting(self) -> None:
        """Answer every long poll now, as the order is, and let none wait from now on."""
        self._stopping = True
        for waiters in self._waiters.values():
            for woken in waiters:
                if not woken.done():
                    woken.set_result(None)

    async def recheck(self) -> None:
        """Every PEAK_SECKILL_ORDER_RECHECK_S, check the cached orders that may still change and those long polls
        wait on (lost messages); unchanged ones live on, so a polled order is not read again one by one."""
        while not self._closed:
            await asyncio.sleep(self._recheck_s)
            if not self._waiters and not self._open:
                continue
            try:
                await self._recheck_once()
            except Exception as exc:
                log.warning("order recheck failed (%s); entries expire meanwhile", exc)

    async def _recheck_once(self) -> None:
        started = time.monotonic()
        picked = list(dict.fromkeys(itertools.chain(self._waiters, self._open)))[:_RECHECK_MAX]
        entries = {order_id: self._known.get(order_id) for order_id in picked}
        queued = [o for o, k in entries.items() if k is not None and k.status == "queued"]
        pending = [o for o, k in entries.items() if k is not None and k.status == "pending_payment"]
        # Dropped meanwhile (a message, an eviction): their long polls read them again.
        changed = [o for o, k in entries.items() if k is None]
        unchanged: set[str] = set()
        # Each store on its own: with one of them down, the orders the other one holds are still confirmed.
        if queued:
            try:
                unchanged, gone = await still_queued(self._ctx, queued, self._counts)
                changed += gone
            except Exception as exc:
                log.warning("recheck of queued orders failed (%s); they expire meanwhile", exc)
        if pending:
            try:
                rows: list[Any] = await self._ctx.db.fetch(_STATES, pending)
            except Exception as exc:
                log.warning("recheck of unpaid orders failed (%s); they expire meanwhile", exc)
                rows = []
                pending = []
            states = {str(r[0]): r[1] for r in rows}
            for order_id in pending:
                if states.get(order_id) == "pending_payment":
                    unchanged.add(order_id)
                else:
                    changed.append(order_id)
        for order_id in unchanged:
            known = entries[order_id]
            if known is not None and self._known.get(order_id) is known:  # not replaced while this read
                ttl_s = self._queued_ttl_s if known.status == "queued" else self._pending_ttl_s
                known.until = started + ttl_s
        self.forget(changed)


async def announce(ctx: Context, order_ids: list[Any]) -> None:
    """These orders changed: this process forgets them at once (a shopper's next call here sees the change),
    and every process hears of it (``keys.ORDERS_CHANNEL``)."""
    watch = ctx.find(OrderWatch)
    if watch is not None:
        watch.forget([str(o) for o in order_ids])
    await publish_changes(ctx.redis, order_ids, "-" if watch is None else watch.origin)

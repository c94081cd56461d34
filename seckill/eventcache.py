"""The event view's two-level cache: process memory (L1) first, Redis (L2, ``view.lua``) second, PostgreSQL never.

Each API process keeps the events it has served, with their body pre-rendered per status, and answers
``GET /seckill/events/{id}``, the ticket fetch and the purchase's window check from memory. What can change
after creation is the stock (purchases, give-backs, added stock) and the end; they reach the entry:

- at once from this process's own sell-out (``SoldOutMemory`` tells the cache when it marks a bucket);
- within a message's latency from any process: the stock-back channel (give-backs, added stock, a moved end,
  a creation) makes the recheck loop reread those events at once;
- within ``PEAK_SECKILL_VIEW_RECHECK_S`` (0.5 s) plus a round trip otherwise (a lost message, a purchase in
  another process): one pipeline rereads the stock and end of every cached event on sale or starting within a
  minute, every tick; the other events every ``_COLD_EVERY`` ticks; ended ones leave memory after a minute.

Unknown ids are answered from memory too: ids above the highest event id ever created (``keys.LAST_EVENT_ID``,
reread at most every ``_LAST_ID_REREAD_S`` when a higher one is asked for), and misses at or below it for
``_MISSING_TTL_S`` in a bounded table (``_MISSING_MAX`` ids, oldest dropped first).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

from kit.context import Context
from kit.responses import dumps
from seckill import keys, scripts
from seckill.clock import RedisClock
from seckill.errors import EventNotFound, NotStarted
from seckill.news import News
from seckill.settings import SeckillSettings
from seckill.soldout import SoldOutMemory

__all__ = ["CachedEvent", "EventCache", "Rendered"]

log = logging.getLogger("peak.seckill")

_MISSING_MAX = 10_000
_MISSING_TTL_S = 1.0
_LAST_ID_REREAD_S = 0.1
# Events starting within this are rechecked every tick, like those on sale.
_SOON_MS = 60_000
_COLD_EVERY = 10
# An event ended this long ago (on the corrected clock) leaves memory; a later view reads it again.
_ENDED_KEEP_MS = 60_000


class Rendered:
    """The view's body for one state, without ``server_time`` (added per request), and its ETag."""

    __slots__ = ("etag", "head", "headers")

    def __init__(self, head: bytes, etag: bytes, cache_control: bytes) -> None:
        # The JSON object without its closing brace: ``head + b',"server_time":"..."}'`` is the body.
        self.head = head
        self.etag = etag
        self.headers = [(b"etag", etag), (b"cache-control", cache_control)]


class CachedEvent:
    __slots__ = ("_cache_control", "_rendered", "buckets", "end_ms", "event_id", "limit", "price", "secret",
                 "secret_final", "sku", "spread_ms", "start_ms", "stock_left", "stocks", "ticket_required", "title")  # fmt: skip

    def __init__(
        self, event_id: int, view: scripts.EventView, stocks: list[int], cache_control: bytes
    ) -> None:
        self.event_id = event_id
        self.sku, self.title, self.price, self.limit = view.sku, view.title, view.price, view.limit
        self.start_ms, self.end_ms, self.buckets = view.start_ms, view.end_ms, view.buckets
        self.ticket_required, self.spread_ms = view.ticket_required, view.spread_ms
        self.secret = view.secret
        # Redis's clock had reached the start when it answered: a missing secret will never come (an event
        # warmed before tickets existed).
        self.secret_final = view.now_ms >= view.start_ms
        self.stocks = stocks
        # Never negative, never more than was ever put on sale: the buckets' stock counters summed.
        self.stock_left = sum(s for s in stocks if s > 0)
        self._cache_control = cache_control
        self._rendered: dict[str, Rendered] = {}

    def status(self, now_ms: int) -> str:
        if now_ms < self.start_ms:
            return "upcoming"
        if now_ms >= self.end_ms:
            return "ended"
        if self.stock_left <= 0:
            return "sold_out"
        return "active"

    def rendered(self, status: str) -> Rendered:
        shown = self._rendered.get(status)
        if shown is None:
            shown = self._rendered[status] = self._render(status)
        return shown

    def update(self, stocks: list[int], end_ms: int) -> None:
        if stocks != self.stocks or end_ms != self.end_ms:
            self.stocks, self.end_ms = stocks, end_ms
            self.stock_left = sum(s for s in stocks if s > 0)
            self._rendered = {}

    def _render(self, status: str) -> Rendered:
        body = dumps(
            {
                "id": self.event_id, "sku": self.sku, "title": self.title, "price": self.price,
                "starts_at": iso_ms(self.start_ms), "ends_at": iso_ms(self.end_ms), "status": status,
                "stock_left": self.stock_left, "per_user_limit": self.limit,
                "ticket_required": self.ticket_required, "admission_spread_ms": self.spread_ms,
            }
        )  # fmt: skip
        # Weak: the bodies under one ETag differ in server_time only.
        etag = b'W/"%x-%s"' % (self.event_id, _digest(body))
        return Rendered(body[:-1], etag, self._cache_control)


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8).hexdigest().encode()


_last_second: list[Any] = [None, ""]


def iso_ms(ms: int) -> str:
    """``2026-12-01T23:59:59.123Z``; the second's text is kept (strftime is most of the cost)."""
    seconds, millis = divmod(ms, 1000)
    if _last_second[0] != seconds:
        _last_second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_last_second[1]}.{millis:03d}Z"


class EventCache:
    def __init__(self, ctx: Context, sold_out: SoldOutMemory) -> None:
        settings = ctx.settings.of(SeckillSettings)
        self._redis = ctx.redis
        self._recheck_s = settings.view_recheck_s
        self._cache_control = b"public, max-age=%d" % settings.view_max_age_s
        self.ticket_ttl_ms = settings.ticket_ttl_s * 1000
        self.clock = RedisClock()
        self._events: dict[int, CachedEvent] = {}
        self._missing: OrderedDict[int, float] = OrderedDict()
        self._last_id: int | None = None
        self._last_id_read = 0.0
        self._loading: dict[int, asyncio.Future[CachedEvent]] = {}
        self._last_id_reading: asyncio.Future[None] | None = None
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._closed = False
        self._second = -1
        self._second_text = b""
        sold_out.watch(self._sold_out)

    async def start(self) -> None:
        """Measure the clock and learn the highest event id before serving (Redis down: later, in ``run``)."""
        with contextlib.suppress(Exception):
            await self.clock.measure(self._redis)
        await self._read_last_id()

    def hear(self, news: News) -> None:
        news.on(keys.STOCK_BACK_CHANNEL, self._heard, self._reset)

    def peek(self, event_id: int) -> CachedEvent | None:
        return self._events.get(event_id)

    def __len__(self) -> int:
        return len(self._events) + len(self._missing)

    async def load(self, event_id: int) -> CachedEvent:
        """The event from memory, else from Redis (one call however many requests ask at once)."""
        known = self._events.get(event_id)
        if known is not None:
            return known
        if self._last_id is not None and event_id > self._last_id:
            if time.monotonic() - self._last_id_read >= _LAST_ID_REREAD_S:
                await self._reread_last_id()
            if self._last_id is not None and event_id > self._last_id:
                raise EventNotFound(event_id)
        expires = self._missing.get(event_id)
        if expires is not None:
            if expires > time.monotonic():
                raise EventNotFound(event_id)
            del self._missing[event_id]
        return await self._fetch_once(event_id)

    async def secret_of(self, entry: CachedEvent) -> bytes | None:
        """The ticket secret of an event that has started on this process's clock: read from Redis once (and
        ``NotStarted`` if Redis's clock has not reached the start yet). None for an event without one."""
        if entry.secret is not None or entry.secret_final:
            return entry.secret
        fresh = await self._fetch_once(entry.event_id)
        if fresh.secret is None and not fresh.secret_final:
            raise NotStarted()
        return fresh.secret

    def server_time(self, now_ms: int) -> bytes:
        """``,"server_time":"<ISO>"}``: the end of a view body."""
        seconds, millis = divmod(now_ms, 1000)
        if seconds != self._second:
            self._second = seconds
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()
        return b',"server_time":"%s.%03dZ"}' % (self._second_text, millis)

    def forget(self, event_id: int) -> None:
        """Drop an event changed by this process: the next read fetches it."""
        self._events.pop(event_id, None)

    def created(self, event_id: int) -> None:
        """An event made by this process: visible here at once."""
        self._missing.pop(event_id, None)
        # Its creation wrote the highest id (ZADD GT), so the key exists now and is at least this id.
        self._last_id = max(event_id, self._last_id or 0)

    async def _fetch_once(self, event_id: int) -> CachedEvent:
        pending = self._loading.get(event_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(event_id))
            self._loading[event_id] = pending
            pending.add_done_callback(lambda done: self._fetched(event_id, done))
        return await asyncio.shield(pending)

    def _fetched(self, event_id: int, done: asyncio.Future[CachedEvent]) -> None:
        if self._loading.get(event_id) is done:
            del self._loading[event_id]
        if not done.cancelled():
            done.exception()  # retrieved, so a fetch whose every waiter left logs no warning

    async def _fetch(self, event_id: int) -> CachedEvent:
        try:
            view = await scripts.view(self._redis, keys.event_keys(event_id))
        except EventNotFound:
            self._missing[event_id] = time.monotonic() + _MISSING_TTL_S
            self._missing.move_to_end(event_id)
            while len(self._missing) > _MISSING_MAX:
                self._missing.popitem(last=False)
            raise
        stocks = [view.stock]
        if view.buckets > 1:
            # The other buckets' stock: one more round trip, for bucketed events only.
            async with self._redis.pipeline(transaction=False) as pipe:
                for bucket in range(1, view.buckets):
                    pipe.hget(keys.event_keys(event_id, bucket).meta, "stock")
                stocks += [int(s or 0) for s in await pipe.execute()]
        entry = CachedEvent(event_id, view, stocks, self._cache_control)
        self._events[event_id] = entry
        return entry

    async def _reread_last_id(self) -> None:
        if self._last_id_reading is None:
            self._last_id_reading = asyncio.ensure_future(self._read_last_id())
        reading = self._last_id_reading
        try:
            await asyncio.shield(reading)
        finally:
            if self._last_id_reading is reading and reading.done():
                self._last_id_reading = None

    async def _read_last_id(self) -> None:
        self._last_id_read = time.monotonic()
        # Redis unreachable: the last known highest id stands (ids above it stay unknown, 404).
        with contextlib.suppress(Exception):
            self._set_last_id(await self._redis.zscore(keys.LAST_EVENT_ID, "id"))

    def _set_last_id(self, score: float | None) -> None:
        self._last_id = None if score is None else int(score)

    def _sold_out(self, event_id: int, bucket: int, buckets: int) -> None:
        entry = self._events.get(event_id)
        if entry is not None:
            stocks = list(entry.stocks)
            if buckets <= 1:
                stocks = [0] * len(stocks)
            elif bucket < len(stocks):
                stocks[bucket] = 0
            entry.update(stocks, entry.end_ms)

    def _heard(self, data: str) -> None:
        if not data.isdigit():
            return
        event_id = int(data)
        self._missing.pop(event_id, None)
        if self._last_id is not None and event_id > self._last_id:
            self._last_id = event_id
        if event_id in self._events:
            self._dirty.add(event_id)
            self._wake.set()

    def _reset(self) -> None:
        # Messages may have been lost while the listener was away: reread everything now.
        self._dirty.update(self._events)
        self._missing.clear()
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self.clock.close()
        self._wake.set()

    async def run(self) -> None:
        """Reread changed events at once, and every cached event on sale or soon every recheck."""
        tick = 0
        next_recheck = time.monotonic()
        failing = False
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_recheck - time.monotonic()))
            self._wake.clear()
            if self._closed:
                return
            dirty, self._dirty = self._dirty, set()
            now = time.monotonic()
            periodic = now >= next_recheck
            if periodic:
                next_recheck = now + self._recheck_s
                tick += 1
            try:
                await self._recheck(dirty, periodic, tick % _COLD_EVERY == 0)
                failing = False
            except Exception as exc:
                self._dirty |= dirty
                if not failing:
                    log.warning("event cache recheck failed (%s); serving the last known state", exc)
                failing = True

    async def _recheck(self, dirty: set[int], periodic: bool, cold_too: bool) -> None:
        now_ms = self.clock.now_ms()
        if periodic:
            for event_id, entry in list(self._events.items()):
                if now_ms - entry.end_ms > _ENDED_KEEP_MS:
                    del self._events[event_id]
        chosen = [
            entry
            for event_id, entry in self._events.items()
            if event_id in dirty
            or (periodic and (cold_too or entry.start_ms - _SOON_MS <= now_ms < entry.end_ms))
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            if periodic:
                pipe.zscore(keys.LAST_EVENT_ID, "id")
            for entry in chosen:
                for bucket in range(entry.buckets):
                    pipe.hmget(keys.event_keys(entry.event_id, bucket).meta, ["stock", "end_ms"])
            replies: list[Any] = await pipe.execute() if periodic or chosen else []
        if periodic:
            self._last_id_read = time.monotonic()
            self._set_last_id(replies.pop(0))
        found = iter(replies)
        for entry in chosen:
            read = [next(found) for _ in range(entry.buckets)]
            if read[0][0] is None:
                self._events.pop(entry.event_id, None)  # gone from Redis
                continue
            entry.update([int(stock or 0) for stock, _ in read], int(read[0][1] or entry.end_ms))
        # A ticketed event that started on this clock fetches its secret before the first buyer asks.
        for entry in chosen:
            if (
                entry.ticket_required
                and entry.secret is None
                and not entry.secret_final
                and now_ms >= entry.start_ms
            ):
                with contextlib.suppress(NotStarted, EventNotFound):
                    await self.secret_of(entry)

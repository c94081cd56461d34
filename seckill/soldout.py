"""Per-process memory of sold-out events, so a sold-out answer costs no Redis call.

Two ways forget an event: the stock-back message (pub/sub, immediate) and a recheck of every remembered event
against Redis (every PEAK_SECKILL_SOLDOUT_RECHECK_S). Either alone clears the flag, so one lost message or a
dead listener never keeps an event sold out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kit.context import Context
from seckill import keys
from seckill.news import News
from seckill.settings import SeckillSettings

__all__ = ["SoldOutMemory"]

log = logging.getLogger("peak.seckill")


class SoldOutMemory:
    """Sold-out events, and for events split into stock buckets the buckets seen sold out.

    A bucketed event counts as sold out only once every one of its buckets was seen sold out.
    """

    def __init__(self) -> None:
        self._events: set[int] = set()
        # event id -> (its number of buckets, the buckets seen sold out)
        self._buckets: dict[int, tuple[int, set[int]]] = {}
        self._closed = False
        self._watchers: list[Callable[[int, int, int], None]] = []

    def __contains__(self, event_id: int) -> bool:
        return event_id in self._events

    def watch(self, seen: Callable[[int, int, int], None]) -> None:
        """Call ``seen(event_id, bucket, buckets)`` whenever a bucket is marked (``buckets`` 1: the whole event)."""
        self._watchers.append(seen)

    def mark(self, event_id: int, bucket: int = 0, buckets: int = 1) -> None:
        for watcher in self._watchers:
            watcher(event_id, bucket, buckets)
        if buckets <= 1:
            self._events.add(event_id)
            return
        seen = self._buckets.setdefault(event_id, (buckets, set()))[1]
        seen.add(bucket)
        if len(seen) >= buckets:
            self._events.add(event_id)

    def bucket_sold_out(self, event_id: int, bucket: int) -> bool:
        known = self._buckets.get(event_id)
        return known is not None and bucket in known[1]

    def forget(self, event_id: int) -> None:
        self._events.discard(event_id)
        self._buckets.pop(event_id, None)

    def hear(self, news: News) -> None:
        """Forget events named on the stock-back channel; after a (re)subscription forget everything."""
        news.on(keys.STOCK_BACK_CHANNEL, self._heard, self._events.clear)

    def _heard(self, data: str) -> None:
        if data.isdigit():
            self.forget(int(data))

    def close(self) -> None:
        self._closed = True

    async def recheck(self, ctx: Context) -> None:
        every_s = ctx.settings.of(SeckillSettings).soldout_recheck_s
        while not self._closed:
            await asyncio.sleep(every_s)
            remembered = [
                (e, self._buckets[e][0] if e in self._buckets else 1) for e in {*self._events, *self._buckets}
            ]
            if not remembered:
                continue
            try:
                async with ctx.redis.pipeline(transaction=False) as pipe:
                    for event_id, buckets in remembered:
                        for bucket in range(buckets):
                            pipe.hget(keys.event_keys(event_id, bucket).meta, "stock")
                    stocks = iter(await pipe.execute())
            except Exception as exc:
                log.warning("sold-out recheck failed (%s); trying again", exc)
                continue
            for event_id, buckets in remembered:
                back = {b for b in range(buckets) if (stock := next(stocks)) is None or int(stock) > 0}
                if back:
                    self._events.discard(event_id)
                    if event_id in self._buckets:
                        self._buckets[event_id][1].difference_update(back)

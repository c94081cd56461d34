"""The process's view of the Redis clock, on which every sale window is judged (reserve.lua reads TIME).

``now_ms()`` is the process clock plus an offset measured against Redis ``TIME``: of a few samples the one
with the smallest round trip, whose midpoint is closest to the moment Redis read its clock, so the error is
at most half that round trip (tens of microseconds on a LAN). Re-measured every ``_EVERY_S``; while Redis is
unreachable the last offset stays (clocks drift by microseconds per second, not milliseconds).
"""

from __future__ import annotations

import asyncio
import logging
import time

from kit.redis import LaneCluster, RedisClient

__all__ = ["RedisClock"]

log = logging.getLogger("peak.seckill")

_SAMPLES = 5
_EVERY_S = 5.0


class RedisClock:
    def __init__(self) -> None:
        self.offset_ms = 0.0
        # The round trip of the sample the offset came from (None: never measured; the process clock alone).
        self.round_trip_ms: float | None = None
        self._closed = False

    def now_ms(self) -> int:
        return int(time.time() * 1000 + self.offset_ms)

    async def measure(self, redis: RedisClient) -> None:
        best: tuple[float, float] | None = None
        for _ in range(_SAMPLES):
            before = time.time()
            if isinstance(redis, LaneCluster):
                # One node's clock (a cluster's nodes keep theirs by NTP like any two machines).
                seconds, micros = await redis.time(target_nodes=LaneCluster.RANDOM)
            else:
                seconds, micros = await redis.time()
            after = time.time()
            trip = after - before
            offset = (seconds + micros / 1e6) - (before + after) / 2
            if best is None or trip < best[0]:
                best = (trip, offset)
        assert best is not None
        self.round_trip_ms, self.offset_ms = best[0] * 1000, best[1] * 1000

    async def run(self, redis: RedisClient) -> None:
        failing = False
        while not self._closed:
            try:
                await self.measure(redis)
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("Redis clock offset not measured (%s); keeping %.1f ms", exc, self.offset_ms)
                failing = True
            await asyncio.sleep(_EVERY_S)

    def close(self) -> None:
        self._closed = True

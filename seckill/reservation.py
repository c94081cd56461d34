"""The purchase path: one Redis script call, shared by the purchases of one event that arrive together.

Purchases of the same event that arrive in the same tick of the event loop, or while this process already has
a call of that event in flight, are sent together: the script runs them one after the other, in arrival
order, exactly as separate calls would, and answers each one. This spends one Redis round trip (and one
redis-py command) on many purchases, which is where a Python server spends its time on this path. A lone
purchase still goes out on the next tick. PostgreSQL is never touched here.

An event split into stock buckets sends each purchase to the user's home bucket (coalesced per bucket). Only
when that bucket is sold out does the purchase cost more calls: the home bucket holds the user's quota and
the other buckets are offered the order in turn (``seckill/buckets.py`` says why this keeps the limits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kit.context import Context
from kit.errors import ServiceUnavailable
from seckill import keys
from seckill.buckets import home_bucket
from seckill.errors import reservation_error, sold_out
from seckill.ids import new_order_id
from seckill.soldout import SoldOut

__all__ = ["Reservation", "Reserver"]

log = logging.getLogger("peak.seckill")

# Script calls of one event in flight at once per process. Purchases arriving meanwhile wait for the next
# call, so under load the batches grow instead of the calls multiplying (measured under wrk: 1 in flight gave
# batches of ~10 and 17% less API CPU per purchase than 2, which gave ~5).
_MAX_INFLIGHT = 1


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: str
    # False when an Idempotency-Key (or a lost-reply retry) found the order made earlier.
    new: bool


@dataclass(slots=True)
class _Attempt:
    order_id: str
    # The purchase as the script reads it: "order id\nuser id\nclient IP\nidempotency key".
    line: str
    answer: asyncio.Future[list[Any]]


class Reserver:
    def __init__(self, ctx: Context, sold_out_events: SoldOut) -> None:
        self._ctx = ctx
        self._sold_out = sold_out_events
        # Keyed by (event id, bucket): purchases are coalesced per bucket, since each is its own slot.
        self._waiting: dict[tuple[int, int], list[_Attempt]] = {}
        self._inflight: dict[tuple[int, int], int] = {}
        self._ticking: set[tuple[int, int]] = set()
        self._calls: set[asyncio.Task[None]] = set()
        # Event id -> its number of stock buckets (fixed at creation), learnt once per process.
        self._bucket_counts: dict[int, int] = {}
        self._call_parts: dict[tuple[int, int], tuple[keys.EventKeys, list[str | int]]] = {}
        self._script = ctx.scripts["seckill_reserve"]
        self._take_script = ctx.scripts["seckill_take"]
        self._hold_script = ctx.scripts["seckill_hold"]
        settings = ctx.settings
        self._rates = [settings.seckill_user_rate_per_s, settings.seckill_ip_rate_per_s, keys.RATE_WINDOW_MS]
        self._coalesce_max = settings.seckill_coalesce_max

    async def reserve(
        self, event_id: int, user_id: str, ip: str, idempotency_key: str | None = None
    ) -> Reservation:
        # A retry carrying an Idempotency-Key must find its order even after the sell-out, so only plain
        # attempts take the memory's answer.
        if not idempotency_key and event_id in self._sold_out:
            raise sold_out()
        if "\n" in user_id or "\n" in ip or (idempotency_key and "\n" in idempotency_key):
            # Header values cannot hold one; the script call packs a purchase as lines.
            raise ValueError("user ids, IPs and idempotency keys never contain a line break")
        buckets = self._bucket_counts.get(event_id) or await self._learn_buckets(event_id)
        home = home_bucket(user_id, buckets)
        slot = (event_id, home)
        loop = asyncio.get_running_loop()
        order_id = new_order_id()
        line = f"{order_id}\n{user_id}\n{ip}\n{idempotency_key or ''}"
        attempt = _Attempt(order_id, line, loop.create_future())
        batch = self._waiting.setdefault(slot, [])
        batch.append(attempt)
        if len(batch) >= self._coalesce_max:
            self._send(slot)
        elif slot not in self._ticking and self._inflight.get(slot, 0) < _MAX_INFLIGHT:
            self._ticking.add(slot)
            loop.call_soon(self._tick, slot)
        reply = await attempt.answer
        code = reply[0]
        if code == "ok":
            if int(reply[2]) <= 0:
                self._sold_out.mark(event_id, home, buckets)
            return Reservation(str(reply[1]), True)
        if code == "replay":
            return Reservation(str(reply[1]), False)
        if code == "hold":
            self._sold_out.mark(event_id, home, buckets)
            return await self._take(event_id, buckets, home, user_id, str(reply[1]), str(reply[2]))
        if code == "sold_out":
            self._sold_out.mark(event_id)
        raise reservation_error(str(code), reply[1] if len(reply) > 1 else None, event_id)

    async def _learn_buckets(self, event_id: int) -> int:
        count, start = await self._ctx.redis.hmget(keys.event_keys(event_id).meta, ["buckets", "start_ms"])
        if start is None:
            return 1  # no such event (yet): the script answers not_found; nothing to remember
        self._bucket_counts[event_id] = int(count or 1)
        return self._bucket_counts[event_id]

    async def _take(
        self, event_id: int, buckets: int, home: int, user_id: str, order_id: str, seq: str
    ) -> Reservation:
        """The home bucket is sold out and holds this purchase: offer it to the other buckets in turn."""
        redis = self._ctx.redis
        home_keys = keys.event_keys(event_id, home)
        for step in range(1, buckets):
            bucket = (home + step) % buckets
            if self._sold_out.bucket_sold_out(event_id, bucket):
                continue  # never offered there, so certainly not taken there
            try:
                reply = await self._take_script(
                    redis, keys.event_keys(event_id, bucket).take(), [order_id, user_id, seq, home]
                )
            except Exception as exc:
                # Taken or not, nobody knows: the hold stays, and the hold sweeper settles it.
                log.warning("seckill_take failed for event %d bucket %d: %s", event_id, bucket, exc)
                raise ServiceUnavailable("the sale is briefly unavailable; try again") from None
            code = reply[0]
            if code in ("ok", "replay"):
                if code == "ok" and int(reply[2]) <= 0:
                    self._sold_out.mark(event_id, bucket, buckets)
                await self._resolve(home_keys, "confirm", order_id)
                return Reservation(order_id, True)
            if code == "sold_out":
                self._sold_out.mark(event_id, bucket, buckets)
                continue
            if code != "void":
                await self._resolve(home_keys, "release", order_id)
            raise reservation_error(str(code), None, event_id)
        # Every other bucket said sold out (or was known to be): nothing took the hold, give the quota back.
        await self._resolve(home_keys, "release", order_id)
        self._sold_out.mark(event_id)
        raise sold_out()

    async def _resolve(self, home: keys.EventKeys, how: str, order_id: str) -> None:
        try:
            await self._hold_script(self._ctx.redis, home.hold(), [how, order_id])
        except Exception as exc:
            # Left to the hold sweeper, which finds out whether a bucket took the order.
            log.warning("seckill_hold %s failed for event %d: %s", how, home.event_id, exc)

    def _tick(self, slot: tuple[int, int]) -> None:
        self._ticking.discard(slot)
        if self._inflight.get(slot, 0) < _MAX_INFLIGHT:
            self._send(slot)

    def _send(self, slot: tuple[int, int]) -> None:
        batch = self._waiting.pop(slot, None)
        if batch:
            self._inflight[slot] = self._inflight.get(slot, 0) + 1
            task = asyncio.get_running_loop().create_task(self._call(slot, batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    def _done(self, slot: tuple[int, int]) -> None:
        self._inflight[slot] -= 1
        # Purchases that arrived during the call have waited one call already: send them now.
        if self._waiting.get(slot):
            self._send(slot)

    async def _call(self, slot: tuple[int, int], batch: list[_Attempt]) -> None:
        try:
            replies = await self._run(slot[0], slot[1], batch[0].order_id, [a.line for a in batch])
        except Exception as exc:
            log.warning("seckill_reserve failed for event %d: %s", slot[0], exc)
            for a in batch:
                if not a.answer.done():
                    a.answer.set_exception(ServiceUnavailable("the sale is briefly unavailable; try again"))
            return
        finally:
            self._done(slot)
        for a, reply in zip(batch, replies, strict=True):
            if not a.answer.done():
                a.answer.set_result(reply)

    async def call_script(
        self, event_id: int, purchases: Sequence[tuple[str, str, str, str]], *, bucket: int = 0
    ) -> list[Any]:
        """One call of the reservation script: (order id, user id, IP, idempotency key or "") -> replies."""
        return await self._run(event_id, bucket, purchases[0][0], ["\n".join(p) for p in purchases])

    async def _run(self, event_id: int, bucket: int, first_order_id: str, lines: list[str]) -> list[Any]:
        k, head = self._call_parts.get((event_id, bucket)) or self._learn_call_parts(event_id, bucket)
        return list(await self._script(self._ctx.redis, k.reserve(first_order_id), [*head, *lines]))

    def _learn_call_parts(self, event_id: int, bucket: int) -> tuple[keys.EventKeys, list[str | int]]:
        """A bucket's keys and the arguments before the purchases, the same on every call."""
        k = keys.event_keys(event_id, bucket)
        head: list[str | int] = [*self._rates, k.user_rate_prefix, k.ip_rate_prefix, keys.REPLAY_MS]
        self._call_parts[(event_id, bucket)] = (k, head)
        return k, head

    async def drain(self) -> None:
        """Wait for the script calls in flight (process shutdown)."""
        while self._waiting or self._calls:
            for slot in list(self._waiting):
                self._send(slot)
            if self._calls:
                await asyncio.gather(*self._calls, return_exceptions=True)

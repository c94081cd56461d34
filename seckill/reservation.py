"""The purchase path: one Redis script call, shared by the purchases of one event that arrive together.

Purchases of the same event that arrive in the same tick of the event loop, or while this process already has
a call of that event in flight, are sent together (``kit/coalescer.py``): the script runs them one after the
other, in arrival order, exactly as separate calls would, and answers each one. This spends one Redis round
trip (and one redis-py command) on many purchases, which is where a Python server spends its time on this
path. A lone purchase still goes out on the next tick. PostgreSQL is never touched here.

An event split into stock buckets sends each purchase to the user's home bucket (coalesced per bucket). Only
when that bucket is sold out does the purchase cost more calls: the home bucket holds the user's quota and
the other buckets are offered the order in turn (``seckill/buckets.py`` says why this keeps the limits).
"""

from __future__ import annotations

import logging
from typing import Literal

from kit.coalescer import Coalescer
from kit.context import Context
from kit.lua import EncodableT
from seckill import keys, scripts
from seckill.buckets import home_bucket
from seckill.errors import OrderIdTaken, SaleUnavailable, SoldOut, Voided
from seckill.ids import new_order_id
from seckill.scripts import Held, Reservation, Taken
from seckill.settings import SeckillSettings
from seckill.soldout import SoldOutMemory

__all__ = ["Reservation", "Reserver"]

log = logging.getLogger("peak.seckill")

# Script calls of one event in flight at once per process. Purchases arriving meanwhile wait for the next
# call, so under load the batches grow instead of the calls multiplying (measured under wrk: 1 in flight gave
# batches of ~10 and 17% less API CPU per purchase than 2, which gave ~5).
_MAX_IN_FLIGHT = 1

# (event id, bucket): purchases are coalesced per bucket, since each is its own slot.
_Slot = tuple[int, int]


class Reserver:
    def __init__(self, ctx: Context, sold_out: SoldOutMemory) -> None:
        self._redis = ctx.redis
        self._sold_out = sold_out
        self._settings = ctx.settings.of(SeckillSettings)
        # A purchase travels as the line "order id\nuser id\nclient IP\nidempotency key" (reserve.lua's ARGV).
        self._coalescer: Coalescer[_Slot, str, Reservation | Held] = Coalescer(
            self._send, max_in_flight=_MAX_IN_FLIGHT, max_batch=self._settings.coalesce_max
        )
        # Event id -> its number of stock buckets (fixed at creation), learnt once per process.
        self._bucket_counts: dict[int, int] = {}
        self._call_parts: dict[_Slot, tuple[keys.EventKeys, list[EncodableT]]] = {}

    async def reserve(
        self, event_id: int, user_id: str, ip: str, idempotency_key: str | None = None
    ) -> Reservation:
        # A retry carrying an Idempotency-Key must find its order even after the sell-out, so only plain
        # attempts take the memory's answer.
        if not idempotency_key and event_id in self._sold_out:
            raise SoldOut()
        if "\n" in user_id or "\n" in ip or (idempotency_key and "\n" in idempotency_key):
            # Header values cannot hold one; the script call packs a purchase as lines.
            raise ValueError("user ids, IPs and idempotency keys never contain a line break")
        buckets = self._bucket_counts.get(event_id) or await self._learn_buckets(event_id)
        home = home_bucket(user_id, buckets)
        rest = f"\n{user_id}\n{ip}\n{idempotency_key or ''}"
        try:
            made = await self._coalescer((event_id, home), new_order_id(event_id, home) + rest)
        except OrderIdTaken:
            made = await self._coalescer((event_id, home), new_order_id(event_id, home) + rest)
        if isinstance(made, Held):
            return await self._take(event_id, buckets, home, user_id, made.order_id, made.seq)
        return made

    async def drain(self) -> None:
        """Wait for the script calls in flight (process shutdown)."""
        await self._coalescer.drain()

    async def _learn_buckets(self, event_id: int) -> int:
        count, start = await self._redis.hmget(keys.event_keys(event_id).meta, ["buckets", "start_ms"])
        if start is None:
            return 1  # no such event (yet): the script answers not_found; nothing to remember
        self._bucket_counts[event_id] = int(count or 1)
        return self._bucket_counts[event_id]

    async def _send(self, slot: _Slot, purchases: list[str]) -> list[Reservation | Held | Exception]:
        event_id, bucket = slot
        k, head = self._call_parts.get(slot) or self._learn_call_parts(slot)
        try:
            replies = await scripts.reserve(self._redis, k, head, purchases)
        except Exception as exc:
            log.warning("%s failed for event %d: %s", scripts.RESERVE.name, event_id, exc)
            return [SaleUnavailable() for _ in purchases]
        answers, emptied = scripts.reservations(replies, event_id)
        if emptied:
            self._sold_out.mark(event_id, bucket, self._bucket_counts.get(event_id, 1))
        return answers

    def _learn_call_parts(self, slot: _Slot) -> tuple[keys.EventKeys, list[EncodableT]]:
        """A bucket's keys and the arguments before the purchases, the same on every call."""
        k = keys.event_keys(*slot)
        self._call_parts[slot] = parts = (k, scripts.reserve_args(self._settings, k))
        return parts

    async def _take(
        self, event_id: int, buckets: int, home: int, user_id: str, order_id: str, seq: str
    ) -> Reservation:
        """The home bucket is sold out and holds this purchase: offer it to the other buckets in turn."""
        home_keys = keys.event_keys(event_id, home)
        for step in range(1, buckets):
            bucket = (home + step) % buckets
            if self._sold_out.bucket_sold_out(event_id, bucket):
                continue  # never offered there, so certainly not taken there
            try:
                taken = await scripts.take(
                    self._redis, keys.event_keys(event_id, bucket), order_id, user_id, seq, home
                )
            except Exception as exc:
                # Taken or not, nobody knows: the hold stays, and the hold sweeper settles it.
                log.warning("%s failed for event %d bucket %d: %s", scripts.TAKE.name, event_id, bucket, exc)
                raise SaleUnavailable() from None
            if isinstance(taken, Taken):
                if taken.emptied:
                    self._sold_out.mark(event_id, bucket, buckets)
                await self._resolve(home_keys, "confirm", order_id)
                return Reservation(order_id, True)
            if isinstance(taken, SoldOut):
                self._sold_out.mark(event_id, bucket, buckets)
                continue
            if not isinstance(taken, Voided):
                await self._resolve(home_keys, "release", order_id)
            raise taken
        # Every other bucket said sold out (or was known to be): nothing took the hold, give the quota back.
        await self._resolve(home_keys, "release", order_id)
        self._sold_out.mark(event_id)
        raise SoldOut()

    async def _resolve(self, home: keys.EventKeys, how: Literal["confirm", "release"], order_id: str) -> None:
        try:
            await scripts.resolve_hold(self._redis, home, how, order_id)
        except Exception as exc:
            # Left to the hold sweeper, which finds out whether a bucket took the order.
            log.warning("%s %s failed for event %d: %s", scripts.HOLD.name, how, home.event_id, exc)

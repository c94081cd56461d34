"""The purchase path: one Redis script call, shared by the purchases of one event that arrive together.

Purchases of the same event that arrive in the same tick of the event loop, or while this process already has
a call of that event in flight, are sent together (``kit/coalescer.py``): the script runs them one after the
other, in arrival order, exactly as separate calls would, and answers each one. This spends one Redis round
trip (and one redis-py command) on many purchases, which is where a Python server spends its time on this
path. A lone purchase still goes out on the next tick. PostgreSQL is never touched here.

An event split into stock buckets sends each purchase to the user's home bucket (coalesced per bucket). Only
when that bucket is sold out does the purchase cost more calls: the home bucket holds the user's quota and
the other buckets are offered the order in turn (``seckill/buckets.py`` says why this keeps the limits).

Durability (``PEAK_SECKILL_DURABILITY``): with ``replica`` each script call is followed, in the same write on the
same connection, by ``WAIT 1 <timeout>`` (``kit/lua.py``), so a purchase is answered 202 only once a replica has
its reservation; a WAIT that falls short answers the whole call's purchases 503 (``NotReplicated``), and the same
Idempotency-Key again finds the order and waits again. An event whose node did not write its state (a failover,
a restart) answers "repairing" (503) and this process re-derives it in the background (``seckill/rederive.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from kit.coalescer import Coalescer
from kit.context import Context
from kit.lua import EncodableT, ReplicaWaitError, Wait
from kit.redis import online_replicas, replicas
from seckill import keys, scripts
from seckill.buckets import home_bucket
from seckill.errors import NotReplicated, OrderIdTaken, Repairing, SaleUnavailable, SoldOut, Voided
from seckill.ids import new_order_id
from seckill.rederive import Repairer
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

# A primary found without any replica in sync (its replica was promoted in its place, or is resyncing) answers
# with durability "local" for this long; then a call waits for a replica again.
_UNREPLICATED_S = 1.0


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
        # Event id -> the lookup in flight: the crowd of first purchases of an event shares one read.
        self._learning: dict[int, asyncio.Future[int]] = {}
        self._call_parts: dict[_Slot, tuple[keys.EventKeys, list[EncodableT]]] = {}
        self._repairer = Repairer(ctx, self._settings.repair_interval_s)
        # Decided by start() (None: not yet, as when Redis did not answer then; the next call decides).
        self._wait: Wait | None = None
        self._durability_known = self._settings.durability == "local"
        # Buckets whose primary had no replica in sync, until when they are answered without WAIT.
        self._unreplicated: dict[_Slot, float] = {}
        if self._settings.durability == "replica":
            self._wait, self._durability_known = Wait(1, self._settings.durability_timeout_ms), True

    @property
    def durability(self) -> str:
        return "replica" if self._wait else "local" if self._durability_known else "undecided"

    async def start(self) -> None:
        """With durability ``auto``: ``replica`` if the Redis deployment has replicas now, else ``local``."""
        if self._durability_known:
            return
        try:
            found = await replicas(self._redis)
        except Exception as exc:
            log.warning(
                "could not tell whether Redis has replicas (asked again on the first purchase): %s", exc
            )
            return
        self._wait = Wait(1, self._settings.durability_timeout_ms) if found else None
        self._durability_known = True
        log.info("purchases are acknowledged with durability %s", self.durability)

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
        await self._repairer.aclose()

    async def _learn_buckets(self, event_id: int) -> int:
        learning = self._learning.get(event_id)
        if learning is None:
            learning = self._learning[event_id] = asyncio.ensure_future(self._read_buckets(event_id))
            learning.add_done_callback(lambda _: self._learning.pop(event_id, None))
        # Shielded: a shopper who gives up does not cancel the others' lookup.
        return await asyncio.shield(learning)

    async def _read_buckets(self, event_id: int) -> int:
        count, start = await self._redis.hmget(keys.event_keys(event_id).meta, ["buckets", "start_ms"])
        if start is None:
            return 1  # no such event (yet): the script answers not_found; nothing to remember
        self._bucket_counts[event_id] = int(count or 1)
        return self._bucket_counts[event_id]

    async def _send(self, slot: _Slot, purchases: list[str]) -> list[Reservation | Held | Exception]:
        event_id, bucket = slot
        k, head = self._call_parts.get(slot) or self._learn_call_parts(slot)
        if not self._durability_known:
            await self.start()
        wait = self._wait_for(slot)
        try:
            try:
                replies = await scripts.reserve(self._redis, k, head, purchases, wait)
            except ReplicaWaitError as exc:
                replies = await self._without_replica(slot, k, exc)
            else:
                if wait is not None and self._unreplicated.pop(slot, None) is not None:
                    log.warning("event %d bucket %d: a replica confirms purchases again", event_id, bucket)
        except NotReplicated:
            return [NotReplicated() for _ in purchases]
        except Exception as exc:
            log.warning("%s failed for event %d: %s", scripts.RESERVE.name, event_id, exc)
            return [SaleUnavailable() for _ in purchases]
        answers, emptied = scripts.reservations(replies, event_id)
        if answers and isinstance(answers[0], Repairing):
            self._repairer.needed(event_id)
        if emptied:
            self._sold_out.mark(event_id, bucket, self._bucket_counts.get(event_id, 1))
        return answers

    def _wait_for(self, slot: _Slot) -> Wait | None:
        until = self._unreplicated.get(slot)
        return None if until is not None and until > time.monotonic() else self._wait

    async def _without_replica(self, slot: _Slot, k: keys.EventKeys, exc: ReplicaWaitError) -> Any:
        """A WAIT fell short. A primary left without any replica in sync (its own was promoted when the old
        primary died, or is resyncing) cannot make anything durable: rather than stop the sale, its answer
        stands, as with durability "local" (logged). Otherwise (a replica that is slow, stopped or cut off):
        NotReplicated, 503."""
        try:
            online = await online_replicas(self._redis, k.meta)
        except Exception:
            online = -1
        if online != 0:
            log.warning("purchases of event %d not confirmed by a replica: %s", k.event_id, exc)
            raise NotReplicated() from None
        if slot not in self._unreplicated:
            log.warning(
                "event %d bucket %d: its Redis primary has no replica in sync; purchases are acknowledged "
                "locally (durability local) until one is back", k.event_id, k.bucket,
            )  # fmt: skip
        self._unreplicated[slot] = time.monotonic() + _UNREPLICATED_S
        return exc.answer

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
                there = keys.event_keys(event_id, bucket)
                try:
                    taken = await scripts.take(
                        self._redis, there, order_id, user_id, seq, home, self._wait_for((event_id, bucket))
                    )
                except ReplicaWaitError as exc:
                    # Not durable yet (NotReplicated): the hold stays, and the shopper's retry finds the order.
                    taken = scripts.taken(
                        await self._without_replica((event_id, bucket), there, exc), event_id
                    )
            except NotReplicated:
                raise
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
            if isinstance(taken, Repairing):
                # That bucket's node changed: nothing was taken there; the hold stays for the sweeper to settle.
                self._repairer.needed(event_id)
            elif not isinstance(taken, Voided):
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

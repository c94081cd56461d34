"""Calls that arrive together share one trip to Redis.

A Python server spends most of a hot request's CPU on the client side of a Redis call (30-90 µs whatever its
size, ``kit/lane.py``), so concurrent calls are gathered and sent together. ``Coalescer`` does the gathering
for any kind of item, grouped by a key: the first item of a key goes out on the next tick of the event loop;
while ``max_in_flight`` sends of that key are out, later items wait and leave together as soon as one comes
back, so batches grow with load and add nothing when idle. A batch of ``max_batch`` items leaves at once.

Two users: SSO's strict checks (``ScriptBatcher``: many calls of one script in one write; one process did
11,000 EVALSHA/s one by one through redis-py, 60,000/s in pipelines of 64 on the 2-core dev VM) and seckill's
reservations (many purchases of one event in one script call, ``seckill/reservation.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from kit.lua import Call, EncodableT, Script
from kit.redis import RedisClient

__all__ = ["Coalescer", "ScriptBatcher"]

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

# A batch's answers, one per item in order; an exception in an item's place is raised to that caller.
Send = Callable[[K, list[I]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[K, I, R]):
    def __init__(self, send: Send[K, I, R], *, max_in_flight: int = 1, max_batch: int = 512) -> None:
        self._send = send
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._in_flight: dict[K, int] = {}
        self._ticking: set[K] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, key: K, item: I) -> asyncio.Future[R]:
        """The answer to ``item`` once its batch is back (a plain future, no coroutine per call: this runs
        once per purchase)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        batch = self._waiting.setdefault(key, [])
        batch.append((item, future))
        if len(batch) >= self._max_batch:
            self._start(key)
        elif key not in self._ticking and self._in_flight.get(key, 0) < self._max_in_flight:
            self._ticking.add(key)
            loop.call_soon(self._tick, key)
        return future

    async def drain(self) -> None:
        """Send what waits and wait for every send in flight (process shutdown)."""
        while self._waiting or self._tasks:
            for key in list(self._waiting):
                self._start(key)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _tick(self, key: K) -> None:
        self._ticking.discard(key)
        if self._in_flight.get(key, 0) < self._max_in_flight:
            self._start(key)

    def _start(self, key: K) -> None:
        waiting = self._waiting.pop(key, None)
        if not waiting:
            return
        batch, rest = waiting[: self._max_batch], waiting[self._max_batch :]
        if rest:
            self._waiting[key] = rest
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            answers: Sequence[R | BaseException] = await self._send(key, [item for item, _ in batch])
        except Exception as exc:
            answers = [exc] * len(batch)
        finally:
            self._in_flight[key] -= 1
            # Items that arrived during the send have waited one trip already: send them now.
            if self._waiting.get(key):
                self._start(key)
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # the caller went away (cancelled request)
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)


_Call = tuple[Sequence[str], Sequence[EncodableT]]


class ScriptBatcher:
    """Concurrent calls of one script in one write (one per primary on a cluster). With
    ``same_keys_same_answer``, calls of a batch on the same keys share one command (single flight): right for
    idempotent checks such as the session touch, where two requests arriving together get the answer either
    would have got."""

    def __init__(
        self,
        redis: RedisClient,
        script: Script,
        *,
        same_keys_same_answer: bool = False,
        max_in_flight: int = 2,
        max_batch: int = 512,
    ) -> None:
        self._redis = redis
        self._script = script
        self._share = same_keys_same_answer
        self._coalescer: Coalescer[None, _Call, Any] = Coalescer(
            self._send, max_in_flight=max_in_flight, max_batch=max_batch
        )

    def __call__(self, keys: Sequence[str], args: Sequence[EncodableT]) -> asyncio.Future[Any]:
        # The coalescer's future itself: a coroutine around it would cost a strict check a frame to resume.
        return self._coalescer(None, (keys, args))

    async def drain(self) -> None:
        await self._coalescer.drain()

    async def _send(self, _: None, calls: list[_Call]) -> list[Any]:
        if not self._share:
            return await self._script.run_many(self._redis, calls)
        commands: list[Call] = []
        index: dict[tuple[str, ...], int] = {}
        at_of: list[int] = []
        for keys, args in calls:
            at = index.get(tuple(keys))
            if at is None:
                at = index[tuple(keys)] = len(commands)
                commands.append((keys, args))
            at_of.append(at)
        results = await self._script.run_many(self._redis, commands)
        return [results[at] for at in at_of]

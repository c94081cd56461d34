"""Plain read commands sent together on the script lanes (``kit/lane.py``), for reads too hot for a script.

Redis 7.0 spends about 11 µs of fixed cost on every EVALSHA on the development VM (a strict check's touch
script: 14.9 µs in ``INFO commandstats``, its EXISTS and HMGET inside it 3.2 µs). Where a hot path only reads,
``read_many`` sends its commands as they are: every command of a read names keys of one slot (one hash tag),
the reads of a batch go out in one write per primary, and each read gets its replies in order, or the error
that stopped it. Reads change nothing, so one that met a redirection or a lost connection is simply sent
again through redis-py, which follows the cluster's redirections and refreshes its slot map. ``ReadBatcher`` gathers concurrent callers' reads into
one ``read_many`` (``kit.coalescer``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from kit.coalescer import Coalescer
from kit.lane import Lane
from kit.lua import REDIRECTIONS
from kit.redis import LaneCluster, RedisClient

__all__ = ["Read", "ReadBatcher", "read_many"]

# One read: the commands (each a tuple of its words), all on keys of one slot; the first word after the
# command's name is a key, and the read goes to the primary of the first command's key.
Read = Sequence[tuple[str, ...]]


async def read_many(redis: RedisClient, reads: Sequence[Read]) -> list[list[Any] | Exception]:
    """Each read's replies in order (an error reply in its place), or the exception that kept it from Redis."""
    if not isinstance(redis, LaneCluster):
        return await _on_lane(redis.lane, reads)
    by_lane: dict[Lane, list[int]] = {}
    for at, lane in enumerate(await redis.lanes_for([read[0][1] for read in reads])):
        by_lane.setdefault(lane, []).append(at)
    results: list[list[Any] | Exception] = [[] for _ in reads]

    async def run(lane: Lane, ats: list[int]) -> None:
        for at, answer in zip(ats, await _on_lane(lane, [reads[at] for at in ats]), strict=True):
            results[at] = answer

    await asyncio.gather(*(run(lane, ats) for lane, ats in by_lane.items()))
    for at, result in enumerate(results):
        if _elsewhere(result):
            try:
                results[at] = [await redis.execute_command(*command) for command in reads[at]]
            except Exception as exc:
                results[at] = exc
    return results


class ReadBatcher:
    """Concurrent reads in one write (``read_many``): each caller gets its read's replies in order, an error
    reply in its place; a read that could not reach Redis raises to its caller."""

    def __init__(self, redis: RedisClient, *, max_in_flight: int = 2) -> None:
        self._redis = redis
        self._coalescer: Coalescer[None, Read, list[Any]] = Coalescer(self._send, max_in_flight=max_in_flight)

    def __call__(self, read: Read) -> asyncio.Future[list[Any]]:
        return self._coalescer(None, read)

    async def _send(self, _: None, reads: list[Read]) -> list[list[Any] | Exception]:
        return await read_many(self._redis, reads)


async def _on_lane(lane: Lane, reads: Sequence[Read]) -> list[list[Any] | Exception]:
    # hiredis' stub types the argument as a 1-tuple; it takes any tuple of words.
    packed = b"".join(hiredis.pack_command(command) for read in reads for command in read)  # type: ignore[arg-type]
    try:
        replies = await lane.execute(packed, sum(len(read) for read in reads))
    except (ConnectionError, TimeoutError) as exc:
        return [exc] * len(reads)
    answers: list[list[Any] | Exception] = []
    at = 0
    for read in reads:
        answers.append(replies[at : at + len(read)])
        at += len(read)
    return answers


def _elsewhere(result: list[Any] | Exception) -> bool:
    if isinstance(result, (ConnectionError, TimeoutError)):
        return True
    return isinstance(result, list) and any(
        isinstance(reply, ResponseError) and str(reply).startswith(REDIRECTIONS) for reply in result
    )

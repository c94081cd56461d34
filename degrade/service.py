"""The per-process side of degrade: the board kept in sync with Redis, the heartbeat, the sampler.

Sync: SUBSCRIBE to the switch channel (a change arrives in milliseconds) plus a full resync every
PEAK_DEGRADE_RESYNC_S, which also catches what was published while the subscription was down. When Redis
cannot be reached the board keeps its last modes and reports ``redis: unreachable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson

from degrade import keys, plans, store
from degrade.board import Board, iso_ms
from degrade.breaker import Breakers
from degrade.client import breakers
from degrade.controller import Controller
from degrade.rates import Counts
from degrade.scripts import PlanStatus
from degrade.series import SeriesWriter
from degrade.settings import DegradeSettings
from degrade.signals import Signals
from kit.admins import AdminTokens
from kit.component import Role
from kit.context import Context
from kit.outage import Outage, store_outage
from kit.redis import PubSubSource

__all__ = ["Degrade", "degrade_service"]

log = logging.getLogger("peak.degrade")

_RETRY_S = 0.5


class Degrade:
    """The degrade service of one process (``ctx.get(Degrade)``)."""

    def __init__(self, ctx: Context, role: Role, board: Board, signals: Signals) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.of(DegradeSettings)
        self.role = role
        self.board = board
        self.signals = signals
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{role}:{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        enabled = role == "api" and self.settings.controller
        self.controller = Controller(ctx, board, self.process_id) if enabled else None
        # Loops stop on this event rather than on cancellation alone: redis-py may swallow a CancelledError
        # that arrives in the middle of a command.
        self.stopping = asyncio.Event()

    async def pause(self, seconds: float) -> bool:
        """Sleep; False once the service is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return not self.stopping.is_set()

    async def resync(self) -> None:
        try:
            stored = await store.load(self.ctx.redis)
        except Exception as exc:  # any failure means: keep the last modes and say so
            if self.board.redis_ok:
                log.warning("degrade: Redis unreachable, keeping the last known modes: %s", exc)
            self.board.mark_unreachable(exc)
            return
        if not self.board.redis_ok and self.board.synced_at:
            log.info("degrade: Redis reachable again, modes resynchronised")
        self.board.replace(stored)

    def status(self) -> dict[str, Any]:
        sample = self.signals.last
        return {
            "id": self.process_id,
            "role": self.role,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": iso_ms(int(self.started_at * 1000)),
            "reported_at": iso_ms(int(time.time() * 1000)),
            **self.board.status(),
            "signals": sample.as_dict() if sample else None,
            "controller": self.controller.status() if self.controller else None,
            "breakers": self.ctx.get(Breakers).status(),
        }

    async def _listen(self) -> None:
        source = PubSubSource(self.ctx.settings.require("redis_url"))
        while not self.stopping.is_set():
            client = source.client()
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(keys.CHANNEL)
                    await source.learn(client)
                    # Whatever was published while we were not listening.
                    await self.resync()
                    while not self.stopping.is_set():
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_RETRY_S)
                        if message is not None and message.get("type") == "message":
                            self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                source.failed()
                self.board.mark_unreachable(exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await self.pause(_RETRY_S)

    def _apply(self, data: str) -> None:
        try:
            self.board.apply(orjson.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Not a change set.lua published: ignored, rather than dropping the subscription for it.
            log.warning("degrade: ignoring a malformed message on %s: %s", keys.CHANNEL, exc)

    async def _resync_loop(self) -> None:
        while await self.pause(self.settings.resync_s):
            await self.resync()

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_s
        while not self.stopping.is_set():
            with contextlib.suppress(Exception):
                await store.heartbeat(
                    self.ctx.redis, self.process_id, self.status(), interval * keys.HEARTBEAT_TTL_FACTOR
                )
            await self.pause(interval)

    async def _series_loop(self) -> None:
        s = self.settings
        counts = self.ctx.get(Counts)
        writer = SeriesWriter(
            self.process_id, counts, self.signals, every_s=s.series_s, keep_s=s.series_keep_s
        )
        while await self.pause(writer.wait_s()):
            # Redis down: this interval is skipped (logged once), the next one tried at its time.
            await writer.append(self.ctx.redis)

    async def _schedule_loop(self) -> None:
        """Apply a scheduled plan once it is due on the Redis clock (the script applies it once fleet-wide);
        Redis unreachable: plans wait there, and the loop tries again with a growing pause."""
        outage = Outage(
            log, "degrade plan schedule", "scheduled plans wait in Redis and are applied once it answers",
            cap_s=self.ctx.settings.outage_retry_max_s,
        )  # fmt: skip
        while not self.stopping.is_set():
            try:
                reply = await plans.run_due(self.ctx, self.board)
            except Exception as exc:
                if not store_outage(exc):
                    log.exception("degrade: the plan schedule check failed; trying again in a second")
                    await self.pause(1.0)
                    continue
                await outage.wait(exc)
                continue
            outage.over()
            if reply.status is not PlanStatus.APPLIED:
                # Another plan may be due at the same time: only an idle check waits.
                await self.pause(self.settings.schedule_s)

    async def _sample_loop(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            before = loop.time()
            await asyncio.sleep(s.sample_s)
            lag = loop.time() - before - s.sample_s
            sample = self.signals.roll(lag, min_calls=s.min_calls)
            if self.controller is not None:
                try:
                    await self.controller.observe(sample)
                except Exception as exc:  # Redis down: no decision this sample, the modes stay as they are
                    log.warning("degrade: controller could not act: %s", exc)


@contextlib.asynccontextmanager
async def degrade_service(ctx: Context, role: Role) -> AsyncIterator[None]:
    s = ctx.settings.of(DegradeSettings)
    board = Board.from_components(ctx.components)
    signals = Signals(window_buckets=max(1, round(s.window_s / s.sample_s)))
    ctx.put(board)
    ctx.put(signals)
    ctx.put(Counts(board))
    breakers(ctx)
    # Parsed at start: a malformed PEAK_ADMIN_TOKENS stops the process here, not at the first admin call.
    AdminTokens.of(ctx)
    service = Degrade(ctx, role, board, signals)
    ctx.put(service)
    await service.resync()
    loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
        service._listen,
        service._resync_loop,
        service._heartbeat_loop,
    ]
    if role == "api":
        loops.append(service._sample_loop)
        loops.append(service._schedule_loop)
        loops.append(service._series_loop)
    tasks = [asyncio.create_task(fn(), name=f"degrade.{fn.__name__}") for fn in loops]
    try:
        yield
    finally:
        service.stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await ctx.redis.zrem(keys.PROCESSES, service.process_id)

"""One hub per API process: reads what the consoles show and fans it out to every open stream.

Nothing runs while no console is open: the hub's task starts with the first stream and stops with the last.
While it runs it wakes every 0.1 s and looks at the board in memory (its ``version`` moves on every adopted
change, so a switch or plan message is seen at once); it reads Redis every 0.5 s (new audit entries, plans,
new signal points, the heartbeat records for breakers; right away after a board change) and the components'
feeds every 1 s, each in a task of its own: a store that does not answer holds back neither the board's changes
nor a new console's snapshot. During an outage the readers keep trying at that pace (one refused call per
0.5 s and per feed each second, only while a console is open) and resume by themselves. Each stream has a bounded
queue: a console that does not read is dropped (its page reconnects and gets a fresh snapshot), never
buffered without end. A store outage is reported in the events (``"redis": "unreachable"``, a feed's
``error``) and the streams stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson

from console import sources
from console.settings import ConsoleSettings
from console.state import HubState
from degrade.board import Board
from kit.component import Feed, Role
from kit.context import Context
from kit.errors import REDIS_OUTAGES, STORE_OUTAGES, ServiceUnavailable
from kit.stopping import on_stop
from kit.tasks import cancel_loops

__all__ = ["Hub", "Subscriber", "TooManyStreams", "console_service", "sse"]

log = logging.getLogger("peak.console")

TICK_S = 0.1
POLL_S = 0.5
FEED_S = 1.0
# A read that takes longer is given up (and reported as an outage): the hub keeps ticking.
READ_TIMEOUT_S = 3.0
# How long the first snapshot waits for the first readings of Redis and of the feeds.
FIRST_READ_S = 2.0
_REDIS_DOWN: tuple[type[BaseException], ...] = (*REDIS_OUTAGES, TimeoutError)
_STORE_DOWN: tuple[type[BaseException], ...] = (*STORE_OUTAGES, TimeoutError)


class TooManyStreams(ServiceUnavailable):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this process already serves {limit} console streams (PEAK_CONSOLE_MAX_STREAMS); try another "
            "process or close a console",
            retry_after_s=5,
            code="too_many_streams",
        )


def sse(kind: str, data: Any) -> bytes:
    return (
        b"event: "
        + kind.encode()
        + b"\ndata: "
        + orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
        + b"\n\n"
    )


class Subscriber:
    """One open stream: its pending chunks (bounded) and why it closed, if it did."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.done = asyncio.Event()
        self.closed = ""
        self.greeted = False

    def push(self, chunk: bytes) -> None:
        if self.closed:
            return
        if len(self.pending) >= self.limit:
            self.close("slow")
            return
        self.pending.append(chunk)
        self.wake.set()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = reason
        self.wake.set()
        self.done.set()


class Hub:
    """``ctx.get(Hub)``: the streams of this process and the one task that feeds them."""

    def __init__(self, ctx: Context, settings: ConsoleSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.board = ctx.get(Board)
        self.feeds: list[tuple[str, Feed]] = [(n, f) for c in ctx.components for n, f in c.feeds.items()]
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self._state: HubState | None = None
        self._kick = asyncio.Event()
        self._failing: set[str] = set()
        # Set when the process is asked to stop (``kit.stopping``): the server drains only once every stream
        # has ended, so they end at once and no new one starts; the pages reconnect to another process.
        self.stopping = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def subscribe(self) -> Subscriber:
        if self.stopping:
            raise ServiceUnavailable("this process is stopping; the console reconnects to another one")
        if len(self.subscribers) >= self.settings.max_streams:
            raise TooManyStreams(self.settings.max_streams)
        sub = Subscriber(self.settings.queue_events)
        self.subscribers.add(sub)
        if not self.running:
            self._state = HubState()
            self.task = asyncio.create_task(self._run(self._state), name="console.hub")
        self._kick.set()
        return sub

    def leave(self, sub: Subscriber) -> None:
        sub.close(sub.closed or "gone")
        self.subscribers.discard(sub)
        if not self.subscribers:
            self._stop()

    def _stop(self) -> None:
        if self._state is not None:
            self._state.stopped = True
            self._state = None
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def end_streams(self) -> None:
        """End every stream now and take no more (the process is stopping)."""
        self.stopping = True
        for sub in list(self.subscribers):
            sub.close("shutdown")
        self.subscribers.clear()
        self._stop()

    async def close(self) -> None:
        task = self.task
        self.end_streams()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    # -- the task --------------------------------------------------------------------------------------

    def _broadcast(self, state: HubState, kind: str, data: Any) -> None:
        if state.stopped:
            return
        chunk = sse(kind, data)
        for sub in list(self.subscribers):
            if sub.greeted:
                sub.push(chunk)

    def _greet(self, state: HubState) -> None:
        fresh = [s for s in self.subscribers if not s.greeted]
        if not fresh or state.stopped:
            return
        chunk = sse("snapshot", state.snapshot([name for name, _ in self.feeds]))
        for sub in fresh:
            sub.greeted = True
            sub.push(chunk)

    async def _run(self, state: HubState) -> None:
        readers = [
            asyncio.create_task(self._redis_loop(state), name="console.redis"),
            asyncio.create_task(self._feed_loop(state), name="console.feeds"),
        ]
        try:
            # The first snapshot waits (a little) for the first readings; a store down does not hold it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(state.redis_read.wait(), state.feeds_read.wait()), FIRST_READ_S
                )
            while not state.stopped:
                self._switches(state)
                self._greet(state)
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), TICK_S)
                version = self.board.version
                if version != state.version:
                    # A switch or plan message: its audit entry and the plans are read now, not in 0.5 s.
                    state.version = version
                    state.poll_now.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A fault of ours: the streams end (their pages reconnect and start a new hub).
            log.exception("console: the hub stopped")
            for sub in list(self.subscribers):
                sub.close("hub failed")
        finally:
            await cancel_loops(readers)

    def _switches(self, state: HubState) -> None:
        body = sources.switches(self.board, redis_failed=state.redis_failed)
        if not sources.same_switches(state.switches, body):
            state.switches = body
            self._broadcast(state, "switches", body)

    async def _redis_loop(self, state: HubState) -> None:
        """Every POLL_S, or at once when the board moved. In a task of its own: a Redis that does not answer
        holds back neither the board's changes nor a new console's snapshot."""
        while not state.stopped:
            state.poll_now.clear()
            await self._read_redis(state)
            state.redis_read.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.poll_now.wait(), POLL_S)

    async def _read_redis(self, state: HubState) -> None:
        """Each panel read from Redis in turn; the first outage ends the round (the next tries again)."""
        for what, step in (
            ("audit", self._audit), ("plans", self._plans), ("series", self._series), ("breakers", self._breakers),
        ):  # fmt: skip
            try:
                await asyncio.wait_for(step(state), READ_TIMEOUT_S)
                self._failing.discard(what)
            except _REDIS_DOWN as exc:
                if not state.redis_failed:
                    log.warning("console: Redis unreachable (%s); the consoles say so", type(exc).__name__)
                state.redis_failed = True
                return
            except Exception:
                if what not in self._failing:
                    self._failing.add(what)
                    log.exception("console: reading %s failed", what)
        if state.redis_failed:
            log.info("console: Redis reachable again")
            state.redis_failed = False

    async def _audit(self, state: HubState) -> None:
        redis = self.ctx.redis
        if state.audit_last is None:
            state.audit = await sources.audit_newest(redis)
            state.audit_last = state.audit[0]["id"] if state.audit else "0"
            return
        new = await sources.audit_after(redis, state.audit_last)
        if new:
            state.add_audit(new)
            self._broadcast(state, "audit", {"entries": new})

    async def _plans(self, state: HubState) -> None:
        plans = await sources.plans(self.ctx.redis)
        if plans != state.plans:
            state.plans = plans
            self._broadcast(state, "plans", plans)

    async def _series(self, state: HubState) -> None:
        redis = self.ctx.redis
        if state.series_last is None:
            state.series = await sources.series_since(redis)
            state.series_last = state.series.get("last_id")
            return
        delta = await sources.series_after(redis, state.series_last)
        if delta.get("processes") or delta.get("subsystems"):
            state.add_series(delta)
            self._broadcast(state, "series", delta)
        elif delta.get("last_id"):
            state.series_last = delta["last_id"]

    async def _breakers(self, state: HubState) -> None:
        found = await sources.breakers(self.ctx.redis)
        if found != state.breakers:
            state.breakers = found
            self._broadcast(state, "breakers", found)

    async def _feed_loop(self, state: HubState) -> None:
        while not state.stopped:
            started = time.monotonic()
            for name, feed in self.feeds:
                value = await self._feed(name, feed)
                if value != state.feed_values.get(name):
                    state.feed_values[name] = value
                    self._broadcast(state, name, value)
            state.feeds_read.set()
            # Start to start at least FEED_S apart: PostgreSQL is read at most once a second per process.
            await asyncio.sleep(max(0.0, FEED_S - (time.monotonic() - started)))

    async def _feed(self, name: str, feed: Feed) -> Any:
        try:
            value = await asyncio.wait_for(feed(self.ctx), READ_TIMEOUT_S)
        except _STORE_DOWN as exc:
            store = "Redis" if isinstance(exc, REDIS_OUTAGES) else "PostgreSQL or Redis"
            return {"error": {"code": "unavailable", "message": f"{store} cannot be reached; retrying"}}
        except Exception:
            if name not in self._failing:
                self._failing.add(name)
                log.exception("console: the %s feed failed", name)
            return {"error": {"code": "feed_failed", "message": "this panel's reading failed (logged)"}}
        self._failing.discard(name)
        return value


@contextlib.asynccontextmanager
async def console_service(ctx: Context, role: Role) -> AsyncIterator[None]:
    if role != "api":
        yield
        return
    hub = Hub(ctx, ctx.settings.of(ConsoleSettings))
    ctx.put(hub)
    undo = on_stop(hub.end_streams)
    try:
        yield
    finally:
        undo()
        await hub.close()

"""`peak worker`: every component's background loops in one process, each restarted after an error."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Sequence

from kit.component import Component, Loop
from kit.context import Context, open_context
from kit.settings import Settings

__all__ = ["cancel_loops", "run_worker"]

log = logging.getLogger("kit.worker")

_STOP_S = 10.0
_RESTART_DELAY_S = 1.0


async def _supervise(name: str, loop: Loop, ctx: Context) -> None:
    while True:
        try:
            await loop(ctx)
            log.warning("loop %s returned; starting it again", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loop %s failed; starting it again in %.0f s", name, _RESTART_DELAY_S)
        await asyncio.sleep(_RESTART_DELAY_S)


async def run_worker(settings: Settings, components: Sequence[Component]) -> None:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(sig, stop.set)
    async with open_context(settings, components, "worker") as ctx:
        gc.freeze()  # as in the API lifespan: the start-up heap is never garbage
        tasks = [
            asyncio.create_task(_supervise(f"{c.name}.{loop.__name__}", loop, ctx), name=loop.__name__)
            for c in components
            for loop in c.loops
        ]
        log.info("worker started with %d loops: %s", len(tasks), ", ".join(t.get_name() for t in tasks))
        await stop.wait()
        log.info("worker stopping")
        await cancel_loops(tasks)


async def cancel_loops(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel the loops, and again every half second: redis-py may swallow a cancellation that lands in the
    middle of a blocking command (a stream read), and a loop that swallowed it would run on, holding the worker
    up at SIGTERM for good (a CI run's worker was still there 30 s after it). Past _STOP_S, give up on them
    (they end with the event loop) and say so."""
    running = asyncio.get_running_loop()
    deadline = running.time() + _STOP_S
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
        if pending and running.time() > deadline:
            log.warning("loops still running %.0f s after the stop: %s", _STOP_S,
                        ", ".join(t.get_name() for t in pending))  # fmt: skip
            return

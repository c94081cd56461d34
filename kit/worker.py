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
from kit.tasks import cancel_loops

__all__ = ["run_worker"]

log = logging.getLogger("kit.worker")

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

"""Stopping background tasks for sure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_loops"]

log = logging.getLogger("kit.tasks")

_STOP_S = 10.0


async def cancel_loops(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the loops, and again every half second: redis-py may swallow a cancellation that lands in the
    middle of a blocking command (a stream read), and a loop that swallowed it would run on, holding a worker or a
    server's shutdown up for good (a CI run's worker was still there 30 s after it). Past _STOP_S, give up on them
    (they end with the event loop) and say so."""
    running = asyncio.get_running_loop()
    deadline = running.time() + _STOP_S
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=0.5)
        for task in done:  # retrieved, as gather(return_exceptions=True) did: no "never retrieved" at exit
            if not task.cancelled():
                task.exception()
        if pending and running.time() > deadline:
            log.warning("loops still running %.0f s after the stop: %s", _STOP_S,
                        ", ".join(t.get_name() for t in pending))  # fmt: skip
            return

"""A background loop waiting out an outage of PostgreSQL or Redis: a capped backoff, logged once per outage.

A loop that meets an outage calls ``await outage.wait(exc)`` and tries again; once a try gets through it calls
``outage.over()``; a loop that only repeats one step hands it to ``outage.every(interval_s, step)``. The pause starts at 0.1 s and grows with the outage (about its length so far: tries at
0.1, 0.2, 0.4, 0.8 ... s after it began), up to ``PEAK_OUTAGE_RETRY_MAX_S``; so a store back after a blip is
used again at once and a long outage costs a try every few seconds. One warning when it begins (what is paused
and what to do), one when it ends (how long it lasted); never a line per try. Several tasks of one loop may
share one ``Outage``: the pause depends on the outage's age, not on how many tasks tried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from kit.db import postgres_outage
from kit.errors import REDIS_OUTAGES, STORE_OUTAGES

__all__ = ["Outage", "store_outage"]

_FIRST_S = 0.1


def store_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis or PostgreSQL out of reach, as opposed to a fault of the work being done."""
    if isinstance(exc, REDIS_OUTAGES):
        return True
    return postgres_outage(exc) if isinstance(exc, STORE_OUTAGES) else False


def _store(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, REDIS_OUTAGES):
        return "Redis", "PEAK_REDIS_URL"
    return "PostgreSQL", "PEAK_DATABASE_URL"


class Outage:
    def __init__(self, log: logging.Logger, loop: str, paused: str, *, cap_s: float) -> None:
        """``loop`` names the loop ("order writer"); ``paused`` says what waits meanwhile and what is safe."""
        self._log = log
        self._loop = loop
        self._paused = paused
        self._cap_s = cap_s
        self._since: float | None = None
        self._tries = 0
        self._store = ""

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def pause_s(self) -> float:
        """The next pause: about the outage's age so far, at least 0.1 s, at most the cap."""
        age = 0.0 if self._since is None else time.monotonic() - self._since
        return min(self._cap_s, max(_FIRST_S, age))

    async def wait(self, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            store, variable = _store(exc)
            self._store = store
            # The exception's class only: its text may name hosts and users, and says nothing more to ops.
            self._log.warning(
                "%s paused: %s is unreachable (%s); %s. Trying again with a pause growing up to %g s, and "
                "resuming by itself once it answers: start %s or check %s",
                self._loop, store, type(exc).__name__, self._paused, self._cap_s, store, variable,
            )  # fmt: skip
        self._tries += 1
        pause = self.pause_s()
        await asyncio.sleep(pause * random.uniform(0.8, 1.0))

    async def every(self, interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` forever, ``interval_s`` apart; an outage it meets is waited out as above, and any other
        error raised (a fault of ours: the worker's supervisor logs it and starts the loop again)."""
        while True:
            try:
                await step()
            except Exception as exc:
                if not store_outage(exc):
                    raise
                await self.wait(exc)
                continue
            self.over()
            await asyncio.sleep(interval_s)

    def over(self) -> None:
        if self._since is None:
            return
        self._log.warning(
            "%s resumes: %s answers again after an outage of %.1f s (%d tries)",
            self._loop, self._store, time.monotonic() - self._since, self._tries,
        )  # fmt: skip
        self._since = None
        self._tries = 0

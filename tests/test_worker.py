"""Stopping the worker's loops: a loop that swallowed a cancellation (as redis-py can, mid stream read) is
cancelled again until it ends, so a SIGTERM (or a test's clean-up) is not held up for good."""

from __future__ import annotations

import asyncio

from kit.tasks import cancel_loops


async def _swallows_the_first_cancel(cancels: list[int]) -> None:
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels.append(1)
            if len(cancels) > 1:
                raise


async def test_a_loop_that_swallowed_a_cancel_is_stopped_all_the_same() -> None:
    once: list[int] = []
    swallowed = asyncio.create_task(_swallows_the_first_cancel(once))
    await asyncio.sleep(0)
    swallowed.cancel()
    await asyncio.wait({swallowed}, timeout=1.0)
    assert not swallowed.done() and once == [1]  # one cancel is not enough for such a loop
    cancels: list[list[int]] = [[], [], []]
    loops = [asyncio.create_task(_swallows_the_first_cancel(c)) for c in cancels]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_loops([*loops, swallowed]), 5.0)
    assert all(t.cancelled() for t in [*loops, swallowed])
    assert once == [1, 1] and cancels == [[1, 1]] * 3

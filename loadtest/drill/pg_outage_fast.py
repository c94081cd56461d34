"""Drill scenario: ``pg_outage`` with PostgreSQL shut down the default way (`pg_ctl stop -m fast`: sessions
ended with an administrator-shutdown error, new connections refused while it stops), for the full drill."""

from __future__ import annotations

from loadtest.drill.pg_outage import run
from loadtest.drill.scenario import Result, Say, Scenario
from loadtest.drill.stack import Stack

__all__ = ["SCENARIO"]


async def _run(stack: Stack, *, short: bool = True, say: Say = print) -> Result:
    return await run(stack, short=short, say=say, mode="fast")


SCENARIO = Scenario(
    name="pg_outage_fast",
    summary="PostgreSQL shut down (fast) mid-drain, one of two writers SIGKILLed: nothing lost or dead-lettered",
    run=_run,
    order=21,
    # The short drill has pg_outage; the fast shutdown is tested on its own in tests/seckill/test_pg_outage.py.
    in_short=False,
)

"""An API process SIGKILLed while a coalesced reservation call is in flight: Redis ran the batch, the process
died before the reply came back (a slow TCP proxy holds it), and its shoppers retry with the same
Idempotency-Key on another API process. Each gets the order the dead process made, or a new one if its
purchase never left; no reservation is left without its order."""

from __future__ import annotations

import asyncio
import signal
import time

import redis.asyncio as aioredis

from loadtest.drill.audit import (
    FINAL,
    Purchases,
    answered_in_time,
    audit,
    buy,
    client,
    key_of,
    until_answered,
)
from loadtest.drill.scenario import Result, Say, Scenario
from loadtest.drill.stack import Api, Stack
from loadtest.faultproxy import FaultProxy, in_thread
from seckill import keys

__all__ = ["SCENARIO"]

# Each way: Redis gets the batch after this, and the reply would be back this much later still.
_LATENCY_S = 0.6


async def _one_kill(
    stack: Stack, proxy: FaultProxy, other: Api, people: list[dict[str, str]], round_no: int, say: Say
) -> Result:
    result = Result()
    stock = len(people) * 2
    proxy.heal()
    dying = await stack.serve(env={"PEAK_REDIS_URL": proxy.url()}, log=f"api_killed-dying{round_no}.log")
    event_id = await stack.event(other, stock=stock, per_user_limit=3)
    meta = keys.event_keys(event_id).meta
    seen = Purchases()
    r = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        async with client() as http:
            # The dying process learns the event with a purchase of its own first.
            await buy(http, dying, event_id, people[0], key_of(0), seen)
            proxy.latency_s = _LATENCY_S
            # One purchase in flight holds the event's coalescer (its reply held back by the proxy) while the
            # rest arrive; when it is back they leave together, as one call.
            holder = asyncio.ensure_future(buy(http, dying, event_id, people[1], key_of(1), seen))
            await asyncio.sleep(_LATENCY_S / 2)
            proxy.stalled = True
            crowd = {i: p for i, p in enumerate(people) if i > 1}
            cut_off = [
                asyncio.ensure_future(buy(http, dying, event_id, p, key_of(i), seen))
                for i, p in crowd.items()
            ]
            # Well under the lane's 5 s timeout, long enough for the crowd to reach the API.
            await asyncio.sleep(min(3.0, 1.0 + len(crowd) / 200))
            proxy.stalled = False
            await holder
            deadline = time.monotonic() + 10
            # Redis ran the batch once the event counts its reservations (the worker may already have written
            # and trimmed their stream entries); the reply is still in the proxy.
            while True:
                if int(await r.hget(meta, "reserved") or 0) >= 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.005)
            killed_at = time.monotonic()
            dying.kill(signal.SIGKILL)
            outcomes = await asyncio.gather(*cut_off)
            in_flight = int(await r.hget(meta, "reserved") or 0) - 2
            say(f"kill {round_no}: {in_flight} reservations of the batch in flight; shoppers saw "
                f"{sum(o == 'connection error' for o in outcomes)} broken connections; retrying on the other process")  # fmt: skip
            retried = Purchases()
            left = await until_answered(http, other, event_id, crowd, retried)
            recover = time.monotonic() - killed_at
    finally:
        await r.aclose()
    seen.absorb(retried)
    replays = retried.statuses["202 replayed"]
    result.figures.update(in_flight=in_flight, replayed=replays, recover_s=round(recover, 2))
    result.check(
        "a coalesced call was in flight when the process died", in_flight > 1, f"{in_flight} reservations"
    )
    result.check("every shopper of the killed batch got its order on the retry (a replay)", replays == in_flight,
                 f"{replays} replays of {in_flight} reservations")  # fmt: skip
    result.check("every shopper has a final answer after retries", not left, f"{len(left)} without")
    answered_in_time(seen, result, FINAL | {"503 unavailable", "connection error"}, [dying, other])
    await audit(stack, other, event_id, stock, seen, result)
    return result


def _merge(into: Result, part: Result) -> None:
    """Invariants of the same name AND-ed (the first failing detail kept), figures summed or kept worst."""
    for inv in part.invariants:
        same = next((i for i, known in enumerate(into.invariants) if known.name == inv.name), None)
        if same is None:
            into.invariants.append(inv)
        elif into.invariants[same].ok and not inv.ok:
            into.invariants[same] = inv
    for name, value in part.figures.items():
        known = into.figures.get(name)
        if isinstance(known, int | float) and isinstance(value, int | float):
            into.figures[name] = max(known, value) if name.endswith("_s") else known + value
        else:
            into.figures[name] = value


async def run(stack: Stack, *, short: bool, say: Say) -> Result:
    crowd_size, kills = (60, 1) if short else (400, 5)
    result = Result()
    async with in_thread(FaultProxy("127.0.0.1", stack.redis.port)) as proxy:
        other = await stack.serve(log="api_killed-other.log")
        stack.worker(log="api_killed-worker.log")
        say(f"{crowd_size} shoppers; {kills} SIGKILL(s) of an API process with a batch in flight")
        people = await stack.shoppers(other, crowd_size, prefix="killed")
        for round_no in range(1, kills + 1):
            _merge(result, await _one_kill(stack, proxy, other, people, round_no, say))
    return result


SCENARIO = Scenario(
    name="api_killed",
    summary="an API process SIGKILLed with a coalesced reservation call in flight; shoppers retry elsewhere",
    run=run,
    order=30,
)

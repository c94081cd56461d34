"""A slow and broken network between the API and Redis: 100 ms each way and connections reset in the middle
of calls (before Redis saw the request, or after it ran it and before the reply came back), through a real TCP
proxy (``loadtest/faultproxy.py``), then (full length) Redis not answering at all for 8 s. Shoppers buy and
retry with their Idempotency-Keys the whole time."""

from __future__ import annotations

import asyncio
import time

from loadtest.drill.audit import (
    FINAL,
    Purchases,
    answered_in_time,
    audit,
    client,
    recovery_s,
    round_of,
    until_answered,
)
from loadtest.drill.scenario import Result, Say, Scenario
from loadtest.drill.stack import Stack
from loadtest.faultproxy import FaultProxy, in_thread

__all__ = ["SCENARIO"]

LATENCY_S, RESET_RATE = 0.1, 0.04


async def run(stack: Stack, *, short: bool, say: Say) -> Result:
    result = Result()
    crowd_size, fault_s, stall_s = (80, 2.0, 0.0) if short else (1000, 60.0, 8.0)
    stock = crowd_size * 4 // 5
    async with in_thread(FaultProxy("127.0.0.1", stack.redis.port, seed=17)) as proxy:
        api = await stack.serve(env={"PEAK_REDIS_URL": proxy.url()}, log="slow_network-api.log")
        stack.worker(log="slow_network-worker.log")
        say(f"{crowd_size} shoppers, {stock} in stock (limit 3 each, one Idempotency-Key each)")
        people = await stack.shoppers(api, crowd_size + 1, prefix="slow")
        probe, crowd = people[0], dict(enumerate(people[1:]))
        event_id = await stack.event(api, stock=stock, per_user_limit=3)
        # Recovery is measured on an event of its own: the crowd's may be sold out by then.
        probe_event = await stack.event(api, stock=10)
        seen = Purchases()
        # Two resets for certain (one of each kind: a short run has few calls), then RESET_RATE at random.
        proxy.latency_s, proxy.reset_rate, proxy.reset_first = LATENCY_S, RESET_RATE, 2
        say(
            f"network: +{LATENCY_S * 1000:.0f} ms each way, {RESET_RATE:.0%} of requests reset, for {fault_s:g} s"
        )
        async with client() as http:
            pending = dict(crowd)
            started = time.monotonic()
            rounds = 0
            while time.monotonic() - started < fault_s or rounds == 0:
                # Everyone buys again with the same key: the answered get their order replayed.
                for i in await round_of(http, api, event_id, crowd, seen):
                    pending.pop(i, None)
                rounds += 1
                say(f"round {rounds}: {len(crowd) - len(pending)} answered for good; {seen.summary()}")
            if stall_s:
                # Redis stops answering (every reply held back) while a round is under way: the calls time
                # out and are tried again; the round's answers still come within the bound, none hangs.
                proxy.reset_rate, proxy.stalled = 0.0, True
                say(f"Redis stops answering for {stall_s:g} s (replies held by the proxy)")
                stalled_round = asyncio.ensure_future(round_of(http, api, event_id, crowd, seen))
                await asyncio.sleep(stall_s)
                proxy.stalled = False
                for i in await stalled_round:
                    pending.pop(i, None)
                say(f"answering again; {seen.summary()}")
            proxy.heal()
            say("network healed")
            recover = await recovery_s(http, api, probe_event, probe, Purchases())
            left = await until_answered(http, api, event_id, pending, seen)
        result.figures.update(
            resets_before=proxy.counts["resets_before"], resets_after=proxy.counts["resets_after"],
            recover_s=round(recover, 2) if recover is not None else "never", stall_s=stall_s,
        )  # fmt: skip
        result.check(
            "purchases succeed again once the network heals",
            recover is not None,
            "never" if recover is None else f"after {recover:.2f} s",
        )
        result.check("every shopper has a final answer after retries", not left, f"{len(left)} without")
        result.check(
            "resets hit calls both before and after Redis ran them",
            proxy.counts["resets_before"] > 0 and proxy.counts["resets_after"] > 0,
            f"{proxy.counts['resets_before']} before, {proxy.counts['resets_after']} after",
        )
        answered_in_time(seen, result, FINAL | {"503 unavailable"}, [api])
        await audit(stack, api, event_id, stock, seen, result)
    return result


SCENARIO = Scenario(
    name="slow_network",
    summary=f"+{LATENCY_S * 1000:.0f} ms and connection resets between the API and Redis (a real TCP proxy)",
    run=run,
    order=20,
)

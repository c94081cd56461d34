"""Redis refusing writes: maxmemory reached with noeviction (CONFIG SET maxmemory 1) while shoppers buy and
log in. Purchases and logins answer 503, never 500; nothing is half-written (no stock taken, nothing queued);
once Redis takes writes again purchases go through and every 202 is an order.

AOF write errors (a full disk) are the test suite's (tests/seckill/test_redis_refuses_writes.py mounts a small
tmpfs); the drill does not mount filesystems on an ops machine."""

from __future__ import annotations

import time
from typing import Any

import httpx
import redis.asyncio as aioredis

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
from loadtest.drill.stack import Api, Stack
from loadtest.seed import PASSWORD, create_shoppers
from seckill import keys

__all__ = ["SCENARIO"]


async def _books(r: aioredis.Redis, event_id: int) -> tuple[Any, ...]:
    k = keys.event_keys(event_id)
    return (await r.hmget(k.meta, ["stock", "reserved"]), await r.xlen(k.stream), await r.hlen(k.queued),
            await r.hlen(k.users))  # fmt: skip


async def _logins(http: httpx.AsyncClient, api: Api, usernames: list[str]) -> list[str]:
    answers = []
    for name in usernames:
        answer = await http.post(f"{api.url}/sso/login", json={"username": name, "password": PASSWORD})
        answers.append(str(answer.status_code))
    return answers


async def run(stack: Stack, *, short: bool, say: Say) -> Result:
    result = Result()
    crowd_size, refuse_s = (60, 1.0) if short else (400, 30.0)
    stock = crowd_size * 2
    api = await stack.serve(log="refuses-api.log")
    stack.worker(log="refuses-worker.log")
    people = await stack.shoppers(api, crowd_size + 1, prefix="refuses")
    accounts = [
        name for name, _ in await create_shoppers(api.url, 3, prefix=f"refuses-login-{time.time_ns()}")
    ]
    probe, crowd = people[0], dict(enumerate(people[1:]))
    event_id = await stack.event(api, stock=stock, per_user_limit=3)
    first, second = dict(list(crowd.items())[: crowd_size // 2]), dict(list(crowd.items())[crowd_size // 2 :])
    seen = Purchases()
    r = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        limit = str((await r.config_get("maxmemory"))["maxmemory"])
        async with client() as http:
            await round_of(http, api, event_id, first, seen)
            # The worker drains (XACK + XDEL are allowed at maxmemory): let it finish first, so the books
            # compared below move only if a purchase half-wrote something.
            await stack.drained(api, event_id)
            say(f"{len(first)} bought; now Redis refuses writes (maxmemory 1, noeviction) for {refuse_s:g} s")
            before = await _books(r, event_id)
            await r.config_set("maxmemory", 1)
            refused = Purchases()
            logins: list[str] = []
            try:
                started = time.monotonic()
                while time.monotonic() - started < refuse_s:
                    await round_of(http, api, event_id, second, refused)
                    logins += await _logins(http, api, accounts)
                    say(f"while refused: {refused.summary()}; logins {sorted(set(logins))}")
                during = await _books(r, event_id)
            finally:
                await r.config_set("maxmemory", limit)
            say("Redis takes writes again")
            recover = await recovery_s(http, api, event_id, probe, seen)
            left = await until_answered(http, api, event_id, second, seen)
    finally:
        await r.aclose()
    result.figures.update(
        refused=refused.summary(), recover_s=round(recover, 2) if recover is not None else "never"
    )
    result.check("purchases answer 503 unavailable while Redis refuses writes",
                 set(refused.statuses) == {"503 unavailable"}, refused.summary())  # fmt: skip
    result.check(
        "logins answer 503 while Redis refuses writes", set(logins) == {"503"}, ", ".join(sorted(set(logins)))
    )
    result.check("nothing half-written while refused (stock, stream, queue, counts unchanged)", before == during,
                 f"{before} then {during}")  # fmt: skip
    result.check(
        "purchases succeed again once Redis takes writes",
        recover is not None,
        "never" if recover is None else f"after {recover:.2f} s",
    )
    result.check("every shopper has a final answer after retries", not left, f"{len(left)} without")
    for status, n in refused.statuses.items():
        seen.statuses[status] += n
    seen.slowest_s = max(seen.slowest_s, refused.slowest_s)
    answered_in_time(seen, result, FINAL | {"503 unavailable"}, [api])
    await audit(stack, api, event_id, stock, seen, result)
    return result


SCENARIO = Scenario(
    name="redis_refuses_writes",
    summary="Redis out of memory (maxmemory, noeviction): 503s, nothing half-written, back once it takes writes",
    run=run,
    order=40,
)

"""Admin changes applied to both stores or to neither (``seckill/outbox.py``): an API process is SIGKILLed half
way through a PATCH that adds stock (committed in PostgreSQL, one bucket of two applied in Redis, a slow TCP
proxy holding the rest), a `peak worker`'s outbox finishes it once; then a crowd sends one PATCH again and
again with its Idempotency-Key, all at once, and it adds its stock once."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time

import asyncpg
import httpx
import redis.asyncio as aioredis

from loadtest.drill.scenario import Result, Say, Scenario
from loadtest.drill.stack import Api, Stack
from loadtest.faultproxy import FaultProxy, in_thread
from seckill import keys

__all__ = ["SCENARIO"]

_LATENCY_S = 1.0


async def _totals(stack: Stack, event_id: int, buckets: int) -> tuple[int, int]:
    """(stock put on sale as Redis's buckets count it, as PostgreSQL's row says)."""
    r = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        in_redis = sum(
            [int(await r.hget(keys.event_keys(event_id, b).meta, "total") or 0) for b in range(buckets)]
        )
    finally:
        await r.aclose()
    db = await asyncpg.connect(stack.postgres.url)
    try:
        row_stock = int(await db.fetchval("SELECT stock FROM seckill_events WHERE id = $1", event_id))
    finally:
        await db.close()
    return in_redis, row_stock


async def _pending(stack: Stack) -> int:
    db = await asyncpg.connect(stack.postgres.url)
    try:
        return int(await db.fetchval("SELECT count(*) FROM seckill_event_changes WHERE applied_at IS NULL"))
    finally:
        await db.close()


async def _killed_mid_patch(stack: Stack, proxy: FaultProxy, other: Api, result: Result, say: Say) -> None:
    event_id = await stack.event(other, stock=4, buckets=2)
    dying = await stack.serve(env={"PEAK_REDIS_URL": proxy.url()}, log="admin_changes-dying.log")
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    r = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        proxy.latency_s = _LATENCY_S
        async with httpx.AsyncClient(timeout=30) as http:
            patch = asyncio.ensure_future(
                http.patch(f"{dying.url}/seckill/events/{event_id}", json={"add_stock": 6}, headers=headers)
            )
            deadline = time.monotonic() + 20
            # Bucket 0 remembers the creation's change and now this one: bucket 1 is still to come.
            while True:
                if await r.hlen(keys.event_keys(event_id, 0).changes) >= 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            dying.kill(signal.SIGKILL)
            killed_at = time.monotonic()
            answered = await asyncio.gather(patch, return_exceptions=True)
    finally:
        await r.aclose()
        proxy.heal()
    say("the API process died half way through its PATCH; a worker's outbox finishes it")
    result.check("the PATCH was cut off after its commit", isinstance(answered[0], httpx.HTTPError),
                 repr(answered[0])[:120])  # fmt: skip
    half = await _totals(stack, event_id, 2)
    result.check("half done: PostgreSQL has the change, Redis one bucket of it", half == (7, 10), f"{half}")
    stack.worker(env={"PEAK_SECKILL_OUTBOX_AGE_S": "1", "PEAK_SECKILL_OUTBOX_INTERVAL_S": "0.1"},
                 log="admin_changes-worker.log")  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        if not await _pending(stack) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    finished_s = time.monotonic() - killed_at
    done = await _totals(stack, event_id, 2)
    result.check(
        "the outbox finished it: the stock added once, both stores agree", done == (10, 10), f"{done}"
    )
    clean, line = stack.reconcile(event_id)
    result.check("reconcile clean after the finished PATCH", clean, line)
    result.figures["finished_s"] = round(finished_s, 2)


async def _replayed_patches(stack: Stack, api: Api, result: Result, crowd: int) -> None:
    event_id = await stack.event(api, stock=10, buckets=4)
    headers = {"Authorization": f"Bearer {stack.admin_token}", "Idempotency-Key": secrets.token_hex(8)}
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(*(
            http.patch(f"{api.url}/seckill/events/{event_id}", json={"add_stock": 5}, headers=headers)
            for _ in range(crowd)
        ))  # fmt: skip
    statuses = sorted({a.status_code for a in answers})
    result.check(
        "the same PATCH sent at once with its key: every answer 200", statuses == [200], f"{statuses}"
    )
    totals = await _totals(stack, event_id, 4)
    result.check("... and its stock added once", totals == (15, 15), f"{crowd} sends, stock {totals}")
    result.figures["same_key_sends"] = crowd


async def run(stack: Stack, *, short: bool, say: Say) -> Result:
    result = Result()
    async with in_thread(FaultProxy("127.0.0.1", stack.redis.port)) as proxy:
        other = await stack.serve(log="admin_changes-api.log")
        await _killed_mid_patch(stack, proxy, other, result, say)
        crowd = 20 if short else 200
        say(f"{crowd} identical PATCHes with one Idempotency-Key, all at once")
        await _replayed_patches(stack, other, result, crowd)
    return result


SCENARIO = Scenario(
    name="admin_changes",
    summary="an API process SIGKILLed half way through a PATCH (the outbox finishes it once); one PATCH sent "
    "again and again with its key",
    run=run,
    order=45,
)

"""Drill scenario: PostgreSQL stopped (`pg_ctl stop -m immediate`) in the middle of a sale and its drain.

Two order writers (`peak worker`) drain the sale; PostgreSQL is stopped while they write, for several times
claim-idle x max-deliveries (the span after which every reclaim used to count a delivery and dead-letter the
order); one writer is SIGKILLed in the middle of the outage. Meanwhile shoppers keep buying (purchases never
touch PostgreSQL), /readyz names PostgreSQL, and a read that needs PostgreSQL answers 503 fast. Then
PostgreSQL starts again: every 202 is an order written exactly once, no dead letter, reconcile clean.

The outage lasts ``PEAK_CHAOS_PG_OUTAGE_S`` seconds (default 8 short, 90 full). ``pg_outage_fast`` is the same
with `pg_ctl stop -m fast` (full drill only). ``stop_postgres`` and ``start_postgres`` are the fault itself, for
other scenarios and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from typing import Any, Literal

import httpx
import redis.asyncio as aioredis

from devstack.postgres import PostgresServer, postgres_bindir
from loadtest.drill.audit import Purchases, audit, buy
from loadtest.drill.scenario import Result, Say, Scenario
from loadtest.drill.stack import Stack
from seckill import keys

__all__ = ["SCENARIO", "outage_s", "run", "start_postgres", "stop_postgres"]

StopMode = Literal["immediate", "fast", "smart"]

# Turned down so that a short outage is already many times claim-idle x max-deliveries (0.5 s here), and so
# that an outage costing an order even one delivery (the batch it was being written in) dead-letters it.
_SHORT_ENV = {
    "PEAK_SECKILL_CLAIM_IDLE_MS": "500",
    "PEAK_SECKILL_MAX_DELIVERIES": "1",
    "PEAK_SECKILL_BATCH_SIZE": "20",
    "PEAK_OUTAGE_RETRY_MAX_S": "1",
}
# The reproduction: claim idle 1 s, the default 5 deliveries: 90 s is 18 times that.
_FULL_ENV = {"PEAK_SECKILL_CLAIM_IDLE_MS": "1000", "PEAK_SECKILL_BATCH_SIZE": "50"}
# A request that needs PostgreSQL while it is down answers within this (a bound on behaviour, generous).
_FAST_S = 5.0


def outage_s(short: bool) -> float:
    raw = os.environ.get("PEAK_CHAOS_PG_OUTAGE_S", "").strip()
    return float(raw) if raw else (8.0 if short else 90.0)


def stop_postgres(server: PostgresServer, mode: StopMode = "immediate") -> None:
    """`pg_ctl stop -m MODE` on the server's data folder, as the user who owns it (pg_ctl refuses root)."""
    owner = server.pgdata.stat()
    as_owner: dict[str, Any] = {}
    if os.geteuid() == 0:
        as_owner = {"user": owner.st_uid, "group": owner.st_gid, "extra_groups": []}
    done = subprocess.run(
        [str(postgres_bindir() / "pg_ctl"), "stop", "-D", str(server.pgdata.resolve()), "-m", mode, "-w",
         "-t", "60"],
        capture_output=True, text=True, check=False, timeout=90, cwd=server.data_dir, **as_owner,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl stop -m {mode} failed: {done.stderr.strip() or done.stdout.strip()}")
    if server.proc is not None:
        server.proc.wait(30)
        server.proc = None


def start_postgres(server: PostgresServer) -> None:
    server.start()


async def _timed_get(http: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[httpx.Response | None, float]:
    started = time.monotonic()
    try:
        answer = await http.get(url, timeout=_FAST_S * 2, **kwargs)
    except httpx.HTTPError:
        return None, time.monotonic() - started
    return answer, time.monotonic() - started


def _down_answer(answer: httpx.Response | None, took_s: float, code: str) -> tuple[bool, str]:
    if answer is None:
        return False, f"no answer within {_FAST_S * 2:g} s"
    try:
        body = answer.json()
    except ValueError:
        body = {}
    got = (body.get("error") or {}).get("code")
    ok = answer.status_code == 503 and got == code and "Retry-After" in answer.headers and took_s < _FAST_S
    return ok, f"{answer.status_code} {got} in {took_s:.2f} s"


async def _pending_of(redis: aioredis.Redis, stream: str, pid: int) -> int:
    """Entries pending for the consumer of the worker process ``pid`` (hostname-PID-random)."""
    info: Any = await redis.xinfo_consumers(stream, keys.GROUP)
    return sum(int(c["pending"]) for c in info if f"-{pid}-" in str(c["name"]))


async def run(stack: Stack, *, short: bool = True, say: Say = print, mode: StopMode = "immediate") -> Result:
    result = Result()
    down_s = outage_s(short)
    env = _SHORT_ENV if short else _FULL_ENV
    count = 60 if short else 1000
    api = await stack.serve(env=env)
    workers = [stack.worker(env=env, log=f"pg-outage-worker{i}.log") for i in (1, 2)]
    before, during = await asyncio.gather(
        stack.shoppers(api, count, prefix="pg-before"), stack.shoppers(api, count, prefix="pg-during")
    )
    event_id = await stack.event(api, stock=2 * count)
    stream = keys.event_keys(event_id).stream
    dead = keys.event_keys(event_id).dead
    seen, meanwhile = Purchases(), Purchases()
    redis = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.gather(*(buy(http, api, event_id, s, f"b{i}", seen) for i, s in enumerate(before)))
            # In the middle of the drain: stop PostgreSQL once the writers have started on the orders.
            for _ in range(1000):  # 10 s at most
                if await redis.xlen(stream) < count:
                    break
                await asyncio.sleep(0.01)
            say(f"stopping PostgreSQL (pg_ctl stop -m {mode}) for {down_s:g} s during the drain")
            await asyncio.to_thread(stop_postgres, stack.postgres, mode)
            stopped = time.monotonic()
            await asyncio.gather(
                *(buy(http, api, event_id, s, f"d{i}", meanwhile) for i, s in enumerate(during))
            )
            ready, took = await _timed_get(http, f"{api.url}/readyz")
            checks = ready.json().get("checks", {}) if ready is not None else {}
            result.check(
                "/readyz answers 503 naming PostgreSQL",
                ready is not None and ready.status_code == 503 and checks.get("postgres") == "unreachable"
                and checks.get("redis") == "ok" and took < _FAST_S,
                f"{None if ready is None else ready.status_code} {checks} in {took:.2f} s",
            )  # fmt: skip
            # The first shopper's own order ("b0"): the first 202 to arrive may be another shopper's, and a
            # stranger's order is a 404 from Redis, whatever PostgreSQL does.
            first = seen.acked.get("b0", "")
            read, took = await _timed_get(http, f"{api.url}/seckill/orders/{first}", headers=before[0])
            ok, said = _down_answer(read, took, "unavailable")
            if read is not None and read.status_code == 200:
                ok, said = True, f"200 in {took:.2f} s (still in the process's memory)"
            result.check("a read that needs PostgreSQL answers 503 fast", ok, said)
            listed, took = await _timed_get(http, f"{api.url}/seckill/orders", headers=before[0])
            result.check("the order list answers 503 fast", *_down_answer(listed, took, "unavailable"))
            # One writer dies in the middle of the outage: its entries wait for PostgreSQL, not for a claim.
            await asyncio.sleep(max(0.0, down_s / 2 - (time.monotonic() - stopped)))
            # The one holding more of the interrupted batches (if any was in flight at the stop).
            holding = [(await _pending_of(redis, stream, w.pid), i) for i, w in enumerate(workers)]
            held, index = max(holding)
            killed = workers[index]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(15)
            await asyncio.sleep(max(0.0, down_s - (time.monotonic() - stopped)))
            still = await _pending_of(redis, stream, killed.pid)
            letters = int(await redis.xlen(dead))
            result.check(
                "no dead letter during the outage", letters == 0, f"{letters} dead letters after {down_s:g} s"
            )
            result.check(
                "the killed writer's entries are not reclaimed while PostgreSQL is down",
                still == held, f"{held} pending at the kill, {still} at the end of the outage",
            )  # fmt: skip
            result.check(
                "every purchase during the outage answered 202",
                meanwhile.unexpected({"202"}) == 0, meanwhile.summary(),
            )  # fmt: skip
            say("starting PostgreSQL again")
            await asyncio.to_thread(start_postgres, stack.postgres)
            back = time.monotonic()
            await stack.drained(api, event_id)
            recover_s = time.monotonic() - back
            seen.acked.update(meanwhile.acked)
            seen.statuses.update(meanwhile.statuses)
            seen.changed += meanwhile.changed
            await audit(stack, api, event_id, 2 * count, seen, result)
            # Raw: the stats count a dead letter already written to PostgreSQL (its COMMIT's answer lost) as none.
            letters = int(await redis.xlen(dead))
            result.check(
                "no order message dead-lettered", letters == 0, f"{letters} in the dead-letter stream"
            )
            result.figures.update(
                outage_s=round(back - stopped, 1),
                recover_s=round(recover_s, 1),
                bought_during_outage=meanwhile.statuses["202"],
                killed_writer_pending=held,
                dead_letters=letters,
            )
    finally:
        await redis.aclose()
        if stack.postgres.proc is None:
            await asyncio.to_thread(start_postgres, stack.postgres)
    return result


SCENARIO = Scenario(
    name="pg_outage",
    summary="PostgreSQL stopped (immediate) mid-drain, one of two writers SIGKILLed: nothing lost or dead-lettered",
    run=run,
    order=20,
)

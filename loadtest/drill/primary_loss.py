"""Drill scenario: a Redis primary SIGKILLed in the middle of a sale, on a private cluster with one replica each.

A private three-primary Redis Cluster with one replica per primary (cluster-node-timeout 1 s), a `peak serve`
and a `peak worker` on it. Hundreds of shoppers buy at once, each with an Idempotency-Key of its own, and the
primary owning the event's slot is SIGKILLed while they do. Its replica is promoted; the event refuses
purchases ("repairing", 503) until its stock and counts are re-derived from PostgreSQL; the shoppers retry with
their keys. Then: purchases succeed again within 10 s, nothing oversold, no user over the limit, no key made two
orders, reconcile clean, and with durability ``replica`` every 202 is an order in PostgreSQL. With ``local`` a
202 can be lost with the primary: ``lost`` says how many were.

``run_once`` is one such sale on a running cluster (the test runs it for both durabilities on one cluster);
``run`` is the drill's entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections import Counter
from typing import Literal

import httpx
import redis as redis_sync

from devstack.redis import RedisClusterServer
from loadtest.drill.audit import FINAL, Purchases, buy, client, key_of
from loadtest.drill.scenario import Result, Say, Scenario
from loadtest.drill.stack import Stack, _peak
from seckill import keys

__all__ = ["SCENARIO", "kill_primary_of", "primary_of", "run", "run_once", "start_cluster"]

Durability = Literal["replica", "local"]

# Purchases are answered again within this after the kill (the bound).
RECOVER_S = 10.0


def start_cluster(stack: Stack, name: str = "primary-loss") -> RedisClusterServer:
    cluster = RedisClusterServer(stack.scratch(name) / "cluster", 3, replicas=1, node_timeout_ms=1000,
                                 say=lambda _: None)  # fmt: skip
    cluster.start()
    return cluster


def primary_of(cluster: RedisClusterServer, key: str) -> int:
    """The port of the primary that serves ``key``'s slot now."""
    for port in cluster.ports:
        with contextlib.suppress(redis_sync.RedisError):
            node = redis_sync.Redis(port=port, socket_timeout=1)
            slot = int(node.cluster("KEYSLOT", key))
            for start, end, primary, *_ in node.cluster("SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
    raise RuntimeError(f"no node of the cluster names the primary of {key!r}")


def kill_primary_of(cluster: RedisClusterServer, key: str) -> int:
    """SIGKILL the primary serving ``key``; its port."""
    port = primary_of(cluster, key)
    node = cluster.node_on(port)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(10)
    node.proc = None
    return port


def _reconcile(stack: Stack, cluster: RedisClusterServer, event_id: int) -> tuple[bool, str]:
    done = subprocess.run(
        _peak("seckill", "reconcile", str(event_id)), env={**stack.env, "PEAK_REDIS_URL": cluster.url},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return done.returncode == 0, (lines[-1] if lines else "")


async def run_once(
    stack: Stack,
    cluster: RedisClusterServer,
    durability: Durability,
    *,
    shoppers: int = 300,
    stock: int = 200,
    say: Say = print,
) -> Result:
    """One sale on ``cluster`` whose event's primary is SIGKILLed mid-sale; the killed node is started again
    (it comes back as a replica) and the cluster whole again before this returns."""
    result = Result()
    env = {"PEAK_REDIS_URL": cluster.url, "PEAK_SECKILL_DURABILITY": durability}
    api = await stack.serve(env={**env, "PEAK_WORKERS": "2"}, log=f"primary-loss-{durability}-api.log")
    stack.worker(env=env, log=f"primary-loss-{durability}-worker.log")
    people = await stack.shoppers(api, shoppers, prefix=f"loss-{durability}")
    crowd = dict(enumerate(people))
    event_id = await stack.event(api, stock=stock, per_user_limit=1)
    tag = keys.event_keys(event_id).meta
    seen = Purchases()
    killed_at: list[float] = []
    answered_after: list[float] = []

    async def attempt(http: httpx.AsyncClient, i: int, shopper: dict[str, str]) -> str:
        started = time.monotonic()
        outcome = await buy(http, api, event_id, shopper, key_of(i), seen)
        if outcome.startswith("202") and killed_at and started > killed_at[0]:
            answered_after.append(time.monotonic() - killed_at[0])
        return outcome

    async def until_final(
        http: httpx.AsyncClient, pending: dict[int, dict[str, str]], timeout_s: float
    ) -> int:
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            outcomes = await asyncio.gather(*(attempt(http, i, s) for i, s in pending.items()))
            pending = {i: s for (i, s), o in zip(pending.items(), outcomes, strict=True) if o not in FINAL}
            if pending:
                await asyncio.sleep(0.1)
        return len(pending)

    async with client() as http:
        groups = list(crowd.items())
        fifth = shoppers // 5
        first, middle, late = (
            dict(groups[:fifth]),
            dict(groups[fifth : 2 * fifth]),
            dict(groups[2 * fifth :]),
        )
        await until_final(http, first, 20)
        say(f"{len(seen.acked)} orders acknowledged; SIGKILL of the event's primary while {len(middle)} buy, "
            f"then {len(late)} more")  # fmt: skip
        # In flight at the kill, then the rest arrive while the primary is gone: stock is left for them.
        buying = asyncio.ensure_future(until_final(http, middle, 40))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(kill_primary_of, cluster, tag)
        killed_at.append(time.monotonic())
        left = await until_final(http, late, 40) + await buying
        stats = await stack.drained(api, event_id, timeout_s=60)
    recover_s = min(answered_after, default=None)
    orders = await stack.orders(event_id)
    user_of = dict(orders)
    acked = set(seen.acked.values())
    lost = sorted(o for o in acked if o not in user_of)
    per_user = Counter(user_of.values())
    oversold = max(0, len(orders) + int(stats["queued"]) + int(stats["dead_letters"]) - stock)
    clean, said = await asyncio.to_thread(_reconcile, stack, cluster, event_id)
    result.figures.update(
        durability=durability, acknowledged=len(acked), written=len(orders), lost=len(lost),
        duplicated=sum(n - 1 for n in per_user.values() if n > 1), oversold=oversold,
        recover_s=round(recover_s, 2) if recover_s is not None else "never", unanswered=left,
        answers=seen.summary(),
    )  # fmt: skip
    result.check(
        f"purchases succeed again within {RECOVER_S:g} s of the kill",
        recover_s is not None and recover_s <= RECOVER_S,
        f"{recover_s:.2f} s (first 202 of a purchase sent after the kill)"
        if recover_s is not None
        else "no 202 for a purchase sent after the kill",
    )
    result.check("every shopper answered for good after retries", not left, f"{left} still refused")
    result.check("a retried key names the same order", not seen.changed, f"{len(seen.changed)} keys changed")
    result.check("no user over the limit (none twice)", max(per_user.values(), default=0) <= 1,
                 f"{sum(1 for n in per_user.values() if n > 1)} users with more than one order")  # fmt: skip
    result.check("not oversold", oversold == 0, f"{len(orders)} orders of {stock} in stock")
    result.check("every order drained, no dead letter", stats["queued"] == 0 and stats["dead_letters"] == 0,
                 f"queued {stats['queued']}, dead letters {stats['dead_letters']}")  # fmt: skip
    result.check("reconcile clean", clean, said)
    if durability == "replica":
        result.check("every 202 is an order in PostgreSQL", not lost, f"{len(lost)} of {len(acked)} lost")
    said = (stack.folder / f"primary-loss-{durability}-api.log").read_text(errors="replace")
    repairs = [line for line in said.splitlines() if f"event {event_id} re-derived" in line]
    result.figures["rederived"] = len(repairs)
    result.check("the event was re-derived on its new primary before selling again", bool(repairs),
                 repairs[0].split(": ", 1)[-1][:300] if repairs else "no re-derivation logged")  # fmt: skip
    stack.stop_processes()
    # The killed node comes back as its replica's replica: the cluster is whole again for what follows.
    for node in cluster.nodes:
        if node.proc is None:
            node.start()
    await asyncio.to_thread(cluster.wait_in_sync, 30.0)
    return result


async def run(stack: Stack, *, short: bool = True, say: Say = print) -> Result:
    cluster = start_cluster(stack)
    try:
        result = Result()
        for durability in ("replica", "local"):
            once = await run_once(stack, cluster, durability, shoppers=300 if short else 2000,
                                  stock=200 if short else 1500, say=say)  # fmt: skip
            result.invariants += [type(i)(f"{durability}: {i.name}", i.ok, i.detail) for i in once.invariants]
            result.figures.update(
                {f"{durability}_{k}": v for k, v in once.figures.items() if k != "durability"}
            )
        return result
    finally:
        cluster.stop()


SCENARIO = Scenario(
    name="primary_loss",
    summary="a Redis Cluster primary SIGKILLed mid-sale (replica and local durability): no oversell, re-derived",
    run=run,
    order=40,
    in_short=False,
)

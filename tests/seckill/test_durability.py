"""Durable acknowledgement (a purchase answered 202 only once a replica has it) and the re-derivation of an event's
Redis state after a promotion that lost writes, on a private primary with one replica.

The faults are real: the replica is stopped with SIGSTOP (it stops confirming), or its replication link runs
through a TCP proxy that holds the stream back while the primary is SIGKILLed and the replica promoted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from devstack.redis import RedisServer
from kit.context import Context
from kit.lua import ReplicaWaitError, Wait
from kit.redis import create_redis
from kit.settings import Settings
from loadtest.faultproxy import FaultProxy
from seckill import keys, scripts
from seckill.reservation import Reserver
from seckill.settings import SeckillSettings
from tests.conftest import TEST_REDIS, Servers
from tests.seckill.conftest import (
    MakeSettings,
    assert_balanced,
    drain,
    new_event,
    order_rows,
    seckill_context,
    try_reserve,
)
from tests.support import run_peak


def _in_sync(replica: RedisServer, primary: RedisServer | None = None) -> bool:
    info = redis.Redis(port=replica.port).info("replication")
    if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
        return False
    if primary is None:
        return True
    return bool(
        info.get("slave_repl_offset")
        == redis.Redis(port=primary.port).info("replication")["master_repl_offset"]
    )


def _wait_until(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# A replica's first sync starts at once (the primary waits 5 s for more replicas by default), and a stopping
# primary does not wait up to 10 s for a replica that is gone.
_PRIMARY_ARGS = ["--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0"]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and its replica (AOF on, as every private server)."""
    primary = RedisServer(tmp_path / "primary", extra_args=_PRIMARY_ARGS)
    primary.start()
    replica = RedisServer(tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(primary.port)])  # fmt: skip
    try:
        replica.start()
        _wait_until(lambda: _in_sync(replica))
        yield primary, replica
    finally:
        for server in (primary, replica):
            if server.proc is not None:
                os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()


@pytest.fixture
async def replicated(
    make_settings: MakeSettings, pair: tuple[RedisServer, RedisServer]
) -> AsyncIterator[Context]:
    # 1 s: the replica of a busy test machine confirms a batch late (at 100 ms a loaded CI run refused all 300
    # purchases of a healthy pair), and a stopped one costs each refused batch this long.
    settings = make_settings(PEAK_REDIS_URL=pair[0].url, PEAK_SECKILL_DURABILITY_TIMEOUT_MS="1000")
    async with seckill_context(settings) as ctx:
        yield ctx


async def test_durability_follows_the_deployment(settings: Settings, replicated: Context) -> None:
    # The session's Redis has replicas only as a cluster (PEAK_TEST_REDIS=cluster).
    async with seckill_context(settings) as plain:
        assert plain.get(Reserver).durability == ("replica" if TEST_REDIS == "cluster" else "local")
    assert replicated.get(Reserver).durability == "replica"


async def test_a_purchase_is_acknowledged_only_once_its_replica_has_it(
    replicated: Context, pair: tuple[RedisServer, RedisServer]
) -> None:
    ctx, (primary, replica) = replicated, pair
    assert replica.proc is not None
    event_id = await new_event(ctx, stock=500, limit=1)
    reserver = ctx.get(Reserver)
    # Hundreds at once, each batch confirmed by the replica.
    made = await asyncio.gather(*(try_reserve(reserver, event_id, f"u{i}") for i in range(300)))
    assert all(len(m) == 36 for m in made), Counter(m for m in made if len(m) != 36)

    os.kill(replica.proc.pid, signal.SIGSTOP)  # the replica stops confirming
    try:
        refused = await asyncio.gather(
            *(try_reserve(reserver, event_id, f"v{i}", f"key-{i}") for i in range(50))
        )
        assert set(refused) == {"unavailable"}
        # The reservations ran on the primary, unconfirmed: a retry with the same key replays them, and waits again.
        again = await asyncio.gather(
            *(try_reserve(reserver, event_id, f"v{i}", f"key-{i}") for i in range(50))
        )
        assert set(again) == {"unavailable"}
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    final = await asyncio.gather(
        *(reserver.reserve(event_id, f"v{i}", "10.0.0.1", f"key-{i}") for i in range(50))
    )
    assert not any(r.new for r in final)  # the orders the refused calls made, now durable
    _wait_until(lambda: _in_sync(replica, primary))
    queued = await ctx.redis.hgetall(keys.event_keys(event_id).queued)
    assert len(queued) == 350 and {r.order_id for r in final} <= set(queued)
    assert Counter(queued.values()).most_common(1)[0][1] == 1  # one order per shopper
    # The scripts flushed (a restart, SCRIPT FLUSH): the call falls back to EVAL, and waits for the replica too.
    await ctx.redis.script_flush()
    assert len(await try_reserve(reserver, event_id, "after-flush")) == 36


async def test_a_primary_left_without_a_replica_acknowledges_locally_until_one_is_back(
    replicated: Context, pair: tuple[RedisServer, RedisServer]
) -> None:
    """What a promoted replica is until its old primary returns: rather than stop the sale, purchases are
    answered as with durability local (logged); once a replica is in sync again, they wait for it again."""
    ctx, (primary, replica) = replicated, pair
    event_id = await new_event(ctx, stock=500)
    reserver = ctx.get(Reserver)
    assert replica.proc is not None
    replica.proc.send_signal(signal.SIGKILL)
    replica.proc.wait(10)
    replica.proc = None
    alone = await asyncio.gather(*(try_reserve(reserver, event_id, f"u{i}") for i in range(100)))
    assert all(len(m) == 36 for m in alone), Counter(m for m in alone if len(m) != 36)
    replica.start()
    await asyncio.to_thread(_wait_until, lambda: _in_sync(replica, primary))
    await asyncio.sleep(1.1)  # past the time a replica-less primary is answered without asking again
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        assert await try_reserve(reserver, event_id, "v1", "k1") == "unavailable"
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    assert (await reserver.reserve(event_id, "v1", "10.0.0.1", "k1")).new is False


async def test_a_replayed_call_waits_for_the_first_runs_writes_even_on_a_new_connection(
    replicated: Context, pair: tuple[RedisServer, RedisServer]
) -> None:
    ctx, (primary, replica) = replicated, pair
    assert replica.proc is not None
    event_id = await new_event(ctx, stock=10)
    k = keys.event_keys(event_id)
    head = scripts.reserve_args(ctx.settings.of(SeckillSettings), k)
    purchase = ["01a234ab-0000-8000-8000-000000000001\nalice\n10.0.0.1\n"]
    wait = Wait(1, 100)
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ReplicaWaitError):
            await scripts.reserve(ctx.redis, k, head, purchase, wait)
        # The client's retry of that call on a fresh connection (which wrote nothing yet) gets the first run's
        # answers, and its WAIT still covers the first run's writes.
        fresh = create_redis(primary.url)
        try:
            with pytest.raises(ReplicaWaitError):
                await scripts.reserve(fresh, k, head, purchase, wait)
        finally:
            await fresh.aclose()
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    [reply] = await scripts.reserve(ctx.redis, k, head, purchase, Wait(1, 5000))
    assert reply[0] == "ok"


async def test_a_promoted_replica_that_lost_writes_is_rederived_before_it_sells(
    make_settings: MakeSettings, servers: Servers, tmp_path: Path
) -> None:
    """Sold on the primary while its replica hears nothing (durability local): some of those orders reach
    PostgreSQL, the rest are lost with the primary. The promoted replica refuses purchases until the event is
    re-derived, then sells exactly what is left: nothing oversold, no user over the limit, reconcile clean."""
    primary = RedisServer(tmp_path / "primary", extra_args=_PRIMARY_ARGS)
    primary.start()
    replica: RedisServer | None = None
    async with FaultProxy("127.0.0.1", primary.port) as link:
        try:
            replica = RedisServer(tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(link.port)])  # fmt: skip
            replica.start()
            await asyncio.to_thread(_wait_until, lambda: _in_sync(replica))
            old = make_settings(PEAK_REDIS_URL=primary.url, PEAK_SECKILL_DURABILITY="local")
            async with seckill_context(old) as ctx:
                event_id = await new_event(ctx, stock=60, limit=2)
                reserver = ctx.get(Reserver)
                # 25 shoppers buy twice each (their limit): 30 purchases the replica gets, 20 it never hears of.
                first = await asyncio.gather(
                    *(try_reserve(reserver, event_id, f"u{i % 25}") for i in range(30))
                )
                await asyncio.to_thread(_wait_until, lambda: _in_sync(replica, primary))
                link.stalled = True  # the replica hears nothing more from here on
                lost = await asyncio.gather(
                    *(try_reserve(reserver, event_id, f"u{i % 25}") for i in range(30, 50))
                )
                await drain(ctx, event_id)  # every order so far reaches PostgreSQL
                late = await asyncio.gather(*(try_reserve(reserver, event_id, f"w{i}") for i in range(5)))
            acknowledged = [m for m in [*first, *lost, *late] if len(m) == 36]
            assert len(acknowledged) == 55
            assert primary.proc is not None
            primary.proc.send_signal(signal.SIGKILL)
            primary.proc.wait(10)
            primary.proc = None
        finally:
            await link.close()
    assert replica is not None
    try:
        redis.Redis(port=replica.port).replicaof("NO", "ONE")  # promoted: a new replication id
        new = make_settings(PEAK_REDIS_URL=replica.url, PEAK_SECKILL_DURABILITY="local")
        async with seckill_context(new) as ctx:
            k = keys.event_keys(event_id)
            stale = await ctx.redis.hmget(k.meta, ["stock", "reserved"])
            assert stale == ["30", "30"]  # what the replica had: 50 sold, 20 of them lost with the primary
            # Purchases refuse there ("repairing"); reconcile sees PostgreSQL's orders that Redis lost.
            reserver = ctx.get(Reserver)
            env = {**servers.env(), "PEAK_REDIS_URL": replica.url}
            drifting = await asyncio.to_thread(run_peak, "seckill", "reconcile", str(event_id), env=env)
            assert drifting.returncode == 1, drifting.stdout + drifting.stderr
            repaired = await asyncio.to_thread(
                run_peak, "seckill", "reconcile", str(event_id), "--repair", env=env
            )
            said = repaired.stdout + repaired.stderr
            assert repaired.returncode == 0, said
            assert "repaired bucket 0 stock: 30 -> 10" in said and "reserved: 30 -> 50" in said, said
            assert "held by u10: 1 -> 2" in said and "users' held counts changed: 20" in said, said
            assert "no drift" in said, said
            replid = (await ctx.redis.info("replication"))["master_replid"]
            meta = await ctx.redis.hgetall(k.meta)
            assert (meta["stock"], meta["reserved"], meta["gen"]) == ("10", "50", replid)
            # The command again: nothing left to change.
            again = await asyncio.to_thread(
                run_peak, "seckill", "reconcile", str(event_id), "--repair", env=env
            )
            assert "re-derived, nothing changed" in again.stdout, again.stdout + again.stderr
            # Sell out what is left, many shoppers at once, some of them already at their limit.
            rest = await asyncio.gather(*(try_reserve(reserver, event_id, f"u{i}") for i in range(25)),
                                        *(try_reserve(reserver, event_id, f"y{i}") for i in range(30)))  # fmt: skip
            assert sum(len(r) == 36 for r in rest) == 10, Counter(r for r in rest if len(r) != 36)
            await drain(ctx, event_id)
            rows = await order_rows(ctx, event_id)
            assert len(rows) == 60 and len({r["order_id"] for r in rows}) == 60
            assert max(Counter(r["user_id"] for r in rows).values()) <= 2
            await assert_balanced(ctx, event_id)
            # The five sold after the drain were lost with the primary: acknowledged, never written.
            written = {str(r["order_id"]) for r in rows}
            assert [m for m in late if m not in written] == late
    finally:
        replica.stop()

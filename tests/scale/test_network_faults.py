"""A slow and broken network between the API and Redis (issue 17): a real TCP proxy (loadtest/faultproxy.py) in
front of the session's redis-server adds 100 ms each way and resets connections in the middle of calls, before
the request reached Redis or after Redis ran it and before its reply came back. Purchases answer 202, a replay
of the same key, or 503, well within the client's timeout; the shoppers' retries with the same Idempotency-Key
name the same order; after draining, each key has at most one order, every 202 is an order, stock adds up.

Redis Cluster nodes announce their own addresses, which a proxy cannot stand in front of: single server only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import hiredis
import httpx
import pytest
import uvloop
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from kit.lane import RESEND_WINDOW_S, Lane, TooLateToResend
from kit.lua import Script
from kit.redis import LaneCluster, LaneRedis, create_redis
from kit.redis_private import reset_safe
from kit.settings import Settings
from loadtest.faultproxy import FaultProxy
from peak.app import create_app
from seckill import keys, scripts
from seckill.scripts import Reservation
from seckill.settings import SeckillSettings
from tests.conftest import TEST_REDIS, Servers
from tests.seckill.conftest import (
    SALE_ENV,
    MakeSettings,
    assert_balanced,
    drain,
    http_event,
    order_rows,
    seckill_context,
    shoppers,
)
from tests.support import lifespan_client

pytestmark = pytest.mark.skipif(
    TEST_REDIS == "cluster", reason="the proxy stands in front of one redis-server"
)

SHOPPERS, STOCK = 240, 200
# The shoppers' own timeout. What bounds an answer is the lane: a failed call is tried 3 more times (backoff
# 40 to 160 ms), each attempt at most PEAK's 5 s Redis timeout; resets fail an attempt at once.
CLIENT_TIMEOUT_S = 25.0


@pytest.fixture
async def proxy(servers: Servers) -> AsyncIterator[FaultProxy]:
    port = int(servers.redis.url.rsplit(":", 1)[1].split("/")[0])
    async with FaultProxy("127.0.0.1", port, seed=17) as running:
        yield running


async def test_the_cluster_client_makes_its_node_connections_reset_safe() -> None:
    cluster = create_redis("redis+cluster://127.0.0.1:1")  # nothing is connected until the first command
    try:
        assert isinstance(cluster, LaneCluster)
        made = [cluster.nodes_manager.connection_kwargs["connection_class"]]
        made += [node.connection_class for node in cluster.nodes_manager.startup_nodes.values()]
        assert made and all(cls.__name__ == "ResetSafeConnection" for cls in made)
    finally:
        await cluster.aclose()


def test_under_uvloop_a_write_on_a_reset_connection_is_a_connection_error(servers: Servers) -> None:
    # uvloop (granian's loop) raises RuntimeError for a write on a transport it closed after a reset, where
    # asyncio's loop says nothing; redis-py passed it on, a 500. The kit's connections and lanes make it a
    # ConnectionError: retried by the client, a 503 at worst.
    async def main() -> None:
        port = int(servers.redis.url.rsplit(":", 1)[1].split("/")[0])
        # redis-py 8.2 looks at the transport before it writes and raises ConnectionError itself; 8.1 wrote
        # and let uvloop's RuntimeError through (a transport closed during the write still does).
        classes: list[tuple[Any, tuple[type[Exception], ...]]] = [
            (Connection, (RuntimeError, RedisConnectionError)), (reset_safe(Connection), (RedisConnectionError,))
        ]  # fmt: skip
        for cls, expected in classes:
            conn = cls(port=port)
            await conn.connect()
            conn._writer.transport.abort()
            with pytest.raises(expected):
                await conn.send_command("PING")
            await conn.disconnect()
        client = create_redis(servers.redis.url)
        assert isinstance(client, LaneRedis)
        try:
            echo = Script("peak_test_echo", "return ARGV[1]")
            assert await echo(client, [], ["a"]) == "a"
            for connection in client.lane._idle:
                connection.writer.transport.abort()
            assert await echo(client, [], ["b"]) == "b"  # retried on a new connection
        finally:
            await client.aclose()

    uvloop.run(main())


async def test_a_call_is_sent_again_only_within_the_resend_window(
    proxy: FaultProxy, servers: Servers
) -> None:
    # A script that is not safe to run twice (INCR) shows what a resend does; the lane sends a call again only
    # within RESEND_WINDOW_S of its first send, which the scripts' kept answers outlive (reserve.lua: 30 s).
    direct = create_redis(servers.redis.url)
    incr: Any = ("EVAL", "return redis.call('INCR', KEYS[1])", 1, "peak-test-resend")
    packed, ping = hiredis.pack_command(incr), hiredis.pack_command(("PING",))
    connection_class: Any = reset_safe(Connection)
    try:
        for window_s, runs in ((RESEND_WINDOW_S, 2), (0.0, 1)):
            await direct.delete("peak-test-resend")
            lane = Lane(
                lambda: connection_class(port=proxy.port), size=1, timeout_s=2, resend_window_s=window_s
            )
            try:
                assert await lane.execute(ping, 1) == ["PONG"]  # a connection made (its handshake done)
                proxy.drop_replies = 1  # the first send runs, its reply is lost with the connection
                if runs == 2:
                    assert await lane.execute(packed, 1) == [2]
                else:
                    with pytest.raises(TooLateToResend):
                        await lane.execute(packed, 1)
            finally:
                await lane.aclose()
            assert await direct.get("peak-test-resend") == str(runs)
    finally:
        await direct.aclose()


async def test_a_retried_reservation_call_whose_reply_was_lost_is_answered_from_the_first_run(
    proxy: FaultProxy, make_settings: MakeSettings
) -> None:
    # The lane sends the very same EVALSHA again on a new connection: reserve.lua answers it from the call's
    # answers key (KEYS[8]) instead of selling again.
    settings = make_settings(**SALE_ENV)
    async with seckill_context(settings) as ctx:
        async with lifespan_client(create_app(settings)) as shop:
            event_id = await http_event(shop, stock=5, per_user_limit=5)
        through = create_redis(proxy.url())
        try:
            k = keys.event_keys(event_id)
            head = scripts.reserve_args(ctx.settings.of(SeckillSettings), k)
            await through.ping()
            proxy.drop_replies = 1
            order_id = "00000000-0000-8000-8000-000000000017"
            replies = await scripts.reserve(through, k, head, [f"{order_id}\nu1\n10.0.0.1\nkey-1"])
        finally:
            await through.aclose()
        assert proxy.counts["resets_after"] == 1
        answers, _ = scripts.reservations(replies, event_id)
        # The first run's answer ("ok", not a replay), and one sale.
        assert answers == [Reservation(order_id, True)]
        assert await ctx.redis.xlen(k.stream) == 1
        assert await ctx.redis.hget(k.meta, "stock") == "4"
        assert await ctx.redis.hget(k.users, "u1") == "1"


async def test_a_purchase_refused_after_its_call_ran_is_the_same_order_on_the_retry(
    proxy: FaultProxy, make_settings: MakeSettings
) -> None:
    # Every reply lost, the lane's retries included: the shopper hears 503 although the reservation was made.
    # The retry with the same Idempotency-Key is answered with that order (a replay), and nothing is sold twice.
    settings = make_settings(**SALE_ENV, PEAK_REDIS_URL=proxy.url())
    async with lifespan_client(create_app(settings)) as shop:
        first, who = await shoppers(shop, 2)
        event_id = await http_event(shop, stock=5, per_user_limit=5)
        buy = f"/seckill/events/{event_id}/orders"
        # The process learns the event's buckets on its first purchase (a read of its own, not the script).
        assert (await shop.post(buy, headers=first)).status_code == 202
        proxy.drop_replies = 1_000
        refused = await shop.post(buy, headers={**who, "Idempotency-Key": "k"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "unavailable")
        proxy.heal()
        retried = await shop.post(buy, headers={**who, "Idempotency-Key": "k"})
        assert retried.status_code == 202, retried.text
    async with seckill_context(make_settings(**SALE_ENV)) as ctx:
        entries: Any = await ctx.redis.xrange(keys.event_keys(event_id).stream)
        assert [fields["o"] for _, fields in entries][1:] == [retried.json()["order_id"]]
        assert retried.json()["replayed"] is True
        await drain(ctx, event_id)
        await assert_balanced(ctx, event_id)


async def _purchase(
    shop: httpx.AsyncClient, event_id: int, who: dict[str, str], key: str, seen: Counter[str]
) -> tuple[int, str | None]:
    started = time.monotonic()
    try:
        answer = await shop.post(
            f"/seckill/events/{event_id}/orders", headers={**who, "Idempotency-Key": key},
            timeout=CLIENT_TIMEOUT_S,
        )  # fmt: skip
    except httpx.TimeoutException:
        seen["timeout"] += 1
        return 0, None
    took = time.monotonic() - started
    seen["slowest_ms"] = max(seen["slowest_ms"], int(took * 1000))
    if answer.status_code == 202:
        body = answer.json()
        seen["202 replayed" if body["replayed"] else "202"] += 1
        return 202, str(body["order_id"])
    code = answer.json()["error"]["code"]
    seen[f"{answer.status_code} {code}"] += 1
    return answer.status_code, code


async def test_purchases_through_a_slow_resetting_link_never_duplicate_lose_or_hang(
    proxy: FaultProxy, make_settings: MakeSettings
) -> None:
    settings: Settings = make_settings(**SALE_ENV, PEAK_REDIS_URL=proxy.url())
    direct = make_settings(**SALE_ENV)
    async with lifespan_client(create_app(settings)) as shop:
        users = await shoppers(shop, SHOPPERS)
        # A limit above one: a key that bought twice would show as a shopper with two orders.
        event_id = await http_event(shop, stock=STOCK, per_user_limit=3)
        # Two resets for certain (one of each kind), then 4 % at random.
        proxy.latency_s, proxy.reset_rate, proxy.reset_first = 0.1, 0.04, 2
        seen: Counter[str] = Counter()
        acked: dict[int, str] = {}
        pending = list(range(SHOPPERS))
        for round_no in range(8):
            if round_no == 4:
                proxy.heal()  # the network recovers: every shopper gets a final answer
            results = await asyncio.gather(
                *(_purchase(shop, event_id, users[i], f"key-{i}", seen) for i in pending)
            )
            still = []
            for i, (status, value) in zip(pending, results, strict=True):
                if status == 202:
                    assert acked.setdefault(i, str(value)) == value, f"key-{i} named two orders"
                elif status == 409:
                    assert value == "sold_out", value
                else:
                    assert (status, value) == (503, "unavailable") or status == 0, (status, value)
                    still.append(i)
            pending = still
            if not pending:
                break
        print(f"answers: {dict(seen)}; proxy: {dict(proxy.counts)}")
        assert seen["timeout"] == 0
        assert pending == []
        assert proxy.counts["resets_after"] > 0 and proxy.counts["resets_before"] > 0
    async with seckill_context(direct) as ctx:
        await drain(ctx, event_id)
        rows = await order_rows(ctx, event_id)
        per_user = Counter(row["user_id"] for row in rows)
        assert max(per_user.values()) == 1  # at most one order per key
        assert sorted(str(row["order_id"]) for row in rows) == sorted(
            acked.values()
        )  # each 202, nothing else
        assert len(rows) == min(STOCK, SHOPPERS)
        await assert_balanced(ctx, event_id)

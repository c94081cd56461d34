"""PostgreSQL stopped for many times claim-idle x max-deliveries in the middle of a sale: nothing is lost,
nothing is dead-lettered, and the order writers, the payment-timeout sweeper and the reads behave while it is
down. Real processes and a real `pg_ctl stop`; the full 90 s version is the drill's (PEAK_CHAOS_PG_OUTAGE_S)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
import pytest

from kit.settings import Settings
from loadtest.drill.pg_outage import run, start_postgres, stop_postgres
from loadtest.drill.stack import Stack
from seckill import keys, reconcile
from seckill.worker import DatabaseUnreachable, OrderWriter
from tests.conftest import TEST_REDIS, Servers
from tests.seckill.conftest import (
    PASSWORD,
    SALE_ENV,
    MakeSettings,
    assert_balanced,
    http_event,
    new_event,
    order_rows,
    orders_trigger,
    seckill_context,
    shoppers,
)
from tests.seckill.test_orders import _buy
from tests.support import kill_group, start_peak

_SINGLE = pytest.mark.skipif(TEST_REDIS == "cluster", reason="PostgreSQL's outage, not Redis's topology")


@pytest.mark.slow
@_SINGLE
async def test_postgresql_stopped_immediately_mid_drain_loses_and_dead_letters_nothing(
    stack_dir: Path,
) -> None:
    stack = Stack(stack_dir, say=lambda _: None)
    stack.start()
    try:
        result = await run(stack, short=True, say=lambda _: None)
    finally:
        stack.stop()
    report = "\n".join(f"{'PASS' if i.ok else 'FAIL'} {i.name}: {i.detail}" for i in result.invariants)
    assert result.passed, f"{report}\n{result.figures}\n" + _logs(stack_dir)
    assert result.figures["lost"] == 0 and result.figures["duplicated"] == 0
    assert result.figures["bought_during_outage"] == 60


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*.log")))


class _CutAfterInsert:
    """A TCP proxy in front of PostgreSQL. Armed, it drops the connection the moment the server has answered an
    INSERT (its CommandComplete "INSERT 0 n", sent once the statement's implicit transaction committed): the
    COMMIT happened, its answer never reaches the client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.cut = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def up() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()

        async def down() -> None:
            tail = b""
            while data := await server_r.read(65536):
                if self.armed and b"INSERT 0 " in tail + data:
                    self.armed = False
                    self.cut += 1
                    return
                tail = data[-16:]
                client_w.write(data)
                await client_w.drain()

        try:
            await asyncio.wait(
                [asyncio.create_task(up()), asyncio.create_task(down())], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in (client_w, server_w):
                w.transport.abort()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_commit_whose_answer_is_lost_is_written_once_and_costs_no_delivery(
    make_settings: MakeSettings, servers: Servers
) -> None:
    proxy = _CutAfterInsert(servers.postgres.port)
    port = await proxy.start()
    through = servers.postgres.url.replace(f":{servers.postgres.port}/", f":{port}/")
    # One delivery allowed: a lost answer that counted one would dead-letter the batch on its redelivery.
    outage = {"PEAK_SECKILL_MAX_DELIVERIES": "1", "PEAK_SECKILL_CLAIM_IDLE_MS": "100"}
    direct_settings = make_settings(**outage)
    try:
        async with (
            seckill_context(direct_settings) as ctx,
            seckill_context(make_settings(PEAK_DATABASE_URL=through, **outage)) as behind,
        ):
            event_id = await new_event(ctx, stock=40)
            bought = await _buy(ctx, event_id, [f"u{i}" for i in range(20)])
            writer = OrderWriter(behind)
            proxy.armed = True
            with pytest.raises(DatabaseUnreachable):
                await writer.step(event_id)
            assert proxy.cut == 1
            # Committed, not acknowledged: in PostgreSQL and still pending, its delivery taken back.
            assert len(await order_rows(ctx, event_id)) == 20
            pending = await ctx.redis.xpending_range(
                keys.event_keys(event_id).stream, keys.GROUP, "-", "+", 100
            )
            assert len(pending) == 20 and {p["times_delivered"] for p in pending} == {0}

            # The same with the backend terminated in the middle of a batch (no COMMIT at all).
            more = await _buy(ctx, event_id, [f"v{i}" for i in range(20)])
            async with orders_trigger(ctx, "PERFORM pg_sleep(0.05); RETURN NEW;"):
                step = asyncio.create_task(writer.step(event_id))
                killed = False
                for _ in range(200):
                    killed = bool(
                        await ctx.db.fetchval(
                            "SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE query LIKE '%INSERT INTO seckill_orders%' AND state = 'active' AND pid <> pg_backend_pid()"
                        )
                    )
                    if killed:
                        break
                    await asyncio.sleep(0.02)
                assert killed
                with pytest.raises(DatabaseUnreachable):
                    await step
            assert len(await order_rows(ctx, event_id)) == 20

            await asyncio.sleep(0.2)
            assert await writer.claim(event_id) == 40
            rows = await order_rows(ctx, event_id)
            assert sorted(str(r["order_id"]) for r in rows) == sorted(bought + more)
            assert await ctx.redis.xlen(keys.event_keys(event_id).dead) == 0
            b = await assert_balanced(ctx, event_id)
            assert (b.queued, b.pending_payment, b.dead_letters) == (0, 40, 0)
    finally:
        await proxy.stop()


_FAST_S = 5.0  # a bound on behaviour (no hang on the pool), far above what an answer takes


async def _fast(call: Awaitable[httpx.Response]) -> httpx.Response:
    started = time.monotonic()
    answer = await call
    assert time.monotonic() - started < _FAST_S, (
        f"{answer.request.url} took {time.monotonic() - started:.1f} s"
    )
    return answer


def _unavailable(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 503
        and answer.json()["error"]["code"] == "unavailable"
        and "Retry-After" in answer.headers
    )


@pytest.mark.slow
@_SINGLE
async def test_postgresql_shut_down_fast_pauses_the_writer_and_the_sweeper_and_reads_answer_503(
    shop: httpx.AsyncClient, sale_settings: Settings, servers: Servers, tmp_path: Path
) -> None:
    users = await shoppers(shop, 40)
    # Unpaid orders time out after 1 s: those written before the outage fall due while PostgreSQL is down.
    event_id = await http_event(shop, stock=40, payment_timeout_s=1)
    buy = f"/seckill/events/{event_id}/orders"
    first = [(await shop.post(buy, headers=h)).json()["order_id"] for h in users[:20]]
    env = {
        **servers.env(), **SALE_ENV, "PEAK_SECKILL_CLAIM_IDLE_MS": "500", "PEAK_SECKILL_MAX_DELIVERIES": "1",
        "PEAK_SECKILL_SWEEP_INTERVAL_S": "0.2", "PEAK_OUTAGE_RETRY_MAX_S": "1", "PEAK_LOG_LEVEL": "info",
    }  # fmt: skip
    log = tmp_path / "worker.log"
    worker = start_peak("worker", env=env, log=log)
    try:
        async with seckill_context(sale_settings) as ctx:
            deadline = time.monotonic() + 30
            queued = keys.event_keys(event_id).queued
            # Written and acknowledged (no longer queued in Redis): a poll of them needs PostgreSQL.
            while len(await order_rows(ctx, event_id)) < 20 or await ctx.redis.hlen(queued):
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.02)
        # Down before any of them falls due (1 s): the sweeper meets the outage with work to do.
        await asyncio.to_thread(stop_postgres, servers.postgres, "fast")
        try:
            second = await asyncio.gather(*(shop.post(buy, headers=h) for h in users[20:]))
            assert {a.status_code for a in second} == {202}
            ready = await _fast(shop.get("/readyz"))
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"redis": "ok", "postgres": "unreachable"}
            assert "Error" not in ready.text
            await asyncio.sleep(
                2.5
            )  # past the processes' memory of these orders (PEAK_SECKILL_ORDER_*_TTL_S)
            assert _unavailable(await _fast(shop.get(f"/seckill/orders/{first[0]}", headers=users[0])))
            assert _unavailable(await _fast(shop.get("/seckill/orders", headers=users[0])))
            assert _unavailable(
                await _fast(shop.post(f"/seckill/orders/{first[1]}/cancel", headers=users[1]))
            )
            login = {"username": "shopper0", "password": PASSWORD}
            assert _unavailable(await _fast(shop.post("/sso/login", json=login)))
            # Several times claim-idle x max-deliveries (0.5 s): the old writer dead-lettered everything here.
            await asyncio.sleep(3.0)
            assert worker.poll() is None
        finally:
            await asyncio.to_thread(start_postgres, servers.postgres)
        async with seckill_context(sale_settings) as ctx:
            deadline = time.monotonic() + 30
            while True:
                b = await reconcile.balance(ctx, event_id)
                givebacks = {r["giveback"] for r in await order_rows(ctx, event_id)}
                if b.queued == 0 and b.cancelled == 40 and givebacks == {"done"}:
                    break
                assert time.monotonic() < deadline, f"{b}\n{log.read_text()}"
                await asyncio.sleep(0.1)
            rows = await order_rows(ctx, event_id)
            assert len(rows) == 40 and {r["giveback"] for r in rows} == {"done"}
            assert await ctx.redis.xlen(keys.event_keys(event_id).dead) == 0
            b = await assert_balanced(ctx, event_id)
            assert (b.stock_left, b.dead_letters, b.pending_payment) == (40, 0, 0)
            # Every shopper's quota came back with the stock.
            held = await ctx.redis.hgetall(keys.event_keys(event_id).users)
            assert set(held.values()) <= {"0"}
        assert (await shop.get("/readyz")).status_code == 200
        assert (await shop.post(buy, headers=users[0])).status_code == 202
    finally:
        kill_group(worker, signal.SIGTERM)
    text = log.read_text()
    # One warning per loop and outage, saying what waits and what to do; no traceback, no line per try.
    assert text.count("order writer paused: PostgreSQL is unreachable") == 1, text
    assert text.count("payment-timeout sweeper paused: PostgreSQL is unreachable") == 1, text
    assert text.count("order writer resumes") == 1 and text.count("payment-timeout sweeper resumes") == 1
    assert "Traceback" not in text and "dead-lettered:" not in text, text

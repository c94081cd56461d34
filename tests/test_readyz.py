"""PostgreSQL reachable but answering nothing (a host gone, a dropped route): /readyz says so within its
bound, purchases go on, and a request that needs PostgreSQL answers 503 `unavailable` within
PEAK_DB_ACQUIRE_TIMEOUT_S instead of waiting on the pool."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from kit.db import postgres_outage
from kit.outage import store_outage
from kit.settings import Settings
from peak.app import create_app
from tests.conftest import Servers
from tests.seckill.conftest import PASSWORD, SALE_ENV, http_event, shoppers
from tests.support import lifespan_client

_BOUND_S = 5.0  # a bound on behaviour (no hang), far above the 1 s the settings below allow


class _Blackhole:
    """A TCP proxy in front of PostgreSQL that can go dark: its connections cut, new ones accepted and never
    answered (what a client sees of a host that stopped answering)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dark = False
        self._open: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def go_dark(self) -> None:
        self.dark = True
        for writer in self._open:
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.dark:
            while await client_r.read(65536):
                pass  # swallowed, never answered
            return
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        self._open += [client_w, server_w]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

        try:
            await asyncio.wait(
                [
                    asyncio.create_task(pipe(client_r, server_w)),
                    asyncio.create_task(pipe(server_r, client_w)),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )
        except OSError:
            pass
        finally:
            client_w.transport.abort()
            server_w.transport.abort()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def _timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = await call
    return answer, time.monotonic() - started


async def test_postgresql_answering_nothing_is_reported_fast_and_purchases_go_on(
    make_settings: Callable[..., Settings], servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = _Blackhole(servers.postgres.port)
    port = await proxy.start()
    url = servers.postgres.url.replace(f":{servers.postgres.port}/", f":{port}/")
    settings = make_settings(**SALE_ENV, PEAK_DATABASE_URL=url, PEAK_DB_ACQUIRE_TIMEOUT_S="1")
    try:
        async with lifespan_client(create_app(settings)) as client:
            logging.getLogger().addHandler(
                caplog.handler
            )  # the app's log set-up replaced the root's handlers
            alice, bob = await shoppers(client, 2)
            event_id = await http_event(client, stock=5)
            assert (await client.get("/readyz")).status_code == 200
            proxy.go_dark()

            # The first check may meet its pooled connection cut; the next ones wait on a new one that never
            # answers, for the check's bound.
            for states in ({"unreachable", "timeout"}, {"timeout"}, {"timeout"}):
                ready, took = await _timed(client.get("/readyz"))
                assert ready.status_code == 503 and took < _BOUND_S, (ready.text, took)
                assert ready.json()["checks"]["redis"] == "ok"
                assert ready.json()["checks"]["postgres"] in states, ready.text
            # Logged when the state changes, not at every probe.
            said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("readyz: postgres")]
            assert 1 <= len(said) <= 2, said
            assert (
                ready.json()["error"]["code"] == "not_ready"
                and "postgres" in ready.json()["error"]["message"]
            )
            assert "Error" not in ready.text and "127.0.0.1" not in ready.text  # no exception text

            # Purchases never touch PostgreSQL.
            bought = await client.post(f"/seckill/events/{event_id}/orders", headers=alice)
            assert bought.status_code == 202, bought.text
            for call in (
                client.get("/seckill/orders", headers=bob),
                client.post("/sso/login", json={"username": "shopper1", "password": PASSWORD}),
                client.get("/cs/messages", headers=bob),
                client.get("/reviews/SKU-1"),
            ):
                answer, took = await _timed(call)
                assert took < _BOUND_S, (answer.request.url, took)
                assert answer.status_code in (200, 503), (answer.request.url, answer.text)
                if answer.status_code == 503:
                    assert answer.json()["error"]["code"] in ("unavailable", "degraded"), answer.text
                    assert "Retry-After" in answer.headers
            listed, _ = await _timed(client.get("/seckill/orders", headers=bob))
            assert listed.status_code == 503 and listed.json()["error"]["code"] == "unavailable"

            proxy.dark = False
            deadline = time.monotonic() + 10
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            assert (await client.get("/seckill/orders", headers=bob)).status_code == 200
    finally:
        proxy.close()


def test_what_counts_as_postgresql_out_of_reach() -> None:
    # Restarting, shutting down, a backend terminated, a connection cut, no connection in time: outages.
    for exc in (
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset by peer"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another process"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    ):
        assert postgres_outage(exc) and store_outage(exc), exc
    # The data's own faults: the same statement fails the same way every time.
    faults: tuple[Exception, ...] = (
        asyncpg.DataError("invalid input syntax for type uuid"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.exceptions._base.DataError("invalid input for query argument $1"),
        ValueError("no"),
        LookupError("event 7 is not in PostgreSQL"),
    )
    for fault in faults:
        assert not postgres_outage(fault) and not store_outage(fault), fault

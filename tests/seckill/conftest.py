"""Seckill fixtures: a process context with the seckill services, events made through the service layer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

import seckill.component
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from kit import migrations
from kit.context import Context, open_context
from kit.errors import ApiError
from kit.settings import Settings
from peak.app import components, create_app
from seckill import events, keys, messages, reconcile, scripts
from seckill.reservation import Reserver
from seckill.settings import SeckillSettings
from seckill.signature import HEADER, sign
from seckill.worker import OrderWriter
from tests.support import lifespan_client

ADMIN_TOKEN = "test-admin-token-seckill"


@contextlib.asynccontextmanager
async def seckill_context(settings: Settings) -> AsyncIterator[Context]:
    async with open_context(settings, [seckill.component.component()], "api") as ctx:
        yield ctx


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    async with seckill_context(settings) as c:
        yield c


def at_s(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def in_s(seconds: float) -> str:
    return at_s(seconds).isoformat()


async def new_event(
    ctx: Context,
    *,
    stock: int = 10,
    limit: int = 1,
    starts_in_s: float = -60,
    lasts_s: float = 3600,
    payment_timeout_s: int = 900,
    sku: str = "SKU-1",
    buckets: int = 1,
    ticket_required: bool = False,
    admission_spread_ms: int = 0,
) -> int:
    made = await events.create_event(
        ctx,
        events.NewEvent(
            sku=sku, title="Phone", price=PRICE, stock=stock, starts_at=at_s(starts_in_s),
            ends_at=at_s(starts_in_s + lasts_s), per_user_limit=limit, payment_timeout_s=payment_timeout_s,
            buckets=buckets, ticket_required=ticket_required, admission_spread_ms=admission_spread_ms,
        ),
    )  # fmt: skip
    return int(made["id"])


async def drain(ctx: Context, event_id: int, writer: OrderWriter | None = None) -> None:
    """Write every queued order of the event (every stock bucket's stream) to PostgreSQL in-process."""
    writer = writer or OrderWriter(ctx)
    buckets = int(await ctx.redis.hget(keys.event_keys(event_id).meta, "buckets") or 1)

    async def step() -> int:
        return sum([await writer.step(event_id, bucket=b) for b in range(buckets)])

    # Bounded: a writer that keeps failing would otherwise hang the run instead of failing this test.
    deadline = time.monotonic() + 60
    while await step() or (await reconcile.balance(ctx, event_id)).queued:
        assert time.monotonic() < deadline, "orders stay queued: the order writer keeps failing (see the log)"


async def assert_balanced(ctx: Context, event_id: int) -> reconcile.Balance:
    b = await reconcile.balance(ctx, event_id)
    assert b.problems() == [], reconcile.terms(b)
    return b


async def order_rows(ctx: Context, event_id: int) -> list[Any]:
    return list(await ctx.db.fetch("SELECT * FROM seckill_orders WHERE event_id = $1", event_id))


MakeSettings = Callable[..., Settings]


PASSWORD = "correct horse battery staple"
PAYMENT_SECRET = "test-payment-secret-0123456789"
# What http_event and new_event sell at.
PRICE = 99_900
SALE_ENV = {
    "PEAK_ADMIN_TOKEN": ADMIN_TOKEN,
    "PEAK_PAYMENT_SECRET": PAYMENT_SECRET,
    "PEAK_SECKILL_IP_RATE_PER_S": "1000000",
    "PEAK_SECKILL_USER_RATE_PER_S": "1000000",
    # Hundreds of shoppers sign up from the test client's one address.
    "PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR": "0",
    # Tokens made in-process must be valid in a `peak serve` process started by the test.
    "PEAK_SSO_ISSUER": "http://peak.test",
}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def shoppers(client: httpx.AsyncClient, count: int, prefix: str = "shopper") -> list[dict[str, str]]:
    """Bearer headers of `count` new shoppers, created and logged in concurrently through the API."""
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> dict[str, str]:
        async with gate:
            return await _shopper(client, f"{prefix}{i}")

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _shopper(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    made = await client.post("/sso/users", json={"username": name, "password": PASSWORD})
    assert made.status_code == 201, made.text
    login = await client.post("/sso/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def http_event(client: httpx.AsyncClient, **fields: Any) -> int:
    """An event made through the API; untickted unless ``ticket_required=True`` (the API's default is true)."""
    body = {
        "sku": "SKU-1", "title": "Phone", "price": PRICE, "stock": 10, "starts_at": in_s(-60),
        "ends_at": in_s(3600), "ticket_required": False, **fields,
    }  # fmt: skip
    made = await client.post("/seckill/events", json=body, headers=ADMIN)
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def signed_notice(
    order_id: str,
    *,
    amount: int = PRICE,
    payment_id: str | None = None,
    secret: str = PAYMENT_SECRET,
    at: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the payment provider's callback for an order, signed as the provider signs."""
    body = orjson.dumps(
        {"payment_id": payment_id or f"pay-{order_id}", "order_id": order_id, "amount": amount}
    )
    headers = {"Content-Type": "application/json", HEADER: sign(secret.encode(), body, at)}
    return body, headers


async def provider_pays(client: httpx.AsyncClient, order_id: str, **notice: Any) -> httpx.Response:
    """POST the payment provider's signed callback for an order (see signed_notice for the options)."""
    body, headers = signed_notice(order_id, **notice)
    return await client.post("/seckill/payments/callback", content=body, headers=headers)


@pytest.fixture
def sale_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(**SALE_ENV)


@pytest.fixture
async def shop(sale_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(sale_settings)) as c:
        yield c


@contextlib.asynccontextmanager
async def orders_trigger(ctx: Context, body: str, when: str = "") -> AsyncIterator[None]:
    """A BEFORE INSERT trigger on seckill_orders while the block runs: a failing or a slow database."""
    await ctx.db.execute(
        "CREATE FUNCTION seckill_test_trigger() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN {body} END $$; CREATE TRIGGER seckill_test_trigger BEFORE INSERT ON seckill_orders"
        f" FOR EACH ROW {when} EXECUTE FUNCTION seckill_test_trigger();"
    )
    try:
        yield
    finally:
        await ctx.db.execute(
            "DROP TRIGGER seckill_test_trigger ON seckill_orders; DROP FUNCTION seckill_test_trigger()"
        )


async def try_reserve(reserver: Reserver, event_id: int, user: str, key: str | None = None) -> str:
    """The order id of a reservation, or the error code it was refused with."""
    try:
        made = await reserver.reserve(event_id, user, "10.0.0.1", key)
    except ApiError as exc:
        return exc.code
    return made.order_id


async def call_reserve(
    ctx: Context, event_id: int, purchases: list[tuple[str, str, str, str]], *, bucket: int = 0
) -> list[Any]:
    """One call of the reservation script as the Reserver makes it: (order id, user id, IP, idempotency key
    or "") -> its replies as Redis gave them."""
    k = keys.event_keys(event_id, bucket)
    head = scripts.reserve_args(ctx.settings.of(SeckillSettings), k)
    return list(await scripts.reserve(ctx.redis, k, head, ["\n".join(p) for p in purchases]))


async def write_silently(ctx: Context, event_id: int, order_ids: list[str]) -> None:
    """Store queued orders and forget them as queued as the order writer does, but publish nothing (a lost
    'written' message)."""
    writer = OrderWriter(ctx)
    reply: Any = await ctx.redis.xreadgroup(
        keys.GROUP, writer.consumer, {keys.event_keys(event_id).stream: ">"}, count=100_000
    )
    entries = [e for e in reply[0][1] if e[1]["o"] in order_ids]
    async with ctx.db.acquire() as conn:
        assert await messages.insert_orders(conn, event_id, [f for _, f in entries]) == set(order_ids)
    await scripts.ack(ctx.redis, keys.event_keys(event_id), [e for e, _ in entries], order_ids)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (AOF on), to stop, restart or starve of memory."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_postgres() -> AsyncIterator[PostgresServer]:
    """A migrated PostgreSQL of the test's own, to stop and start again; outside pytest's basetemp, as
    tests/conftest.py explains."""
    root = Path(tempfile.mkdtemp(prefix="peak-test-own-pg-"))
    server = PostgresServer(root / "postgres", durable=False, say=lambda _: None)
    server.start()
    try:
        conn = await asyncpg.connect(server.url)
        await migrations.apply(conn, migrations.discover(components()))
        await conn.close()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

"""The baseline `peak bench` compares purchases with: a naive PostgreSQL row-lock purchase.

Mounted only by ``loadtest.apps.baseline_app``, the app the bench's private stacks serve. It is what many
flash-sale tutorials do: lock the stock row, check, decrement, insert the order, commit; every purchase of one
item waits for the previous one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from kit.component import Component, Role
from kit.context import Context, context_of
from kit.errors import Conflict, NotFound
from kit.responses import JSONResponse
from kit.routing import route
from kit.schema import read_body, rule
from sso.client import authenticate, require_admin

__all__ = ["component"]

_TABLES = """
CREATE TABLE IF NOT EXISTS bench_naive_events (id bigserial PRIMARY KEY, stock int NOT NULL);
CREATE TABLE IF NOT EXISTS bench_naive_orders (
    id uuid PRIMARY KEY, event_id bigint NOT NULL, user_id text NOT NULL, created_at timestamptz DEFAULT now()
);
"""


@dataclasses.dataclass
class NaiveEvent:
    stock: int = dataclasses.field(metadata=rule(min=0))


async def create_event(request: Request) -> Response:
    await require_admin(request)
    body = await read_body(request, NaiveEvent)
    ctx = context_of(request)
    event_id = await ctx.db.fetchval(
        "INSERT INTO bench_naive_events (stock) VALUES ($1) RETURNING id", body.stock
    )
    return JSONResponse({"id": event_id, "stock": body.stock}, status_code=201)


async def purchase(request: Request) -> Response:
    principal = await authenticate(request)
    ctx = context_of(request)
    event_id = int(request.path_params["event_id"])
    async with ctx.db.acquire() as conn, conn.transaction():
        stock = await conn.fetchval("SELECT stock FROM bench_naive_events WHERE id = $1 FOR UPDATE", event_id)
        if stock is None:
            raise NotFound("no such event", code="event_not_found")
        if stock <= 0:
            raise Conflict("sold out", code="sold_out")
        await conn.execute("UPDATE bench_naive_events SET stock = stock - 1 WHERE id = $1", event_id)
        order_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO bench_naive_orders (id, event_id, user_id) VALUES ($1, $2, $3)",
            order_id,
            event_id,
            principal.user_id,
        )
    return JSONResponse({"order_id": str(order_id), "status": "paid_naively"}, status_code=202)


@contextlib.asynccontextmanager
async def _tables(ctx: Context, role: Role) -> AsyncIterator[None]:
    if role == "api":
        async with ctx.db.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock(7021)")
            try:
                await conn.execute(_TABLES)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(7021)")
    yield


def component() -> Component:
    return Component(
        name="bench_naive",
        routes=[
            route(
                "/bench/naive/events",
                create_event,
                methods=["POST"],
                summary="Create a naive baseline event (benchmark only)",
                body=NaiveEvent,
                responses={201: {"type": "object"}},
                errors={401: ["unauthenticated"], 403: ["forbidden"]},
                auth=["admin"],
            ),
            route(
                "/bench/naive/{event_id:int}/orders",
                purchase,
                methods=["POST"],
                summary="Buy with a PostgreSQL row lock (benchmark baseline)",
                responses={202: {"type": "object"}},
                errors={401: ["unauthenticated"], 404: ["event_not_found"], 409: ["sold_out"]},
                auth=["bearer"],
            ),
        ],
        services=[_tables],
    )

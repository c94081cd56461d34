"""HTTP endpoints of seckill. Shoppers authenticate through ``sso.client``; admin calls need the admin role."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kit.context import context_of
from kit.errors import InvalidRequest, error_body
from kit.responses import JSONBytes, JSONResponse, dumps
from kit.routing import ApiRoute, raw_header, route
from kit.schema import read_body
from seckill import events, order_routes, reconcile
from seckill.errors import SoldOut
from seckill.reservation import Reserver
from seckill.shapes import DOWN, INT, STR, obj
from seckill.soldout import SoldOutMemory
from sso.client import authenticate, require_admin

__all__ = ["routes"]

_IDEMPOTENCY_MAX = 200
# Shared by every sold-out answer: Response.__call__ only reads it, and the middlewares copy the header list
# before adding theirs.
_SOLD_OUT_RESPONSE = JSONBytes(
    dumps(error_body(SoldOut.code, SoldOut().message)), status_code=SoldOut.status_code
)
_QUEUED_BODY = b'{"order_id":"%s","status":"queued","event_id":%d,"replayed":%s}'


async def create_event(request: Request) -> Response:
    await require_admin(request)
    body = await read_body(request, events.NewEvent)
    return JSONResponse(await events.create_event(context_of(request), body), status_code=201)


async def patch_event(request: Request) -> Response:
    await require_admin(request)
    event_id = events.event_id_of(request.path_params["event_id"])
    body = await read_body(request, events.EventPatch)
    return JSONResponse(await events.add_stock_or_move_end(context_of(request), event_id, body))


async def show_event(request: Request) -> Response:
    event_id = events.event_id_of(request.path_params["event_id"])
    return JSONResponse(await events.view_event(context_of(request), event_id))


async def event_stats(request: Request) -> Response:
    await require_admin(request)
    event_id = events.event_id_of(request.path_params["event_id"])
    ctx = context_of(request)
    return JSONResponse(await reconcile.stats(ctx, event_id))


async def purchase(request: Request) -> Response:
    principal = await authenticate(request)
    event_id = events.event_id_of(request.path_params["event_id"])
    key = raw_header(request.scope, b"idempotency-key")
    ctx = context_of(request)
    if key is None:
        if event_id in ctx.get(SoldOutMemory):
            # The hot answer after a sell-out: one response made at import, no exception unwinding, no Redis.
            return _SOLD_OUT_RESPONSE
    elif not (0 < len(key) <= _IDEMPOTENCY_MAX and key.isascii() and key.isprintable()):
        # Printable ASCII: the key travels inside line-separated script arguments and hold records.
        raise InvalidRequest(
            f"the Idempotency-Key header must be 1 to {_IDEMPOTENCY_MAX} printable ASCII characters"
        )
    client = request.scope.get("client")
    made = await ctx.get(Reserver).reserve(
        event_id, principal.user_id, client[0] if client else "unknown", key
    )
    # {"order_id", "status": "queued", "event_id", "replayed"}, filled in rather than rendered: the order id is
    # a UUID and the event id an int, so nothing needs escaping.
    body = _QUEUED_BODY % (made.order_id.encode(), event_id, b"false" if made.new else b"true")
    return JSONBytes(body, status_code=202)


_EVENT = obj(
    id=INT, sku=STR, title=STR, price=INT, stock=INT, starts_at=STR, ends_at=STR,
    per_user_limit=INT, payment_timeout_s=INT, buckets=INT,
)  # fmt: skip
_VIEW = obj(
    id=INT, sku=STR, title=STR, price=INT, starts_at=STR, ends_at=STR, server_time=STR,
    status={"enum": ["upcoming", "active", "sold_out", "ended"]}, stock_left=INT, per_user_limit=INT,
)  # fmt: skip
_STATS = obj(
    stock_total=INT, stock_left=INT, reserved=INT, queued=INT, orders_pending_payment=INT,
    orders_paid=INT, orders_cancelled=INT, dead_letters=INT, cancelled_not_returned=INT, drift=INT,
)  # fmt: skip
_QUEUED = obj(order_id=STR, status={"enum": ["queued"]}, event_id=INT, replayed={"type": "boolean"})
_AUTH_ERRORS = {401: ["unauthenticated"], 403: ["forbidden"]}


def routes() -> list[ApiRoute]:
    tag = "seckill"
    # The purchase first: Starlette tries routes in order, and it is the hot path.
    return [
        route(
            "/seckill/events/{event_id}/orders", purchase, methods=["POST"], tag=tag, auth=["bearer"],
            summary="Buy: reserve one item and queue its order",
            headers={"Idempotency-Key": "a retry with the same key returns the same order"},
            responses={202: _QUEUED},
            errors={
                401: ["unauthenticated"], 404: ["event_not_found"],
                409: ["sold_out", "limit_reached", "not_started", "ended"], 422: ["invalid_request"],
                429: ["rate_limited"], 503: ["unavailable"],
            },
        ),
        route(
            "/seckill/events", create_event, methods=["POST"], tag=tag, auth=["admin"],
            summary="Create a sale event and warm its stock into Redis",
            body=events.NewEvent, responses={201: _EVENT},
            errors={**DOWN, **_AUTH_ERRORS, 422: ["invalid_request"]},
        ),
        route(
            "/seckill/events/{event_id}", patch_event, methods=["PATCH"], tag=tag, auth=["admin"],
            summary="Add stock during the sale or move the end time",
            body=events.EventPatch, responses={200: _EVENT},
            errors={**DOWN, **_AUTH_ERRORS, 404: ["event_not_found"], 422: ["invalid_request"]},
        ),
        route(
            "/seckill/events/{event_id}", show_event, tag=tag,
            summary="A sale event as shoppers see it, with the server clock (Redis only)",
            responses={200: _VIEW}, errors={**DOWN, 404: ["event_not_found"]},
        ),
        route(
            "/seckill/events/{event_id}/stats", event_stats, tag=tag, auth=["admin"],
            summary="Stock and order counts of a sale event, matched at one moment",
            responses={200: _STATS}, errors={**DOWN, **_AUTH_ERRORS, 404: ["event_not_found"]},
        ),
        *order_routes.routes(),
    ]  # fmt: skip

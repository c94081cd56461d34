"""HTTP endpoints of seckill. Shoppers authenticate through ``sso.client``; admin calls need the admin role."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kit.context import context_of
from kit.errors import InvalidRequest, error_body
from kit.responses import JSONBytes, JSONResponse, dumps
from kit.routing import ApiRoute, raw_header, route
from kit.schema import read_body
from seckill import events, orders, payments, reconcile, signature
from seckill.errors import PaidByProvider, SoldOut
from seckill.reservation import Reserver
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


async def show_order(request: Request) -> Response:
    principal = await authenticate(request)
    ctx = context_of(request)
    return JSONResponse(await orders.get_order(ctx, request.path_params["order_id"], principal.user_id))


async def pay(request: Request) -> Response:
    # Only the payment provider's signed callback marks an order paid; a shopper's word never does.
    await authenticate(request)
    raise PaidByProvider()


async def payment_callback(request: Request) -> Response:
    """The payment provider's notification: no SSO credential, the body's signature is the credential."""
    ctx = context_of(request)
    raw = await request.body()
    ctx.get(payments.PaymentGate).check(raw_header(request.scope, b"x-payment-signature"), raw)
    notice = await read_body(request, payments.PaymentNotice)
    return JSONResponse(await payments.settle(ctx, notice))


async def cancel(request: Request) -> Response:
    principal = await authenticate(request, strict=True)
    ctx = context_of(request)
    return JSONResponse(await orders.cancel_order(ctx, request.path_params["order_id"], principal.user_id))


def _obj(*names: str, **typed: Any) -> dict[str, Any]:
    props: dict[str, Any] = {n: {} for n in names}
    props.update(typed)
    return {"type": "object", "properties": props, "required": list(props)}


_INT = {"type": "integer"}
_STR = {"type": "string"}
_EVENT = _obj(
    id=_INT, sku=_STR, title=_STR, price=_INT, stock=_INT, starts_at=_STR, ends_at=_STR,
    per_user_limit=_INT, payment_timeout_s=_INT, buckets=_INT,
)  # fmt: skip
_VIEW = _obj(
    id=_INT, sku=_STR, title=_STR, price=_INT, starts_at=_STR, ends_at=_STR, server_time=_STR,
    status={"enum": ["upcoming", "active", "sold_out", "ended"]}, stock_left=_INT, per_user_limit=_INT,
)  # fmt: skip
_STATS = _obj(
    stock_total=_INT, stock_left=_INT, reserved=_INT, queued=_INT, orders_pending_payment=_INT,
    orders_paid=_INT, orders_cancelled=_INT, dead_letters=_INT, cancelled_not_returned=_INT, drift=_INT,
)  # fmt: skip
_QUEUED = _obj(order_id=_STR, status={"enum": ["queued"]}, event_id=_INT, replayed={"type": "boolean"})
_STATUS = {"enum": ["queued", "pending_payment", "paid", "cancelled"]}
_ORDER = {
    "type": "object",
    "required": ["order_id", "event_id", "status", "pay_by"],
    "properties": {
        "order_id": _STR, "event_id": _INT, "status": _STATUS, "pay_by": {"type": ["string", "null"]},
        "sku": _STR, "price": _INT, "reserved_at": _STR, "paid_at": {"type": ["string", "null"]},
        "cancelled_at": {"type": ["string", "null"]},
        "cancel_reason": {"enum": ["timeout", "owner", None]},
    },
}  # fmt: skip
_PAYMENT = _obj(payment_id=_STR, order_id=_STR, amount=_INT, outcome={"enum": ["paid"]}, received_at=_STR)
# The shopper's pay call's one answer once authenticated (an error body whose code is always `forbidden`).
_REFUSED = _obj(error=_obj(code={"enum": ["forbidden"]}, message=_STR))
_AUTH_ERRORS = {401: ["unauthenticated"], 403: ["forbidden"]}
_DOWN = {503: ["unavailable"]}


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
            errors={**_DOWN, **_AUTH_ERRORS, 422: ["invalid_request"]},
        ),
        route(
            "/seckill/events/{event_id}", patch_event, methods=["PATCH"], tag=tag, auth=["admin"],
            summary="Add stock during the sale or move the end time",
            body=events.EventPatch, responses={200: _EVENT},
            errors={**_DOWN, **_AUTH_ERRORS, 404: ["event_not_found"], 422: ["invalid_request"]},
        ),
        route(
            "/seckill/events/{event_id}", show_event, tag=tag,
            summary="A sale event as shoppers see it, with the server clock (Redis only)",
            responses={200: _VIEW}, errors={**_DOWN, 404: ["event_not_found"]},
        ),
        route(
            "/seckill/events/{event_id}/stats", event_stats, tag=tag, auth=["admin"],
            summary="Stock and order counts of a sale event, matched at one moment",
            responses={200: _STATS}, errors={**_DOWN, **_AUTH_ERRORS, 404: ["event_not_found"]},
        ),
        route(
            "/seckill/orders/{order_id}", show_order, tag=tag, auth=["bearer"],
            summary="One of your orders (queued while still on its way to the database)",
            responses={200: _ORDER}, errors={**_DOWN, 401: ["unauthenticated"], 404: ["order_not_found"]},
        ),
        route(
            "/seckill/orders/{order_id}/pay", pay, methods=["POST"], tag=tag, auth=["bearer"],
            summary="Refused (403): an order is paid only by the payment provider's signed callback",
            responses={403: _REFUSED}, errors={401: ["unauthenticated"], 403: ["forbidden"]},
        ),
        route(
            "/seckill/payments/callback", payment_callback, methods=["POST"], tag=tag,
            summary="The payment provider's signed notification: pays the order once per payment id",
            body=payments.PaymentNotice, responses={200: _PAYMENT},
            headers={
                signature.HEADER: "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>' with a secret of"
                " PEAK_PAYMENT_SECRET>; t within PEAK_PAYMENT_TOLERANCE_S of the server clock",
            },
            errors={
                400: ["invalid_json"], 401: ["invalid_signature", "stale_signature"], 404: ["order_not_found"],
                409: ["amount_mismatch", "order_cancelled", "order_paid", "order_queued", "payment_conflict"],
                422: ["invalid_request"], 503: ["unavailable", "payments_not_configured"],
            },
        ),
        route(
            "/seckill/orders/{order_id}/cancel", cancel, methods=["POST"], tag=tag, auth=["bearer"],
            summary="Cancel your unpaid order; its stock goes back on sale",
            responses={200: _ORDER},
            errors={
                **_DOWN, 401: ["unauthenticated"], 404: ["order_not_found"], 409: ["order_paid", "order_queued"],
            },
        ),
    ]  # fmt: skip

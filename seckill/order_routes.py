"""HTTP endpoints of a shopper's orders and of the payment provider's callback."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from kit.context import context_of
from kit.errors import InvalidRequest
from kit.params import query_int, query_str
from kit.parking import parked
from kit.responses import JSONBytes, JSONResponse, dumps
from kit.routing import ApiRoute, raw_header, route
from kit.schema import read_body
from seckill import orderlist, orders, payments, signature
from seckill.errors import PaidByProvider
from seckill.orderwatch import STATUSES, OrderWatch
from seckill.shapes import DOWN, INT, STR, obj
from sso.client import authenticate

__all__ = ["MAX_WAIT_S", "routes"]

# An order's answers are the shopper's own and change: no shared cache may keep them, no browser reuse them.
_PRIVATE = (b"cache-control", b"private, no-store")
MAX_WAIT_S = 30


def _private(body: bytes) -> Response:
    response = JSONBytes(body)
    response.raw_headers.append(_PRIVATE)
    return response


async def show_order(request: Request) -> Response:
    principal = await authenticate(request)
    watch = context_of(request).get(OrderWatch)
    raw = request.path_params["order_id"]
    if not request.scope["query_string"]:
        return _private((await watch.get(raw, principal.user_id)).body)
    wait_s = query_int(request, "wait", default=0, low=0, high=MAX_WAIT_S)
    status = query_str(request, "status", max_length=32)
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"query parameter 'status' must be one of {', '.join(STATUSES)}")
    known = await watch.get(raw, principal.user_id)
    if status is None or wait_s == 0 or known.status != status:
        return _private(known.body)
    waiting = asyncio.ensure_future(watch.wait(raw, principal.user_id, status, wait_s))
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        with parked(request.scope):  # a wait by choice: no load signal for the degradation controller
            await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()  # the client left (or this request was cancelled): its waiter goes too
    if not waiting.done() or waiting.cancelled():
        return Response(status_code=499)  # nobody reads it
    return _private(waiting.result().body)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def list_orders(request: Request) -> Response:
    principal = await authenticate(request)
    limit = query_int(request, "limit", default=20, low=1, high=orderlist.MAX_LIMIT)
    after = query_str(request, "after", max_length=80)
    page = await orderlist.list_orders(context_of(request), principal.user_id, limit=limit, after=after)
    return _private(dumps(page))


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


_STATUS = {"enum": ["queued", "pending_payment", "paid", "cancelled"]}
_ORDER = {
    "type": "object",
    "required": ["order_id", "event_id", "status", "pay_by"],
    "properties": {
        "order_id": STR, "event_id": INT, "status": _STATUS, "pay_by": {"type": ["string", "null"]},
        "sku": STR, "price": INT, "reserved_at": STR, "paid_at": {"type": ["string", "null"]},
        "cancelled_at": {"type": ["string", "null"]},
        "cancel_reason": {"enum": ["timeout", "owner", None]},
    },
}  # fmt: skip
_PAYMENT = obj(payment_id=STR, order_id=STR, amount=INT, outcome={"enum": ["paid"]}, received_at=STR)
# The shopper's pay call's one answer once authenticated (an error body whose code is always `forbidden`).
_REFUSED = obj(error=obj(code={"enum": ["forbidden"]}, message=STR))


_PAGE = {
    "type": "object", "required": ["orders", "next"],
    "properties": {"orders": {"type": "array", "items": _ORDER}, "next": {"type": ["string", "null"]}},
}  # fmt: skip


def routes() -> list[ApiRoute]:
    tag = "seckill"
    return [
        route(
            "/seckill/orders", list_orders, tag=tag, auth=["bearer"],
            summary="Your orders written to the database, newest first, in keyset pages",
            query={"limit": f"1-{orderlist.MAX_LIMIT}, default 20", "after": "'next' of the previous page"},
            responses={200: _PAGE}, errors={**DOWN, 401: ["unauthenticated"], 422: ["invalid_request"]},
        ),
        route(
            "/seckill/orders/{order_id}", show_order, tag=tag, auth=["bearer"],
            summary="One of your orders (queued while still on its way to the database); with wait=N&status=S "
            "a long poll: answered once the status is not S, or after N seconds",
            query={
                "wait": f"0-{MAX_WAIT_S} seconds to wait while the status is still 'status' (default 0)",
                "status": "the status last seen: " + ", ".join(STATUSES),
            },
            params={"status": {"type": "string", "enum": list(STATUSES)}},
            responses={200: _ORDER},
            errors={**DOWN, 401: ["unauthenticated"], 404: ["order_not_found"], 422: ["invalid_request"]},
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
                **DOWN, 401: ["unauthenticated"], 404: ["order_not_found"], 409: ["order_paid", "order_queued"],
            },
        ),
    ]  # fmt: skip

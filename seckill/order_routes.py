"""HTTP endpoints of a shopper's orders and of the payment provider's callback."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kit.context import context_of
from kit.responses import JSONResponse
from kit.routing import ApiRoute, raw_header, route
from kit.schema import read_body
from seckill import orders, payments, signature
from seckill.errors import PaidByProvider
from seckill.shapes import DOWN, INT, STR, obj
from sso.client import authenticate

__all__ = ["routes"]


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


def routes() -> list[ApiRoute]:
    tag = "seckill"
    return [
        route(
            "/seckill/orders/{order_id}", show_order, tag=tag, auth=["bearer"],
            summary="One of your orders (queued while still on its way to the database)",
            responses={200: _ORDER}, errors={**DOWN, 401: ["unauthenticated"], 404: ["order_not_found"]},
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

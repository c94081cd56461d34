"""HTTP endpoints of seckill. Shoppers authenticate through ``sso.client``; admin calls need the admin role."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kit.context import context_of
from kit.errors import InvalidRequest, error_body
from kit.responses import JSONBytes, JSONResponse, dumps
from kit.routing import ApiRoute, raw_header, route
from kit.schema import read_body
from seckill import events, order_routes, reconcile, tickets
from seckill.errors import (
    Ended,
    NotAdmitted,
    NotStarted,
    SoldOut,
    TicketInvalid,
    TicketNotRequired,
    TicketRequired,
)
from seckill.eventcache import EventCache, iso_ms
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
    made = await events.create_event(context_of(request), body, _admin_key(request))
    return JSONResponse(made, status_code=201)


async def patch_event(request: Request) -> Response:
    await require_admin(request)
    event_id = events.event_id_of(request.path_params["event_id"])
    body = await read_body(request, events.EventPatch)
    return JSONResponse(
        await events.add_stock_or_move_end(context_of(request), event_id, body, _admin_key(request))
    )


def _admin_key(request: Request) -> str | None:
    key = raw_header(request.scope, b"idempotency-key")
    if key is not None and not (0 < len(key) <= _IDEMPOTENCY_MAX and key.isascii() and key.isprintable()):
        raise InvalidRequest(
            f"the Idempotency-Key header must be 1 to {_IDEMPOTENCY_MAX} printable ASCII characters"
        )
    return key


class _Shown(Response):
    """A JSON answer already rendered with its extra headers: the view's (or none, 304) with its ETag and
    Cache-Control, a ticket with no-store."""

    def __init__(self, body: bytes, status_code: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.body = body
        self.status_code = status_code
        self.background = None
        if status_code == 304:
            self.raw_headers = headers
        else:
            self.raw_headers = [(b"content-type", b"application/json"),
                                (b"content-length", b"%d" % len(body)), *headers]  # fmt: skip


_NO_STORE = [(b"cache-control", b"no-store")]


def _etag_matches(header: str, etag: bytes) -> bool:
    """RFC 9110 weak comparison of If-None-Match (a list of tags, or ``*``) with our weak tag."""
    opaque = etag[2:].decode()
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == opaque:
            return True
    return False


async def show_event(request: Request) -> Response:
    event_id = events.event_id_of(request.path_params["event_id"])
    cache = context_of(request).get(EventCache)
    entry = cache.peek(event_id) or await cache.load(event_id)
    now_ms = cache.clock.now_ms()
    shown = entry.rendered(entry.status(now_ms))
    asked = raw_header(request.scope, b"if-none-match")
    if asked is not None and _etag_matches(asked, shown.etag):
        return _Shown(b"", 304, shown.headers)
    return _Shown(shown.head + cache.server_time(now_ms), 200, shown.headers)


async def get_ticket(request: Request) -> Response:
    principal = await authenticate(request)
    event_id = events.event_id_of(request.path_params["event_id"])
    cache = context_of(request).get(EventCache)
    entry = cache.peek(event_id) or await cache.load(event_id)
    now_ms = cache.clock.now_ms()
    if now_ms < entry.start_ms:
        raise NotStarted("this sale event has not started yet: tickets are handed out from its start")
    if now_ms >= entry.end_ms:
        raise Ended()
    secret = await cache.secret_of(entry)
    if secret is None:
        raise TicketNotRequired()
    admit = tickets.admit_ms(secret, principal.user_id, entry.start_ms, entry.spread_ms)
    expires = max(now_ms, admit) + cache.ticket_ttl_ms
    body = {
        "ticket": tickets.make(secret, principal.user_id, event_id, expires, admit), "event_id": event_id,
        "expires_at": iso_ms(expires), "admit_at": iso_ms(admit), "server_time": iso_ms(now_ms),
    }  # fmt: skip
    return _Shown(dumps(body), 200, _NO_STORE)


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
    cache = ctx.get(EventCache)
    entry = cache.peek(event_id) or await cache.load(event_id)
    now_ms = cache.clock.now_ms()
    if now_ms < entry.start_ms:
        raise NotStarted()
    if entry.ticket_required:
        ticket = raw_header(request.scope, b"x-purchase-ticket")
        if ticket is None:
            raise TicketRequired()
        secret = entry.secret or await cache.secret_of(entry)
        if secret is None:
            raise TicketInvalid()
        admit = tickets.verify(secret, ticket, principal.user_id, event_id, now_ms)
        if now_ms < admit:
            raise NotAdmitted(iso_ms(admit), admit - now_ms)
    client = request.scope.get("client")
    made = await ctx.get(Reserver).reserve(
        event_id, principal.user_id, client[0] if client else "unknown", key
    )
    # {"order_id", "status": "queued", "event_id", "replayed"}, filled in rather than rendered: the order id is
    # a UUID and the event id an int, so nothing needs escaping.
    body = _QUEUED_BODY % (made.order_id.encode(), event_id, b"false" if made.new else b"true")
    return JSONBytes(body, status_code=202)


_BOOL = {"type": "boolean"}
_EVENT = obj(
    id=INT, sku=STR, title=STR, price=INT, stock=INT, starts_at=STR, ends_at=STR,
    per_user_limit=INT, payment_timeout_s=INT, buckets=INT, ticket_required=_BOOL, admission_spread_ms=INT,
)  # fmt: skip
_VIEW = obj(
    id=INT, sku=STR, title=STR, price=INT, starts_at=STR, ends_at=STR, server_time=STR,
    status={"enum": ["upcoming", "active", "sold_out", "ended"]}, stock_left=INT, per_user_limit=INT,
    ticket_required=_BOOL, admission_spread_ms=INT,
)  # fmt: skip
_TICKET = obj(ticket=STR, event_id=INT, expires_at=STR, admit_at=STR, server_time=STR)
_STATS = obj(
    stock_total=INT, stock_left=INT, reserved=INT, queued=INT, orders_pending_payment=INT,
    orders_paid=INT, orders_cancelled=INT, dead_letters=INT, cancelled_not_returned=INT, drift=INT,
)  # fmt: skip
_QUEUED = obj(order_id=STR, status={"enum": ["queued"]}, event_id=INT, replayed={"type": "boolean"})
_AUTH_ERRORS = {401: ["unauthenticated"], 403: ["forbidden"]}
_ADMIN_KEY_DOC = (
    "names this change: the same request again with it (after a lost answer or a 503) answers the event as it"
    " is now and makes no second change; another request with it is refused (409 idempotency_key_reused)"
)


def routes() -> list[ApiRoute]:
    tag = "seckill"
    # The hot paths first, the event view (the most frequent request at a sale) then the purchase: Starlette
    # tries routes in order (each miss is a regex match).
    return [
        route(
            "/seckill/events/{event_id}", show_event, tag=tag,
            summary="A sale event as shoppers see it, with the Redis clock (process memory; ETag, Cache-Control)",
            headers={"If-None-Match": "the ETag of an earlier answer: 304 while nothing but server_time changed"},
            responses={200: _VIEW, 304: None}, errors={**DOWN, 404: ["event_not_found"]},
        ),
        route(
            "/seckill/events/{event_id}/orders", purchase, methods=["POST"], tag=tag, auth=["bearer"],
            summary="Buy: reserve one item and queue its order",
            headers={
                "Idempotency-Key": "a retry with the same key returns the same order",
                "X-Purchase-Ticket": "the ticket of GET /seckill/events/{event_id}/ticket (ticketed events)",
            },
            responses={202: _QUEUED},
            errors={
                401: ["unauthenticated"], 403: ["ticket_required", "ticket_invalid"], 404: ["event_not_found"],
                409: ["sold_out", "limit_reached", "not_started", "not_admitted", "ended"],
                422: ["invalid_request"], 429: ["rate_limited"], 503: ["unavailable"],
            },
        ),
        route(
            "/seckill/events/{event_id}/ticket", get_ticket, tag=tag, auth=["bearer"],
            summary="A purchase ticket for you and this event, once the sale has started (Cache-Control: no-store)",
            responses={200: _TICKET},
            errors={
                **DOWN, 401: ["unauthenticated"], 404: ["event_not_found"],
                409: ["not_started", "ended", "ticket_not_required"],
            },
        ),
        route(
            "/seckill/events", create_event, methods=["POST"], tag=tag, auth=["admin"],
            summary="Create a sale event and warm its stock into Redis",
            headers={"Idempotency-Key": _ADMIN_KEY_DOC},
            body=events.NewEvent, responses={201: _EVENT},
            errors={**DOWN, **_AUTH_ERRORS, 409: ["idempotency_key_reused"], 422: ["invalid_request"]},
        ),
        route(
            "/seckill/events/{event_id}", patch_event, methods=["PATCH"], tag=tag, auth=["admin"],
            summary="Add stock during the sale or move the end time",
            headers={"Idempotency-Key": _ADMIN_KEY_DOC},
            body=events.EventPatch, responses={200: _EVENT},
            errors={
                **DOWN, **_AUTH_ERRORS, 404: ["event_not_found"], 409: ["idempotency_key_reused"],
                422: ["invalid_request"],
            },
        ),
        route(
            "/seckill/events/{event_id}/stats", event_stats, tag=tag, auth=["admin"],
            summary="Stock and order counts of a sale event, matched at one moment",
            responses={200: _STATS}, errors={**DOWN, **_AUTH_ERRORS, 404: ["event_not_found"]},
        ),
        *order_routes.routes(),
    ]  # fmt: skip

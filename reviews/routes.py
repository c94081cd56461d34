"""`POST /reviews/{sku}` (buyers only) and `GET /reviews/{sku}?cursor=` (newest first, average and count)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

import seckill.client
import sso.client
from degrade.client import degraded, fallback, shed_name
from kit.context import context_of
from kit.errors import Forbidden, InvalidRequest
from kit.params import query_str
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route
from kit.schema import read_body, rule
from reviews import store

__all__ = ["NewReview", "routes"]

# ASCII digits (``\d`` and ``str.isdigit`` take "²" too), inside bigint.
_CURSOR = re.compile(r"[0-9]{1,18}", re.ASCII)


@dataclass
class NewReview:
    rating: int = field(metadata=rule(min=1, max=5))
    text: str = field(metadata=rule(min_length=1, max_length=4000))


@dataclass
class Review:
    id: str
    author: str
    rating: int
    text: str
    created_at: str


_PAGE = {
    "type": "object",
    "properties": {
        "sku": {"type": "string"},
        "count": {"type": "integer"},
        "average": {"type": ["number", "null"]},
        "reviews": {"type": "array"},
        "next_cursor": {"type": ["string", "null"]},
        "stale": {"type": "boolean", "description": "true: the cached summary, served while reviews is shed"},
    },
}


def _sku(request: Request) -> str:
    sku = str(request.path_params["sku"])
    # The same rule as a flash sale's sku.
    if not 1 <= len(sku) <= 64 or not sku.isprintable():
        raise InvalidRequest("path parameter 'sku' must be 1 to 64 printable characters")
    return sku


@fallback
async def list_reviews(request: Request) -> Response:
    ctx = context_of(request)
    sku = _sku(request)
    cursor = query_str(request, "cursor", max_length=18)
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise InvalidRequest("query parameter 'cursor' must be the next_cursor of a previous page")
    shed = shed_name(request)
    if shed:
        # Only the first page is cached: later pages wait until reviews is back.
        cached = None if cursor else await store.cached(ctx, sku)
        if cached is None:
            raise degraded(ctx, shed)
        return JSONResponse(cached)
    return JSONResponse(await store.page(ctx, sku, before=int(cursor) if cursor else None))


async def post_review(request: Request) -> Response:
    principal = await sso.client.authenticate(request)
    ctx = context_of(request)
    sku = _sku(request)
    body = await read_body(request, NewReview)
    if not await seckill.client.has_paid_order(ctx, principal.user_id, sku):
        raise Forbidden(f"only a buyer with a paid order for {sku} may review it", code="not_a_buyer")
    review = await store.add(
        ctx, sku, user_id=principal.user_id, username=principal.username, rating=body.rating, text=body.text
    )
    return JSONResponse(review, status_code=201)


def routes() -> list[ApiRoute]:
    return [
        route(
            "/reviews/{sku}", post_review, methods=["POST"], summary="review a product you bought and paid",
            body=NewReview, auth=["bearer"], responses={201: Review},
            errors={401: ["unauthenticated"], 403: ["not_a_buyer"], 409: ["already_reviewed"],
                    422: ["invalid_request"], 503: ["degraded"]},
        ),
        route(
            "/reviews/{sku}", list_reviews, summary="reviews newest first, with the average rating and count",
            query={"cursor": "next_cursor of the previous page"}, responses={200: _PAGE},
            errors={422: ["invalid_request"], 503: ["degraded"]},
        ),
    ]  # fmt: skip

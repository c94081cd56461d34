"""``GET /sso/revocations``: the revocation feed (``sso.feed``) for validators that cannot reach Redis."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive

from kit.context import context_of
from kit.params import query_int, query_str
from kit.parking import parked
from kit.responses import JSONResponse
from kit.routing import route
from sso.client import require_admin
from sso.feed import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT, MAX_WAIT_S, Cursor, Feed, Page
from sso.service import Sso

__all__ = ["routes"]

_FEED_OUT = {
    "type": "object",
    "required": ["revoked", "jti", "cursor"],
    "properties": {"revoked": {"type": "array"}, "jti": {"type": "array"}, "accounts": {"type": "array"},
                   "cursor": {"type": "string"}, "more": {"type": "boolean"}},
}  # fmt: skip


async def _authorize(request: Request) -> None:
    """A registered client (HTTP Basic) or an admin (admin token, admin-role access token)."""
    authorization = request.headers.get("authorization", "")
    if authorization[:6].lower() == "basic ":
        await context_of(request).get(Sso).clients.authenticate(authorization)
    else:
        await require_admin(request)


async def revocations(request: Request) -> Response:
    await _authorize(request)
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    wait_s = query_int(request, "wait", default=0, low=0, high=MAX_WAIT_S)
    since = query_str(request, "since", max_length=MAX_CURSOR_CHARS)
    feed = context_of(request).get(Feed)
    now_ms = int(time.time() * 1000)
    # Without a cursor the answer is a catch-up (everything the journals keep): it never waits.
    cursor = Cursor.start(now_ms) if since is None else Cursor.decode(since, now_ms)
    news = feed.news()
    page = await feed.read(cursor, limit)
    if since is None or wait_s == 0 or not page.empty or feed.stopping:
        return _answer(page)
    deadline = time.monotonic() + wait_s
    feed.parked += 1
    try:
        with parked(request.scope):  # a wait by choice: no load signal for the degradation controller
            while page.empty and not feed.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await _woken(news, request.receive, remaining):
                    break
                news = feed.news()
                page = await feed.read(cursor, limit)
    finally:
        feed.parked -= 1
    return _answer(page)


async def _woken(news: asyncio.Event, receive: Receive, timeout_s: float) -> bool:
    """Whether ``news`` is set within ``timeout_s``; False too when the client went away."""
    waiting = asyncio.ensure_future(news.wait())
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait((waiting, gone), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        waiting.cancel()
    return waiting in done


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _answer(page: Page) -> Response:
    return JSONResponse(page.body(), headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [
        route("/sso/revocations", revocations,
              summary="the revoked sessions and tokens since a cursor (long poll with wait); for validators without"
                      " Redis",
              responses={200: _FEED_OUT}, auth=["basic", "bearer"],
              query={"since": "the 'cursor' of the previous answer (none: everything the journals keep)",
                     "limit": f"1-{MAX_LIMIT}, default {DEFAULT_LIMIT}",
                     "wait": f"0-{MAX_WAIT_S} s: with 'since', answer as soon as something is revoked"},
              params={"limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                      "wait": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S}},
              errors={401: ["invalid_client", "unauthenticated"], 403: ["forbidden"], 410: ["cursor_expired"],
                      422: ["invalid_request"], 503: ["unavailable"]}),
    ]  # fmt: skip

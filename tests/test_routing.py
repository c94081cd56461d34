"""kit.routing.SegmentRouter answers every request with the route Starlette's own loop would pick."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, Router

from kit.routing import SegmentRouter


def _named(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(name)

    return endpoint


def _routes() -> list[BaseRoute]:
    # A parameter route before a static one of the same segment takes its GETs; the static one keeps its POSTs.
    return [
        Route("/a/first", _named("first"), methods=["GET"]),
        Route("/a/{x}", _named("param"), methods=["GET"]),
        Route("/a/b", _named("static-b"), methods=["GET", "POST"]),
        Route("/a/c", _named("static-c"), methods=["DELETE"]),
        Route("/c", _named("c-get"), methods=["GET"]),
        Route("/c", _named("c-put"), methods=["PUT"]),
        Route("/{anything}/d", _named("any-d"), methods=["GET"]),
        Route("/e/d", _named("static-e-d"), methods=["GET"]),
    ]


async def _answers(router: Router) -> list[tuple[int, str]]:
    transport = httpx.ASGITransport(app=router)
    seen = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
            for path in ("/a/first", "/a/b", "/a/c", "/a/zz", "/c", "/e/d", "/q/d", "/nowhere"):
                r = await client.request(method, path)
                seen.append((r.status_code, f"{method} {path} {r.text}"))
    return seen


async def test_the_route_picked_for_every_path_and_method_is_starlettes() -> None:
    ours, theirs = await _answers(SegmentRouter(_routes())), await _answers(Router(_routes()))
    assert [status for status, _ in ours] == [status for status, _ in theirs]
    # Bodies differ only for errors (peak's JSON error body); every 200 names the same endpoint.
    assert [t for s, t in ours if s == 200] == [t for s, t in theirs if s == 200]
    assert "GET /a/b param" in {t for _, t in ours} and "POST /a/b static-b" in {t for _, t in ours}

"""Behind nginx every peer is the balancer: with PEAK_TRUSTED_PROXIES the app sees the client it forwards for."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from kit.component import Component
from kit.responses import JSONResponse
from kit.routing import route
from kit.settings import Settings
from peak.app import create_app
from tests.support import lifespan_client


async def _who(request: Request) -> Response:
    return JSONResponse({"client": request.client.host if request.client else None})


_PROBE = Component("probe", routes=[route("/probe/client", _who, summary="the client address the app sees")])
_FORWARDED = {"X-Forwarded-For": "203.0.113.7"}


async def test_a_trusted_balancer_names_the_client(make_settings: Callable[..., Settings]) -> None:
    # The in-process client connects from 10.1.2.3, standing in for nginx here.
    settings = make_settings(PEAK_TRUSTED_PROXIES="127.0.0.1, 10.1.2.0/24")
    async with lifespan_client(create_app(settings, parts=[_PROBE])) as client:
        assert (await client.get("/probe/client", headers=_FORWARDED)).json() == {"client": "203.0.113.7"}
        assert (await client.get("/probe/client")).json() == {"client": "10.1.2.3"}


async def test_without_trusted_balancers_the_header_is_ignored(
    make_settings: Callable[..., Settings],
) -> None:
    for trusted in ("", "127.0.0.1"):
        settings = make_settings(PEAK_TRUSTED_PROXIES=trusted)
        async with lifespan_client(create_app(settings, parts=[_PROBE])) as client:
            # A client cannot pick its own address to dodge per-IP limits.
            assert (await client.get("/probe/client", headers=_FORWARDED)).json() == {"client": "10.1.2.3"}

"""What subsystems use from degrade: is a subsystem shed, mark an endpoint as having a fallback, breakers.

@fallback
async def list_reviews(request):
    if shed_name(request):          # shed: serve the cached summary, marked stale
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request

from degrade.board import Board
from degrade.breaker import Breaker, BreakerConfig, BreakerOpen, Breakers
from degrade.errors import Degraded
from degrade.middleware import FALLBACK_ATTR, SHED_KEY
from degrade.settings import DegradeSettings
from kit.context import Context

__all__ = [
    "Breaker",
    "BreakerConfig",
    "BreakerOpen",
    "Breakers",
    "Degraded",
    "breaker",
    "breakers",
    "degraded",
    "fallback",
    "is_shed",
    "shed_name",
]

F = TypeVar("F", bound=Callable[..., Any])


def fallback(endpoint: F) -> F:
    """Mark an endpoint as serving a fallback while its subsystem is shed (otherwise: 503 ``degraded``)."""
    setattr(endpoint, FALLBACK_ATTR, True)
    return endpoint


def shed_name(request: Request) -> str | None:
    """The subsystem name when this request is to be served by a fallback, else None."""
    name = request.scope.get(SHED_KEY)
    return str(name) if name else None


def degraded(ctx: Context, name: str) -> Degraded:
    """The 503 of shed subsystem ``name`` when its fallback cannot serve this request, with the configured
    Retry-After."""
    return Degraded(name, retry_after_s=ctx.settings.of(DegradeSettings).retry_after_s)


def is_shed(ctx: Context, name: str) -> bool:
    """Whether ``name`` is wholly shed in this process now (workers use it to hold back work; a partial shed
    is not: most of its users are still served)."""
    board = ctx.find(Board)
    return board is not None and board.shed.get(name, 0) >= 100


def breakers(ctx: Context) -> Breakers:
    """This process's breakers; made on first use, so a service started before degrade's can use them."""
    found = ctx.find(Breakers)
    if found is None:
        found = Breakers(BreakerConfig.from_settings(ctx.settings.of(DegradeSettings)))
        ctx.put(found)
    return found


def breaker(ctx: Context, name: str, config: BreakerConfig | None = None) -> Breaker:
    """This process's breaker called ``name`` (created with the PEAK_DEGRADE_BREAKER_* defaults); it shows
    in ``GET /degrade/status``. A different ``config`` reconfigures it in place, keeping its state."""
    return breakers(ctx).get(name, config)

"""The degradation controller as the composition sees it (an admin ``authorize`` is handed in)."""

from __future__ import annotations

from starlette.middleware import Middleware

from degrade import plan_routes, scripts, series
from degrade.cli import add_commands
from degrade.middleware import DegradeMiddleware
from degrade.rates import export_shed_answers
from degrade.routes import Authorizer, admin_token_check, routes
from degrade.service import degrade_service
from degrade.settings import DegradeSettings
from kit.component import Component

__all__ = ["component"]


def component(authorize: Authorizer | None = None) -> Component:
    return Component(
        name="degrade",
        routes=[
            *routes(authorize or admin_token_check),
            *series.routes(authorize or admin_token_check),
            *plan_routes.routes(authorize or admin_token_check),
        ],
        services=[degrade_service],
        cli=add_commands,
        middleware=[Middleware(DegradeMiddleware)],
        settings=DegradeSettings,
        scripts=scripts.ALL,
        # Ops tooling: never switched, not on the board (ops would lock themselves out).
        tier=None,
        gauges=[export_shed_answers],
    )

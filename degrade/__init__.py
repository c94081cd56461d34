"""degrade: ops switches every process obeys within a second, audited, and automatic shedding of non-core tiers.

Generic: subsystems take part through their ``Component`` (name, tier, routes) and ``degrade.client``; this
package never imports one. The composition may pass an admin ``authorize`` callable (sso.client.require_admin).
"""

from __future__ import annotations

from starlette.middleware import Middleware

from degrade.cli import add_commands
from degrade.middleware import DegradeMiddleware
from degrade.routes import Authorizer, admin_token_check, routes
from degrade.service import degrade_service
from kit.component import Component

__all__ = ["component"]


def component(authorize: Authorizer | None = None) -> Component:
    return Component(
        name="degrade",
        routes=routes(authorize or admin_token_check),
        services=[degrade_service],
        cli=add_commands,
        middleware=[Middleware(DegradeMiddleware)],
    )

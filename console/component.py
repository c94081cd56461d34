"""The ops console as the composition sees it: an admin ``authorize`` is handed in (it accepts the session
cookie, which a browser's EventSource sends), and it shows what the other components' ``feeds`` give."""

from __future__ import annotations

from console.hub import console_service
from console.routes import routes
from console.settings import ConsoleSettings
from degrade.routes import Authorizer, admin_token_check
from kit.component import Component

__all__ = ["component"]


def component(authorize: Authorizer | None = None) -> Component:
    return Component(
        name="console",
        # Ops tooling: never switched, not on the board (ops would lock themselves out of it).
        tier=None,
        routes=routes(authorize or admin_token_check),
        services=[console_service],
        settings=ConsoleSettings,
    )

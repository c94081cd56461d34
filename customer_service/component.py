"""Customer service as the composition sees it."""

from __future__ import annotations

from customer_service import scripts
from customer_service.cli import add_commands
from customer_service.inbox import move_queued_messages
from customer_service.routes import routes
from customer_service.settings import CustomerServiceSettings
from kit.component import Component

__all__ = ["component"]


def component() -> Component:
    return Component(
        name="customer_service",
        tier="sheddable_plus",
        routes=routes(),
        migrations="customer_service",
        loops=[move_queued_messages],
        settings=CustomerServiceSettings,
        scripts=scripts.ALL,
        cli=add_commands,
    )

"""customer_service (non-core, tier sheddable_plus): shoppers write to support, agents reply.

While shed, new messages wait in a Redis stream (202 "an agent will reply later") and a worker loop moves
them into PostgreSQL once the subsystem is back.
"""

from __future__ import annotations

from kit.component import Component

__all__ = ["component"]


def component() -> Component:
    from customer_service.inbox import move_queued_messages
    from customer_service.routes import routes

    return Component(
        name="customer_service",
        tier="sheddable_plus",
        routes=routes(),
        migrations="customer_service",
        loops=[move_queued_messages],
    )

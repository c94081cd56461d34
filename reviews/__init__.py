"""reviews (non-core, tier sheddable): buyers rate products; while shed, readers get the cached summary."""

from __future__ import annotations

from kit.component import Component

__all__ = ["component"]


def component() -> Component:
    from reviews.routes import routes

    return Component(name="reviews", tier="sheddable", routes=routes(), migrations="reviews")

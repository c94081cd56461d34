"""Reviews as the composition sees it."""

from __future__ import annotations

from kit.component import Component
from reviews import scripts
from reviews.routes import routes
from reviews.settings import ReviewsSettings

__all__ = ["component"]


def component() -> Component:
    return Component(
        name="reviews",
        tier="sheddable",
        routes=routes(),
        migrations="reviews",
        settings=ReviewsSettings,
        scripts=scripts.ALL,
    )

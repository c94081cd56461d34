"""The settings of reviews (``PEAK_REVIEWS_*``): ``ctx.settings.of(ReviewsSettings)``."""

from __future__ import annotations

from dataclasses import dataclass

from kit.settings import setting

__all__ = ["ReviewsSettings"]


@dataclass(frozen=True, slots=True)
class ReviewsSettings:
    page_size: int = setting("PEAK_REVIEWS_PAGE_SIZE", 20, "reviews per page", low=1, high=200)
    cache_ttl_s: int = setting(
        "PEAK_REVIEWS_CACHE_TTL_S",
        604800,
        "how long the cached summary served when shed lives",
        low=1,
        high=31536000,
    )

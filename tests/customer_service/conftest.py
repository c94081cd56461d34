from __future__ import annotations

from tests.reviews.conftest import shop, shop_settings

__all__ = ["shop", "shop_settings"]

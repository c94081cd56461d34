from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from kit.settings import Settings
from peak.app import create_app
from tests.seckill.conftest import (
    ADMIN,
    SALE_ENV,
    drain,
    http_event,
    provider_pays,
    seckill_context,
    shoppers,
)
from tests.support import lifespan_client

__all__ = ["ADMIN", "NO_CS_RATE", "buy_and_pay", "shoppers"]

NO_CS_RATE = {"PEAK_CS_USER_MESSAGES": "1000000"}
# These suites shed reviews and customer service by hand; on a loaded CI machine the automatic controller shed
# them too, and 40 reviews were answered 503 `degraded` (its own tests: tests/degrade/test_controller.py).
NO_CONTROLLER = {"PEAK_DEGRADE_CONTROLLER": "0"}


@pytest.fixture
def shop_settings(make_settings: object) -> Settings:
    # Support's per-shopper rate out of the way, as SALE_ENV does for the sale's (tested on their own).
    return make_settings(**SALE_ENV, **NO_CS_RATE, **NO_CONTROLLER, PEAK_REVIEWS_PAGE_SIZE="3")  # type: ignore[operator, no-any-return]


@pytest.fixture
async def shop(shop_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(shop_settings)) as c:
        yield c


async def buy_and_pay(
    shop: httpx.AsyncClient, settings: Settings, buyers: list[dict[str, str]], sku: str, *, pay: bool = True
) -> None:
    """Each buyer orders ``sku`` in a flash sale through the API, the orders are written, and paid."""
    event_id = await http_event(shop, sku=sku, stock=len(buyers))
    orders = []
    for headers in buyers:
        made = await shop.post(f"/seckill/events/{event_id}/orders", headers=headers)
        assert made.status_code == 202, made.text
        orders.append(made.json()["order_id"])
    async with seckill_context(settings) as ctx:
        await drain(ctx, event_id)
    if pay:
        for order_id in orders:
            # Paid when the payment provider says so (the shopper's own call cannot mark it paid).
            paid = await provider_pays(shop, order_id)
            assert paid.status_code == 200, paid.text

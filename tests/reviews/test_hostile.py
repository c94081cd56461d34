"""What a hostile client sends reviews: made-up products by the thousand, numbers and strings off the columns."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kit.context import open_context
from kit.settings import Settings
from peak.app import components
from tests.reviews.conftest import buy_and_pay, shoppers


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_reading_made_up_products_leaves_nothing_in_redis(
    shop: httpx.AsyncClient, shop_settings: Settings
) -> None:
    answers = await asyncio.gather(*(shop.get(f"/reviews/MADE-UP-{i}") for i in range(300)))
    assert {a.status_code for a in answers} == {200}
    async with open_context(shop_settings, components(), "cli", start_services=False) as ctx:
        cached = [k async for k in ctx.redis.scan_iter(match="reviews:*")]
    # Before: one cached empty summary per made-up sku, each kept for a week.
    assert cached == []


@pytest.mark.parametrize(
    "cursor", ["²", "٣", "\uff15", "1" * 19, "-1", "1.0", "0x1", " 1", "1 ", "1e3", "9" * 5000]
)
async def test_a_bad_cursor_is_422_naming_it(shop: httpx.AsyncClient, cursor: str) -> None:
    answer = await shop.get("/reviews/PHONE", params={"cursor": cursor})
    assert _code(answer) == (422, "invalid_request") and "cursor" in answer.json()["error"]["message"]


async def test_the_largest_cursor_and_longest_sku_are_answered(shop: httpx.AsyncClient) -> None:
    assert (await shop.get("/reviews/PHONE", params={"cursor": "9" * 18})).status_code == 200
    assert (await shop.get("/reviews/" + "\u624b" * 64)).status_code == 200
    too_long = await shop.get("/reviews/" + "\u624b" * 65)
    assert _code(too_long) == (422, "invalid_request") and "sku" in too_long.json()["error"]["message"]


async def test_numbers_and_strings_off_the_columns_are_422(
    shop: httpx.AsyncClient, shop_settings: Settings
) -> None:
    (alice,) = await shoppers(shop, 1, prefix="cols")
    await buy_and_pay(shop, shop_settings, [alice], "PHONE-9")
    for rating in (2**15, -(2**15) - 1, 2**63 - 1, -(2**63), True, 4.5, 5.0, "5", None, [5], {"n": 5}):
        answer = await shop.post("/reviews/PHONE-9", json={"rating": rating, "text": "x"}, headers=alice)
        assert answer.status_code in (400, 422), (rating, answer.text)
        assert answer.status_code == 400 or "rating" in answer.json()["error"]["message"], rating
    beyond_64_bits = b'{"rating": 99999999999999999999999, "text": "x"}'
    answer = await shop.post(
        "/reviews/PHONE-9", content=beyond_64_bits, headers={**alice, "content-type": "application/json"}
    )
    assert answer.status_code in (400, 422), answer.text
    for text in ("", "x" * 4001, 5, None):
        answer = await shop.post("/reviews/PHONE-9", json={"rating": 5, "text": text}, headers=alice)
        assert _code(answer) == (422, "invalid_request") and "text" in answer.json()["error"]["message"]
    # Four bytes a character, at the longest: PostgreSQL takes it.
    made = await shop.post("/reviews/PHONE-9", json={"rating": 5, "text": "\U0001f600" * 4000}, headers=alice)
    assert made.status_code == 201, made.text

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from kit.context import open_context
from kit.settings import Settings
from peak.app import components
from reviews import scripts, store
from tests.reviews.conftest import ADMIN, buy_and_pay, shoppers


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_only_paid_buyers_review_once(shop: httpx.AsyncClient, shop_settings: Settings) -> None:
    alice, bob, carol = await shoppers(shop, 3, prefix="rev")
    await buy_and_pay(shop, shop_settings, [alice], "PHONE-1")
    await buy_and_pay(shop, shop_settings, [bob], "PHONE-1", pay=False)
    review = {"rating": 5, "text": "fast and shiny"}
    assert _code(await shop.post("/reviews/PHONE-1", json=review)) == (401, "unauthenticated")
    assert _code(await shop.post("/reviews/PHONE-1", json=review, headers=carol)) == (403, "not_a_buyer")
    # Ordered but not paid: not yet a buyer.
    assert _code(await shop.post("/reviews/PHONE-1", json=review, headers=bob)) == (403, "not_a_buyer")
    assert _code(await shop.post("/reviews/OTHER", json=review, headers=alice)) == (403, "not_a_buyer")
    made = await shop.post("/reviews/PHONE-1", json=review, headers=alice)
    assert made.status_code == 201, made.text
    assert made.json()["rating"] == 5 and made.json()["author"] == "rev0"
    assert _code(await shop.post("/reviews/PHONE-1", json=review, headers=alice)) == (409, "already_reviewed")


async def test_bad_input_is_a_clear_422(shop: httpx.AsyncClient, shop_settings: Settings) -> None:
    (alice,) = await shoppers(shop, 1, prefix="bad")
    await buy_and_pay(shop, shop_settings, [alice], "PHONE-2")
    for body, field in (
        ({"rating": 6, "text": "x"}, "rating"),
        ({"rating": 0, "text": "x"}, "rating"),
        ({"rating": "5", "text": "x"}, "rating"),
        ({"rating": 4}, "text"),
        ({"rating": 4, "text": ""}, "text"),
        ({"rating": 4, "text": "x" * 4001}, "text"),
    ):
        answer = await shop.post("/reviews/PHONE-2", json=body, headers=alice)
        assert _code(answer) == (422, "invalid_request"), body
        assert field in answer.json()["error"]["message"]
    assert _code(await shop.get("/reviews/PHONE-2?cursor=abc")) == (422, "invalid_request")
    assert _code(await shop.get("/reviews/" + "x" * 65)) == (422, "invalid_request")
    # A control character in a path parameter: the kit answers no such resource (issue 15).
    assert _code(await shop.get("/reviews/bad%09sku")) == (404, "not_found")
    assert (await shop.get("/reviews/blue%20phone")).json()["sku"] == "blue phone"


async def test_pages_newest_first_with_average(shop: httpx.AsyncClient, shop_settings: Settings) -> None:
    buyers = await shoppers(shop, 7, prefix="page")
    await buy_and_pay(shop, shop_settings, buyers, "PHONE-3")
    ratings = [5, 4, 3, 5, 1, 2, 5]
    for headers, rating in zip(buyers, ratings, strict=True):
        made = await shop.post(
            "/reviews/PHONE-3", json={"rating": rating, "text": f"{rating} stars"}, headers=headers
        )
        assert made.status_code == 201
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = (await shop.get(f"/reviews/PHONE-3?cursor={cursor}")).json()
        pages += 1
        assert page["count"] == 7 and page["average"] == round(sum(ratings) / 7, 2) and page["stale"] is False
        seen += [r["text"] for r in page["reviews"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == [f"{r} stars" for r in reversed(ratings)]
    empty = (await shop.get("/reviews/NOTHING")).json()
    assert (empty["count"], empty["average"], empty["reviews"]) == (0, None, [])


async def test_concurrent_reviews_keep_the_summary_exact(
    shop: httpx.AsyncClient, shop_settings: Settings
) -> None:
    buyers = await shoppers(shop, 40, prefix="many")
    await buy_and_pay(shop, shop_settings, buyers, "PHONE-4")
    answers = await asyncio.gather(
        *(
            shop.post("/reviews/PHONE-4", json={"rating": 1 + i % 5, "text": "ok"}, headers=h)
            for i, h in enumerate(buyers)
        )
    )
    assert [a.status_code for a in answers] == [201] * 40
    page = (await shop.get("/reviews/PHONE-4")).json()
    assert page["count"] == 40 and page["average"] == 3.0
    # The summary cached for when reviews is shed holds all 40 too, whichever review wrote it last.
    cached = await _cached_summary(shop_settings, "PHONE-4")
    assert cached is not None and (cached["count"], cached["average"]) == (40, 3.0), cached


async def test_an_older_summary_written_late_does_not_replace_a_newer_one(shop_settings: Settings) -> None:
    """Two reviews at once each render the page after their COMMIT; the first to render may write last."""
    async with open_context(shop_settings, components(), "api") as ctx:
        assert await scripts.cache_summary(ctx.redis, "PHONE-9", b'{"count": 40}', 40, ttl_s=60)
        assert not await scripts.cache_summary(ctx.redis, "PHONE-9", b'{"count": 39}', 39, ttl_s=60)
        assert (await store.cached(ctx, "PHONE-9") or {})["count"] == 40
        # A newer one, or the same one again, is written.
        assert await scripts.cache_summary(ctx.redis, "PHONE-9", b'{"count": 41}', 41, ttl_s=60)
        assert await scripts.cache_summary(ctx.redis, "PHONE-9", b'{"count": 41}', 41, ttl_s=60)
        assert (await store.cached(ctx, "PHONE-9") or {})["count"] == 41


async def _cached_summary(settings: Settings, sku: str) -> dict[str, Any] | None:
    async with open_context(settings, components(), "api") as ctx:
        return await store.cached(ctx, sku)


async def test_shed_get_serves_stale_summary_and_post_is_503(
    shop: httpx.AsyncClient, shop_settings: Settings
) -> None:
    alice, bob = await shoppers(shop, 2, prefix="shed")
    await buy_and_pay(shop, shop_settings, [alice, bob], "PHONE-5")
    await shop.post("/reviews/PHONE-5", json={"rating": 4, "text": "good"}, headers=alice)
    fresh = (await shop.get("/reviews/PHONE-5")).json()
    shed = await shop.put("/degrade/switches/reviews", json={"mode": "shed", "reason": "peak"}, headers=ADMIN)
    assert shed.status_code == 200, shed.text
    stale = await shop.get("/reviews/PHONE-5")
    assert stale.status_code == 200 and stale.headers["x-degraded"] == "reviews"
    body = stale.json()
    assert body["stale"] is True and body["cached_at"]
    assert (body["count"], body["average"], body["reviews"]) == (1, 4.0, fresh["reviews"])
    refused = await shop.post("/reviews/PHONE-5", json={"rating": 2, "text": "meh"}, headers=bob)
    assert _code(refused) == (503, "degraded")
    assert refused.headers["retry-after"] == "5" and refused.headers["x-degraded"] == "reviews"
    later_page = await shop.get("/reviews/PHONE-5?cursor=5")
    assert _code(later_page) == (503, "degraded") and later_page.headers["x-degraded"] == "reviews"
    never_read = await shop.get("/reviews/NEVER-READ")
    assert _code(never_read) == (503, "degraded") and never_read.headers["x-degraded"] == "reviews"
    await shop.put("/degrade/switches/reviews", json={"mode": "auto", "reason": "peak over"}, headers=ADMIN)
    assert (
        await shop.post("/reviews/PHONE-5", json={"rating": 2, "text": "meh"}, headers=bob)
    ).status_code == 201
    back = await shop.get("/reviews/PHONE-5")
    assert "x-degraded" not in back.headers and back.json()["count"] == 2

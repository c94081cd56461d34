"""The public HTTP contract of seckill: events, purchase answers, orders, admin rights."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from tests.seckill.conftest import ADMIN, http_event, in_s, provider_pays, shoppers


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


async def test_admin_creates_patches_and_reads_stats(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1)
    body = {
        "sku": "SKU-9",
        "title": "TV",
        "price": 1999,
        "stock": 1,
        "starts_at": in_s(-5),
        "ends_at": in_s(60),
        "ticket_required": False,
    }
    assert _code(await shop.post("/seckill/events", json=body)) == (401, "unauthenticated")
    assert _code(await shop.post("/seckill/events", json=body, headers=alice)) == (403, "forbidden")
    bad = await shop.post("/seckill/events", json={**body, "ends_at": in_s(-10)}, headers=ADMIN)
    assert _code(bad) == (422, "invalid_request")
    naive = await shop.post(
        "/seckill/events", json={**body, "starts_at": "2030-01-01T00:00:00"}, headers=ADMIN
    )
    assert _code(naive) == (422, "invalid_request")
    made = await shop.post("/seckill/events", json=body, headers=ADMIN)
    assert made.status_code == 201
    event = made.json()
    assert (event["per_user_limit"], event["payment_timeout_s"], event["stock"]) == (1, 900, 1)
    event_id = event["id"]

    view = (await shop.get(f"/seckill/events/{event_id}")).json()
    assert set(view) >= {
        "id",
        "sku",
        "title",
        "price",
        "starts_at",
        "ends_at",
        "server_time",
        "status",
        "stock_left",
    }
    assert (view["status"], view["stock_left"], view["price"]) == ("active", 1, 1999)
    assert (await shop.post(f"/seckill/events/{event_id}/orders", headers=alice)).status_code == 202
    assert (await shop.get(f"/seckill/events/{event_id}")).json()["status"] == "sold_out"

    assert _code(await shop.get(f"/seckill/events/{event_id}/stats", headers=alice)) == (403, "forbidden")
    patched = await shop.patch(f"/seckill/events/{event_id}", json={"add_stock": 4}, headers=ADMIN)
    assert patched.status_code == 200 and patched.json()["stock"] == 5
    assert _code(await shop.patch(f"/seckill/events/{event_id}", json={}, headers=ADMIN)) == (
        422,
        "invalid_request",
    )
    stats = (await shop.get(f"/seckill/events/{event_id}/stats", headers=ADMIN)).json()
    assert {k: stats[k] for k in ("stock_total", "stock_left", "reserved", "queued", "dead_letters")} == {
        "stock_total": 5, "stock_left": 4, "reserved": 1, "queued": 1, "dead_letters": 0,
    }  # fmt: skip
    assert set(stats) >= {"orders_pending_payment", "orders_paid", "orders_cancelled"}
    moved = await shop.patch(f"/seckill/events/{event_id}", json={"ends_at": in_s(-1)}, headers=ADMIN)
    assert moved.status_code == 200
    assert (await shop.get(f"/seckill/events/{event_id}")).json()["status"] == "ended"
    for path in ("/seckill/events/999999", "/seckill/events/abc"):
        assert _code(await shop.get(path)) == (404, "event_not_found")
    missing = await shop.patch("/seckill/events/999999", json={"add_stock": 1}, headers=ADMIN)
    assert _code(missing) == (404, "event_not_found")


async def test_purchase_answers(shop: httpx.AsyncClient) -> None:
    alice, bob, carol = await shoppers(shop, 3)
    event_id = await http_event(shop, stock=2)
    buy = f"/seckill/events/{event_id}/orders"
    assert _code(await shop.post(buy)) == (401, "unauthenticated")
    assert _code(await shop.post(buy, headers={"Authorization": "Bearer nope"})) == (401, "unauthenticated")
    assert _code(await shop.post("/seckill/events/424242/orders", headers=alice)) == (404, "event_not_found")
    first = await shop.post(buy, headers={**alice, "Idempotency-Key": "order-1"})
    assert first.status_code == 202 and first.headers["content-type"] == "application/json"
    order_id = first.json()["order_id"]
    assert str(uuid.UUID(order_id)) == order_id
    assert first.json() == {"order_id": order_id, "status": "queued", "event_id": event_id, "replayed": False}
    again = await shop.post(buy, headers={**alice, "Idempotency-Key": "order-1"})
    assert again.status_code == 202
    assert again.json() == {"order_id": order_id, "status": "queued", "event_id": event_id, "replayed": True}
    assert _code(await shop.post(buy, headers=alice)) == (409, "limit_reached")
    assert (await shop.post(buy, headers=bob)).status_code == 202
    assert _code(await shop.post(buy, headers=carol)) == (409, "sold_out")
    # Answered from memory now, by one shared response: each answer still carries only its own request id.
    memo = [await shop.post(buy, headers=who) for who in (carol, bob, carol)]
    assert {_code(r) for r in memo} == {(409, "sold_out")}
    ids = [r.headers.get_list("x-request-id") for r in memo]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 3
    # The replay still works after the sell-out (the sold-out memory does not hide it).
    late = await shop.post(buy, headers={**alice, "Idempotency-Key": "order-1"})
    assert late.json()["order_id"] == first.json()["order_id"]
    too_long = await shop.post(buy, headers={**alice, "Idempotency-Key": "k" * 201})
    assert _code(too_long) == (422, "invalid_request")


async def test_window_over_http(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1)
    early = await http_event(shop, starts_at=in_s(1.0), ends_at=in_s(2.0))
    assert (await shop.get(f"/seckill/events/{early}")).json()["status"] == "upcoming"
    assert _code(await shop.post(f"/seckill/events/{early}/orders", headers=alice)) == (409, "not_started")
    await asyncio.sleep(1.1)
    assert (await shop.post(f"/seckill/events/{early}/orders", headers=alice)).status_code == 202
    await asyncio.sleep(1.0)
    assert _code(await shop.post(f"/seckill/events/{early}/orders", headers=alice)) == (409, "ended")


async def test_rate_limit_answers_429_with_retry_after(make_settings: object) -> None:
    from peak.app import create_app
    from tests.seckill.conftest import SALE_ENV
    from tests.support import lifespan_client

    settings = make_settings(**{**SALE_ENV, "PEAK_SECKILL_USER_RATE_PER_S": "2"})  # type: ignore[operator]
    async with lifespan_client(create_app(settings)) as shop:
        (alice,) = await shoppers(shop, 1)
        event_id = await http_event(shop, stock=10, per_user_limit=10)
        answers = [await shop.post(f"/seckill/events/{event_id}/orders", headers=alice) for _ in range(3)]
        assert [r.status_code for r in answers] == [202, 202, 429]
        assert answers[2].json()["error"]["code"] == "rate_limited"
        assert answers[2].headers["retry-after"] == "1"


async def test_order_lifecycle_for_its_owner(shop: httpx.AsyncClient, sale_settings: object) -> None:
    from tests.seckill.conftest import drain, seckill_context

    alice, bob = await shoppers(shop, 2)
    event_id = await http_event(shop, stock=3, per_user_limit=2)
    buy = f"/seckill/events/{event_id}/orders"
    first = (await shop.post(buy, headers=alice)).json()["order_id"]
    second = (await shop.post(buy, headers=alice)).json()["order_id"]
    queued = (await shop.get(f"/seckill/orders/{first}", headers=alice)).json()
    assert (queued["status"], queued["event_id"]) == ("queued", event_id)
    # Issue 15: only the payment provider's signed callback pays; the shopper's own call is refused.
    assert _code(await provider_pays(shop, first)) == (409, "order_queued")
    assert _code(await shop.get(f"/seckill/orders/{first}", headers=bob)) == (404, "order_not_found")
    assert _code(await shop.get("/seckill/orders/not-a-uuid", headers=alice)) == (404, "order_not_found")
    async with seckill_context(sale_settings) as ctx:  # type: ignore[arg-type]
        await drain(ctx, event_id)
    shown = (await shop.get(f"/seckill/orders/{first}", headers=alice)).json()
    assert shown["status"] == "pending_payment" and shown["pay_by"]
    assert _code(await shop.post(f"/seckill/orders/{first}/pay", headers=alice)) == (403, "forbidden")
    assert (await shop.get(f"/seckill/orders/{first}", headers=alice)).json()["status"] == "pending_payment"
    paid = await provider_pays(shop, first)
    assert paid.status_code == 200 and paid.json()["outcome"] == "paid"
    assert (await shop.get(f"/seckill/orders/{first}", headers=alice)).json()["status"] == "paid"
    assert _code(await shop.post(f"/seckill/orders/{first}/cancel", headers=alice)) == (409, "order_paid")
    cancelled = await shop.post(f"/seckill/orders/{second}/cancel", headers=alice)
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancel_reason"] == "owner"
    assert _code(await provider_pays(shop, second)) == (409, "order_cancelled")
    # Alice's quota came back with the cancellation.
    assert (await shop.post(buy, headers=alice)).status_code == 202
    stats = (await shop.get(f"/seckill/events/{event_id}/stats", headers=ADMIN)).json()
    assert (stats["orders_paid"], stats["orders_cancelled"], stats["stock_left"], stats["drift"]) == (
        1,
        1,
        1,
        0,
    )


async def test_redis_outage_answers_503_not_500(make_settings: object, tmp_path: Path) -> None:
    from devstack.redis import RedisServer
    from peak.app import create_app
    from tests.seckill.conftest import SALE_ENV
    from tests.support import lifespan_client

    private = RedisServer(tmp_path / "redis")
    private.start()
    try:
        settings = make_settings(**{**SALE_ENV, "PEAK_REDIS_URL": private.url})  # type: ignore[operator]
        async with lifespan_client(create_app(settings)) as shop:
            (alice,) = await shoppers(shop, 1)
            event_id = await http_event(shop, stock=5)
            private.stop()
            for answer in (
                await shop.get(f"/seckill/events/{event_id}"),
                await shop.post(f"/seckill/events/{event_id}/orders", headers=alice),
                await shop.get(f"/seckill/events/{event_id}/stats", headers=ADMIN),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "unavailable" and answer.headers["retry-after"]
            private.start()
            assert (await shop.get(f"/seckill/events/{event_id}")).status_code == 200
    finally:
        private.stop()

"""No input produces a 500 (issue 15): path parameters, numbers against their columns, dates, headers."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.seckill.conftest import ADMIN, http_event, in_s, shoppers


def _code(r: httpx.Response) -> tuple[int, str]:
    assert r.status_code < 500, r.text
    return r.status_code, r.json()["error"]["code"]


async def test_event_ids_in_paths_are_ascii_digits_of_bounded_length(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1)
    event_id = await http_event(shop)
    assert event_id == 1
    # "²" is a digit to str.isdigit() and not to int(); U+0661 (ARABIC-INDIC ONE) is one to both: neither is an id.
    for raw in ("%C2%B2", "%D9%A1", "1" * 19, "9" * 18, "-1", "+1", "1e3", "%20", "1.0"):
        for method, path, extra in (
            ("GET", f"/seckill/events/{raw}", {}),
            ("GET", f"/seckill/events/{raw}/stats", {"headers": ADMIN}),
            ("PATCH", f"/seckill/events/{raw}", {"headers": ADMIN, "json": {"add_stock": 1}}),
            ("POST", f"/seckill/events/{raw}/orders", {"headers": alice}),
        ):
            answer = await shop.request(method, path, **extra)
            assert _code(answer) == (404, "event_not_found"), (method, path)


async def test_order_ids_in_paths_are_canonical_uuids(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1)
    event_id = await http_event(shop)
    order_id = (await shop.post(f"/seckill/events/{event_id}/orders", headers=alice)).json()["order_id"]
    hex_only = order_id.replace("-", "")
    for raw in (
        "%C2%B2", "{" + order_id + "}", "urn:uuid:" + order_id, hex_only, order_id[:-1], order_id + "0",
        "%D9%A3" * 8 + order_id[8:], order_id[:8] + "-" + order_id[9:13] + "0-" + order_id[14:],
    ):  # fmt: skip
        for method, path in (("GET", f"/seckill/orders/{raw}"), ("POST", f"/seckill/orders/{raw}/cancel")):
            assert _code(await shop.request(method, path, headers=alice)) == (404, "order_not_found"), raw
    assert (await shop.get(f"/seckill/orders/{order_id.upper()}", headers=alice)).status_code == 200


async def test_numbers_are_bounded_by_their_columns(shop: httpx.AsyncClient) -> None:
    base: dict[str, Any] = {
        "sku": "SKU-1", "title": "Phone", "price": 100, "stock": 1, "starts_at": in_s(-60), "ends_at": in_s(60),
    }  # fmt: skip
    for field, value in (
        ("price", -1), ("price", 10**12 + 1), ("price", 2**63), ("price", 1.5), ("stock", -1),
        ("stock", 100_000_001), ("stock", 2**31), ("per_user_limit", 0), ("per_user_limit", 2**31),
        ("payment_timeout_s", 0), ("payment_timeout_s", 2**31), ("buckets", 0), ("buckets", 65),
        ("buckets", 2**15),
    ):  # fmt: skip
        answer = await shop.post("/seckill/events", json={**base, field: value}, headers=ADMIN)
        assert _code(answer) == (422, "invalid_request"), (field, value)
    # Stock added during the sale can never overflow the column: the event's total is bounded, not each addition.
    event_id = await http_event(shop, stock=100_000_000)
    patch = f"/seckill/events/{event_id}"
    refused = await shop.patch(patch, json={"add_stock": 100_000_000}, headers=ADMIN)
    assert _code(refused) == (422, "invalid_request") and "add_stock" in refused.json()["error"]["message"]
    for _ in range(25):
        assert _code(await shop.patch(patch, json={"add_stock": 1}, headers=ADMIN)) == (
            422,
            "invalid_request",
        )
    small = await http_event(shop, stock=1)
    for _ in range(3):
        added = await shop.patch(f"/seckill/events/{small}", json={"add_stock": 33_333_333}, headers=ADMIN)
        assert added.status_code == 200, added.text
    assert added.json()["stock"] == 100_000_000
    full = await shop.patch(f"/seckill/events/{small}", json={"add_stock": 1}, headers=ADMIN)
    assert _code(full) == (422, "invalid_request")
    view = await shop.get(f"/seckill/events/{small}")
    assert view.json()["stock_left"] == 100_000_000


async def test_dates_outside_what_every_store_holds_answer_422(shop: httpx.AsyncClient) -> None:
    base = {"sku": "SKU-1", "title": "Phone", "price": 100, "stock": 1}
    for starts_at, ends_at in (
        ("0001-01-01T00:00:00+05:00", in_s(60)),  # year 0 in UTC
        (in_s(-60), "9999-12-31T23:59:59-05:00"),  # year 10000 in UTC
        ("0000-01-01T00:00:00Z", in_s(60)),
        ("0001-01-01T00:00:00Z", in_s(60)),  # what asyncpg would send as -infinity
        ("1969-12-31T23:59:59Z", in_s(60)),  # before the kit's first instant (kit.schema.instant)
        (in_s(-60), "10000-01-01T00:00:00Z"),
        (in_s(-60), "2030-13-01T00:00:00Z"),
        (in_s(-60), "2030-01-01T00:00:00+24:00"),
    ):
        answer = await shop.post(
            "/seckill/events", json={**base, "starts_at": starts_at, "ends_at": ends_at}, headers=ADMIN
        )
        assert _code(answer) == (422, "invalid_request"), (starts_at, ends_at)
    event_id = await http_event(shop)
    for ends_at in ("9999-12-31T23:59:59-05:00", "-0001-01-01T00:00:00Z"):
        moved = await shop.patch(f"/seckill/events/{event_id}", json={"ends_at": ends_at}, headers=ADMIN)
        assert _code(moved) == (422, "invalid_request"), ends_at
    # The extremes themselves are fine, and read back.
    edge = await shop.post(
        "/seckill/events",
        json={**base, "starts_at": "1970-01-01T00:00:00Z", "ends_at": "9998-12-31T23:59:59.999Z"},
        headers=ADMIN,
    )
    assert edge.status_code == 201, edge.text
    shown = await shop.get(f"/seckill/events/{edge.json()['id']}")
    assert shown.status_code == 200 and shown.json()["starts_at"] == "1970-01-01T00:00:00.000Z"
    assert shown.json()["ends_at"].startswith("9998-12-31T23:59:59.")


async def test_idempotency_keys_are_printable_ascii(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1)
    event_id = await http_event(shop, stock=5, per_user_limit=5)
    buy = f"/seckill/events/{event_id}/orders"
    for key in (b"k\x01", b"\xe9t\xe9", b"a\tb", b"\x7f"):
        headers = [(b"authorization", alice["Authorization"].encode()), (b"idempotency-key", key)]
        assert _code(await shop.post(buy, headers=headers)) == (422, "invalid_request"), key
    fine = await shop.post(buy, headers={**alice, "Idempotency-Key": "order 1: ~!@#$%^&*()"})
    assert fine.status_code == 202


async def test_unknown_uuid_shaped_orders_are_not_found(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1)
    assert _code(await shop.get(f"/seckill/orders/{uuid.uuid4()}", headers=alice)) == (404, "order_not_found")

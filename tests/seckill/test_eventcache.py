"""The event view's two-level cache in one process: memory first, ETag/304, unknown ids, the clock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time

import httpx
import redis.asyncio

from kit.context import Context
from kit.settings import Settings
from seckill import keys
from seckill.errors import EventNotFound
from seckill.eventcache import _MISSING_MAX, EventCache
from tests.conftest import Servers
from tests.seckill.conftest import ADMIN, http_event, in_s, new_event, seckill_context, shoppers

# What a test may see of the process's own background loops (the degradation controller's, the sweeps) while it
# counts scripts: loaded CI runs saw one in a short window, in this file and in test_tickets.py. A script per
# request would show as one per request.
BACKGROUND_SCRIPTS = 3


async def script_calls(servers: Servers) -> int:
    """EVALSHA and EVAL calls so far, over every Redis primary."""
    total = 0
    for url in servers.redis_nodes:
        node = redis.asyncio.Redis.from_url(url)
        try:
            stats = await node.info("commandstats")
        finally:
            await node.aclose()
        total += sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    return total


async def test_the_view_is_answered_from_memory_with_no_redis_call(
    shop: httpx.AsyncClient, servers: Servers
) -> None:
    event_id = await http_event(shop, stock=7, buckets=3)
    first = await shop.get(f"/seckill/events/{event_id}")
    assert first.status_code == 200, first.text
    view = first.json()
    assert (view["status"], view["stock_left"], view["ticket_required"], view["admission_spread_ms"]) == (
        "active", 7, False, 0,
    )  # fmt: skip
    assert "secret" not in first.text
    before = await script_calls(servers)
    answers = await asyncio.gather(*(shop.get(f"/seckill/events/{event_id}") for _ in range(300)))
    assert {a.status_code for a in answers} == {200}
    assert await script_calls(servers) - before <= BACKGROUND_SCRIPTS, "a cached view called a script"


async def test_redis_gone_the_cached_view_still_answers(shop: httpx.AsyncClient, servers: Servers) -> None:
    event_id = await http_event(shop, stock=3)
    assert (await shop.get(f"/seckill/events/{event_id}")).status_code == 200
    pausers = [redis.asyncio.Redis.from_url(url) for url in servers.redis_nodes]
    try:
        for node in pausers:
            await node.client_pause(3000, all=True)
        # Every client of the server is paused now (the recheck loop and the listener too): only memory answers.
        answers = await asyncio.wait_for(
            asyncio.gather(*(shop.get(f"/seckill/events/{event_id}") for _ in range(50))), timeout=2.5
        )
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["stock_left"] for a in answers} == {3}
    finally:
        for node in pausers:
            await node.client_unpause()
            await node.aclose()


async def test_etag_covers_the_body_but_server_time_and_answers_304(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1)
    event_id = await http_event(shop, stock=2)
    url = f"/seckill/events/{event_id}"
    first = await shop.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('W/"') and first.headers["cache-control"] == "public, max-age=1"
    await asyncio.sleep(0.02)
    second = await shop.get(url)
    assert second.json()["server_time"] != first.json()["server_time"]
    assert second.headers["etag"] == etag, "the ETag changed with server_time alone"
    for asked in (etag, etag.removeprefix("W/"), f'"nope", {etag}', "*"):
        again = await shop.get(url, headers={"If-None-Match": asked})
        assert (again.status_code, again.content) == (304, b""), asked
        assert again.headers["etag"] == etag and again.headers["cache-control"] == "public, max-age=1"
    for asked in ('"other"', "garbage", "", 'W/"', "\x7f" * 3):
        assert (await shop.get(url, headers={"If-None-Match": asked})).status_code == 200, asked
    # The state changes (a purchase: seen by the recheck within 0.5 s): a new ETag, and the old one gets
    # the new body.
    assert (await shop.post(f"{url}/orders", headers=alice)).status_code == 202
    since = time.monotonic()
    while (changed := await shop.get(url, headers={"If-None-Match": etag})).status_code == 304:
        assert time.monotonic() - since < 2.0, "the purchase never showed"
        await asyncio.sleep(0.02)
    assert changed.status_code == 200 and changed.json()["stock_left"] == 1
    assert changed.headers["etag"] != etag


async def test_status_follows_the_corrected_clock_exactly(shop: httpx.AsyncClient, servers: Servers) -> None:
    event_id = await http_event(shop, stock=2, starts_at=in_s(0.6), ends_at=in_s(1.2))
    seen = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        view = (await shop.get(f"/seckill/events/{event_id}")).json()
        now, start, end = view["server_time"], view["starts_at"], view["ends_at"]
        expected = "upcoming" if now < start else "ended" if now >= end else "active"
        assert view["status"] == expected, view
        seen.add(view["status"])
        if view["status"] == "ended":
            break
        await asyncio.sleep(0.01)
    assert seen == {"upcoming", "active", "ended"}
    # server_time is Redis's clock: it lies between two TIME readings around the view.
    node = redis.asyncio.Redis.from_url(servers.redis_nodes[0])
    try:
        before = await node.time()
        shown = (await shop.get(f"/seckill/events/{event_id}")).json()["server_time"]
        after = await node.time()
    finally:
        await node.aclose()

    def ms(t: tuple[int, int]) -> float:
        return t[0] * 1000 + t[1] / 1000

    shown_ms = dt.datetime.fromisoformat(shown.replace("Z", "+00:00")).timestamp() * 1000
    # 20 ms of slack either side: the offset's error is half a round trip, far less.
    assert ms(before) - 20 <= shown_ms <= ms(after) + 20


async def test_a_flood_of_made_up_ids_is_answered_from_bounded_memory(ctx: Context, servers: Servers) -> None:
    cache = ctx.get(EventCache)
    rng = random.Random(16)

    async def miss(event_id: int) -> None:
        try:
            await cache.load(event_id)
        except EventNotFound:
            return
        raise AssertionError(f"event {event_id} found")

    async def flood(ids: list[int]) -> None:
        for at in range(0, len(ids), 1000):
            await asyncio.gather(*(miss(i) for i in ids[at : at + 1000]))

    # No event ever created (no highest id known): each id reaches Redis once per TTL, memory stays bounded
    # (at _MISSING_MAX ids, a third fewer than the flood's).
    ids = rng.sample(range(1, 10**12), 15_000)
    before = await script_calls(servers)
    await flood(ids)
    assert await script_calls(servers) - before == 15_000
    assert len(cache) <= _MISSING_MAX
    before = await script_calls(servers)
    await flood(ids[-1_000:])  # the most recent misses, again within their TTL
    assert await script_calls(servers) == before

    # Once an event exists, every id above the highest one is answered from memory.
    event_id = await new_event(ctx)
    assert (await cache.load(event_id)).event_id == event_id
    before = await script_calls(servers)
    await flood(rng.sample(range(event_id + 1, 10**12), 15_000))
    assert await script_calls(servers) == before
    assert len(cache) <= _MISSING_MAX + 1


async def test_an_event_created_anywhere_is_visible_at_once(
    sale_settings: Settings, servers: Servers
) -> None:
    async with seckill_context(sale_settings) as here, seckill_context(sale_settings) as there:
        first = await new_event(here)
        far, near = there.get(EventCache), here.get(EventCache)
        assert (await far.load(first)).event_id == first
        for cache in (far, near):
            with contextlib.suppress(EventNotFound):
                await cache.load(first + 1)
        # The creating context forgets its miss at once; the other one hears the creation.
        second = await new_event(here)
        assert second == first + 1
        assert (await near.load(second)).event_id == second
        deadline = time.monotonic() + 2
        while True:
            try:
                assert (await far.load(second)).event_id == second
                break
            except EventNotFound:
                assert time.monotonic() < deadline, "the other process never saw the new event"
                await asyncio.sleep(0.01)


async def test_unknown_and_malformed_ids_answer_404(shop: httpx.AsyncClient) -> None:
    await http_event(shop)
    for path in ("999999", "0", "abc", "1e3", "-1", "9" * 19, "²"):
        answer = await shop.get(f"/seckill/events/{path}")
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "event_not_found"), path


async def test_patch_in_this_process_is_read_back_at_once(shop: httpx.AsyncClient) -> None:
    event_id = await http_event(shop, stock=1)
    url = f"/seckill/events/{event_id}"
    assert (await shop.get(url)).json()["stock_left"] == 1
    assert (await shop.patch(url, json={"add_stock": 2}, headers=ADMIN)).status_code == 200
    assert (await shop.get(url)).json()["stock_left"] == 3
    assert (await shop.patch(url, json={"ends_at": in_s(-1)}, headers=ADMIN)).status_code == 200
    assert (await shop.get(url)).json()["status"] == "ended"


async def test_a_lost_message_is_caught_by_the_recheck(
    shop: httpx.AsyncClient, sale_settings: Settings
) -> None:
    event_id = await http_event(shop, stock=2)
    url = f"/seckill/events/{event_id}"
    assert (await shop.get(url)).json()["stock_left"] == 2
    async with seckill_context(sale_settings) as other:
        # Stock changed in Redis with no message at all.
        await other.redis.hset(keys.event_keys(event_id).meta, "stock", 0)
    since = time.monotonic()
    while (await shop.get(url)).json()["status"] != "sold_out":
        assert time.monotonic() - since < 2.0, "the recheck never saw the stock change"
        await asyncio.sleep(0.02)

"""Purchase tickets: bound to a user and an event, unknowable before the start, checked from memory; the
admission spread and what it does for paced shoppers against bots."""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from typing import Any

import httpx

from kit.context import Context
from kit.settings import Settings
from seckill import keys, tickets
from tests.conftest import Servers
from tests.seckill.conftest import assert_balanced, http_event, in_s, seckill_context, shoppers
from tests.seckill.test_eventcache import BACKGROUND_SCRIPTS, script_calls


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


async def _ticket(shop: httpx.AsyncClient, event_id: int, who: dict[str, str]) -> dict[str, Any]:
    answer = await shop.get(f"/seckill/events/{event_id}/ticket", headers=who)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    return dict(answer.json())


async def _secret(ctx: Context, event_id: int) -> bytes:
    return bytes.fromhex(str(await ctx.redis.hget(keys.event_keys(event_id).meta, "secret")))


def _ms(iso: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_ticket_is_bound_to_its_user_and_event(
    shop: httpx.AsyncClient, sale_settings: Settings
) -> None:
    alice, bob = await shoppers(shop, 2)
    first = await http_event(shop, stock=5, ticket_required=True)
    second = await http_event(shop, stock=5, ticket_required=True)
    buy = f"/seckill/events/{first}/orders"
    assert _code(await shop.post(buy, headers=alice)) == (403, "ticket_required")
    made = await _ticket(shop, first, alice)
    assert set(made) == {"ticket", "event_id", "expires_at", "admit_at", "server_time"}
    assert made["event_id"] == first and made["admit_at"] <= made["server_time"] < made["expires_at"]
    ticket = {"X-Purchase-Ticket": made["ticket"]}
    # Another user, another event, a changed field, garbage: the same refusal.
    assert _code(await shop.post(buy, headers={**bob, **ticket})) == (403, "ticket_invalid")
    other = f"/seckill/events/{second}/orders"
    assert _code(await shop.post(other, headers={**alice, **ticket})) == (403, "ticket_invalid")
    expires, admit, mac = made["ticket"].split(".")
    for forged in (
        f"{int(expires) + 60_000}.{admit}.{mac}", f"{expires}.{int(admit) - 1}.{mac}", f"{expires}.{admit}.{'A' * 43}",
        "", ".", "..", "x.y.z", made["ticket"] + "A", "1.2." + mac, "é" * 50, f"{expires}.{admit}.{'é' * 43}", "9" * 10_000, f"{expires}.{admit}.{mac}.",
    ):  # fmt: skip
        raw = [(k.encode(), v.encode()) for k, v in alice.items()] + [
            (b"x-purchase-ticket", forged.encode("latin-1"))
        ]
        refused = await shop.post(buy, headers=raw)
        assert _code(refused) == (403, "ticket_invalid"), forged
    async with seckill_context(sale_settings) as ctx:
        secret = await _secret(ctx, first)
        # A ticket made with another secret (another event's), or one that has expired.
        wrong = tickets.make(await _secret(ctx, second), "x", first, int(expires), int(admit))
        assert _code(await shop.post(buy, headers={**alice, "X-Purchase-Ticket": wrong})) == (
            403,
            "ticket_invalid",
        )
    user_id = (await shop.get("/sso/userinfo", headers=alice)).json()["sub"]
    old = tickets.make(secret, user_id, first, int(time.time() * 1000) - 1, int(admit))
    expired = await shop.post(buy, headers={**alice, "X-Purchase-Ticket": old})
    assert _code(expired) == (403, "ticket_invalid") and "expired" in expired.json()["error"]["message"]
    # The real one buys; a retry with its Idempotency-Key gets the same order.
    keyed = {**alice, **ticket, "Idempotency-Key": "k1"}
    bought = await shop.post(buy, headers=keyed)
    assert bought.status_code == 202, bought.text
    again = await shop.post(buy, headers=keyed)
    assert again.status_code == 202 and again.json()["order_id"] == bought.json()["order_id"]
    assert again.json()["replayed"] is True
    # The secret is shown to nobody.
    for path in (f"/seckill/events/{first}", f"/seckill/events/{first}/ticket"):
        assert secret.hex() not in (await shop.get(path, headers=alice)).text


async def test_no_ticket_before_the_start_and_none_after_the_end(
    shop: httpx.AsyncClient, servers: Servers
) -> None:
    (alice,) = await shoppers(shop, 1)
    later = await http_event(shop, ticket_required=True, starts_at=in_s(30), ends_at=in_s(60))
    plain = await http_event(shop, starts_at=in_s(30), ends_at=in_s(60))
    done = await http_event(shop, ticket_required=True, starts_at=in_s(-60), ends_at=in_s(-1))
    assert _code(await shop.get(f"/seckill/events/{later}/ticket")) == (401, "unauthenticated")
    assert _code(await shop.get("/seckill/events/424242/ticket", headers=alice)) == (404, "event_not_found")
    assert _code(await shop.get(f"/seckill/events/{done}/ticket", headers=alice)) == (409, "ended")
    for event_id in (later, plain):
        assert (await shop.get(f"/seckill/events/{event_id}")).json()["status"] == "upcoming"
    # Early purchases and ticket fetches are answered from memory: no script runs.
    before = await script_calls(servers)
    for _ in range(20):
        assert _code(await shop.get(f"/seckill/events/{later}/ticket", headers=alice)) == (409, "not_started")
        for event_id in (later, plain):
            early = await shop.post(f"/seckill/events/{event_id}/orders", headers=alice)
            assert _code(early) == (409, "not_started")
    assert await script_calls(servers) - before <= BACKGROUND_SCRIPTS  # 60 requests: none of them ran one


async def test_a_fetch_right_after_the_start_works(shop: httpx.AsyncClient, sale_settings: Settings) -> None:
    (alice,) = await shoppers(shop, 1)
    event_id = await http_event(shop, ticket_required=True, starts_at=in_s(1.0), ends_at=in_s(60))
    url = f"/seckill/events/{event_id}/ticket"
    assert _code(await shop.get(url, headers=alice)) == (409, "not_started")
    async with seckill_context(sale_settings) as ctx:
        # Redis withholds the secret before the start, from anyone asking through the view script.
        from seckill import scripts

        assert (await scripts.view(ctx.redis, keys.event_keys(event_id))).secret is None
    while (answer := await shop.get(url, headers=alice)).status_code == 409:
        assert answer.json()["error"]["code"] == "not_started"
        await asyncio.sleep(0.01)
    assert answer.status_code == 200, answer.text
    view = (await shop.get(f"/seckill/events/{event_id}")).json()
    assert view["status"] == "active" and answer.json()["admit_at"] == view["starts_at"]


async def test_admission_is_spread_deterministically_and_early_buyers_wait(shop: httpx.AsyncClient) -> None:
    users = await shoppers(shop, 8)
    event_id = await http_event(
        shop,
        stock=50,
        ticket_required=True,
        admission_spread_ms=60_000,
        starts_at=in_s(-0.2),
        ends_at=in_s(600),
    )
    admits = []
    for who in users:
        fetched = [await _ticket(shop, event_id, who) for _ in range(5)]
        assert len({t["admit_at"] for t in fetched}) == 1, "the admission time changed between fetches"
        admits.append((fetched[0], who))
    assert len({t["admit_at"] for t, _ in admits}) > 1, "everyone was admitted at the same moment"
    waiting = [(t, who) for t, who in admits if _ms(t["admit_at"]) > time.time() * 1000 + 2000]
    assert waiting, "no shopper has to wait (chance: 8 users all in the first 2 s of 60)"
    made, who = waiting[0]
    early = await shop.post(
        f"/seckill/events/{event_id}/orders", headers={**who, "X-Purchase-Ticket": made["ticket"]}
    )
    assert _code(early) == (409, "not_admitted")
    wait_s = (_ms(made["admit_at"]) - time.time() * 1000) / 1000
    assert math.ceil(wait_s) <= int(early.headers["retry-after"]) <= math.ceil(wait_s) + 1
    assert made["admit_at"] in early.json()["error"]["message"]
    # The ticket outlives the wait: it expires a TTL after the admission time.
    assert _ms(made["expires_at"]) - _ms(made["admit_at"]) == 30_000


async def test_concurrent_ticket_purchases_never_oversell(
    shop: httpx.AsyncClient, sale_settings: Settings
) -> None:
    users = await shoppers(shop, 300)
    event_id = await http_event(shop, stock=100, ticket_required=True)
    made = await asyncio.gather(*(shop.get(f"/seckill/events/{event_id}/ticket", headers=u) for u in users))
    attempts = [{**u, "X-Purchase-Ticket": t.json()["ticket"]} for u, t in zip(users, made, strict=True)] * 2
    random.Random(16).shuffle(attempts)
    answers = await asyncio.gather(
        *(shop.post(f"/seckill/events/{event_id}/orders", headers=h) for h in attempts)
    )
    codes = collections.Counter(
        r.status_code if r.status_code == 202 else r.json()["error"]["code"] for r in answers
    )
    assert codes[202] == 100 and set(codes) <= {202, "sold_out", "limit_reached"}, codes
    async with seckill_context(sale_settings) as ctx:
        b = await assert_balanced(ctx, event_id)
        assert b.stock_left == 0


async def _share_of_paced(shop: httpx.AsyncClient, bots: list[dict[str, str]], paced: list[dict[str, str]],
                          spread_ms: int) -> float:  # fmt: skip
    """N bots fire every 20 ms from before the start, ignoring Retry-After; M paced shoppers arrive within the
    first 2 s, then try every 2 s or when told (Retry-After): 100x slower. Each wants one item; the stock is
    half of them. The paced shoppers' share of the stock."""
    stock = (len(bots) + len(paced)) // 2
    event_id = await http_event(
        shop,
        stock=stock,
        ticket_required=True,
        admission_spread_ms=spread_ms,
        starts_at=in_s(1.0),
        ends_at=in_s(120),
    )
    won: collections.Counter[str] = collections.Counter()
    over = asyncio.Event()

    async def attempt(who: dict[str, str], ticket: list[str]) -> httpx.Response | None:
        if not ticket:
            got = await shop.get(f"/seckill/events/{event_id}/ticket", headers=who)
            if got.status_code != 200:
                return None
            ticket.append(got.json()["ticket"])
        return await shop.post(
            f"/seckill/events/{event_id}/orders", headers={**who, "X-Purchase-Ticket": ticket[0]}
        )

    async def bot(who: dict[str, str]) -> None:
        ticket: list[str] = []
        while not over.is_set():
            r = await attempt(who, ticket)
            if r is not None and (
                r.status_code == 202 or r.json()["error"]["code"] in ("sold_out", "limit_reached")
            ):
                won["bot"] += r.status_code == 202
                return
            await asyncio.sleep(0.02)

    async def person(who: dict[str, str], rng: random.Random) -> None:
        await asyncio.sleep(1.0 + rng.uniform(0, 2.0))
        ticket: list[str] = []
        while not over.is_set():
            r = await attempt(who, ticket)
            wait = 2.0
            if r is not None:
                if r.status_code == 202 or r.json()["error"]["code"] in ("sold_out", "limit_reached"):
                    won["paced"] += r.status_code == 202
                    return
                if r.json()["error"]["code"] == "not_admitted":
                    wait = float(r.headers["retry-after"])
            await asyncio.sleep(wait)

    rng = random.Random(spread_ms)
    tasks = [asyncio.create_task(bot(b)) for b in bots] + [asyncio.create_task(person(p, rng)) for p in paced]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=spread_ms / 1000 + 30)
    finally:
        over.set()
    assert won["bot"] + won["paced"] == stock, won
    return won["paced"] / stock


async def test_admission_spread_gives_paced_shoppers_a_fair_share(shop: httpx.AsyncClient) -> None:
    people = await shoppers(shop, 60)
    bots, paced = people[:30], people[30:]
    # Every bot and person arrives within the first 2 s of the sale; a spread of 8 s orders them at random.
    without = await _share_of_paced(shop, bots[:15], paced[:15], 0)
    spread = await _share_of_paced(shop, bots[15:], paced[15:], 8_000)
    print(f"paced shoppers' share of the stock: spread 0 ms {without:.2f}, spread 8000 ms {spread:.2f}"
          " (15 bots at 50 attempts/s against 15 paced shoppers at 0.5/s; fair share 0.50)")  # fmt: skip
    assert without <= 0.1
    assert spread >= 0.2

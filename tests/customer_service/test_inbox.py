"""The shed-time inbox under hostile input: entries PostgreSQL refuses, a flood, one shopper's spam."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest

from customer_service import keys
from customer_service.inbox import drain_once, unstorable
from kit.context import Context, open_context
from kit.settings import Settings
from peak.app import components, create_app
from tests.conftest import Servers
from tests.reviews.conftest import ADMIN, NO_CONTROLLER, NO_CS_RATE, shoppers
from tests.seckill.conftest import SALE_ENV
from tests.support import lifespan_client, run_peak

SHED = {"mode": "shed", "reason": "peak"}
OPEN = {"mode": "auto", "reason": "peak over"}


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def _drain(ctx: Context) -> None:
    """Run the mover until the inbox is empty (a batch of dead letters only moves nothing, but is progress)."""
    for _ in range(20):
        await drain_once(ctx, "test-consumer")
        if await ctx.redis.xlen(keys.INBOX) == 0:
            return
    raise AssertionError(f"the inbox still holds {await ctx.redis.xlen(keys.INBOX)} entries")


def _entry(text: str | bytes, **fields: str | bytes) -> dict[str, str | bytes]:
    return {
        "id": str(uuid.uuid4()), "user_id": "u-direct", "author_name": "direct", "text": text,
        "created_at": "2026-11-11T00:00:00+00:00", **fields,
    }  # fmt: skip


async def test_an_entry_postgresql_refuses_is_dead_lettered_and_the_rest_are_stored(
    shop: httpx.AsyncClient, shop_settings: Settings, servers: Servers
) -> None:
    # The reproduction: one message with a NUL in the inbox failed every batch insert, for good.
    (alice,) = await shoppers(shop, 1, prefix="dl")
    assert (await shop.put("/degrade/switches/customer_service", json=SHED, headers=ADMIN)).status_code == 200
    for text in ("before 1", "before 2"):
        assert (await shop.post("/cs/messages", json={"text": text}, headers=alice)).status_code == 202
    async with open_context(shop_settings, components(), "worker") as ctx:
        # What the HTTP edge refuses, written straight into the stream.
        bad = [
            _entry("nul \x00 inside"),
            _entry(b"\xff\xfe not utf-8"),
            _entry("no author", author_name=""),  # stored: an empty name is text
            {"text": "no id, no user"},
            _entry("bad time", created_at="yesterday"),
            _entry("x", id="not-a-uuid"),
        ]
        for fields in bad:
            await ctx.redis.xadd(keys.INBOX, fields)  # type: ignore[arg-type]
        # More than one batch behind them.
        answers = await asyncio.gather(
            *(shop.post("/cs/messages", json={"text": f"after {i}"}, headers=alice) for i in range(250))
        )
        assert {a.status_code for a in answers} == {202}
        await shop.put("/degrade/switches/customer_service", json=OPEN, headers=ADMIN)
        await _drain(ctx)
        texts = {r["text"] for r in await ctx.db.fetch("SELECT text FROM cs_messages")}
        assert {"before 1", "before 2", "no author"} <= texts
        assert {t for t in texts if t.startswith("after ")} == {f"after {i}" for i in range(250)}
        assert await ctx.redis.xlen(keys.INBOX) == 0
        pending = await ctx.redis.xpending(keys.INBOX, keys.INBOX_GROUP)
        assert pending["pending"] == 0
        assert await ctx.redis.xlen(keys.DEAD_LETTERS) == 5
    # Ops see them, escaped (a NUL and raw bytes never reach the terminal as they are), and act on them.
    env = {**servers.env(), **SALE_ENV, **NO_CS_RATE}
    listed = run_peak("cs", "dead-letters", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "5 dead letter(s)" in listed.stdout
    assert "nul \\x00 inside" in listed.stdout and "\x00" not in listed.stdout
    assert "PostgreSQL refused it" in listed.stdout and "not UTF-8" in listed.stdout
    assert "not a message" in listed.stdout
    nul_id = next(line.split()[0] for line in listed.stdout.splitlines() if "nul \\x00" in line)
    retried = run_peak("cs", "dead-letters", "--retry", nul_id, env=env)
    assert retried.returncode == 0 and "back in the inbox" in retried.stdout, retried.stderr
    async with open_context(shop_settings, components(), "worker") as ctx:
        assert await ctx.redis.xlen(keys.INBOX) == 1
        await _drain(ctx)  # refused again: back among the dead letters, and nothing jams
        assert await ctx.redis.xlen(keys.DEAD_LETTERS) == 5
    again = run_peak("cs", "dead-letters", "--retry", nul_id, env=env)
    assert again.returncode == 1 and "no dead letter" in again.stderr
    first = run_peak("cs", "dead-letters", env=env).stdout.splitlines()[0].split()[0]
    assert run_peak("cs", "dead-letters", "--drop", first, env=env).returncode == 0
    assert "4 dead letter(s)" in run_peak("cs", "dead-letters", env=env).stdout
    assert run_peak("cs", "dead-letters", "--drop", "²", env=env).returncode == 2


@pytest.fixture
async def small_inbox(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(**SALE_ENV, **NO_CS_RATE, **NO_CONTROLLER, PEAK_CS_INBOX_MAX="50")
    async with lifespan_client(create_app(settings)) as c:
        yield c


async def test_the_inbox_is_bounded(small_inbox: httpx.AsyncClient) -> None:
    users = await shoppers(small_inbox, 8, prefix="full")
    await small_inbox.put("/degrade/switches/customer_service", json=SHED, headers=ADMIN)
    answers = await asyncio.gather(
        *(small_inbox.post("/cs/messages", json={"text": f"m{i}"}, headers=users[i % 8]) for i in range(200))
    )
    codes = [a.status_code for a in answers]
    assert codes.count(202) == 50 and codes.count(503) == 150
    full = next(a for a in answers if a.status_code == 503)
    assert _code(full) == (503, "inbox_full") and full.headers["retry-after"] == "30"
    assert full.headers["x-degraded"] == "customer_service"


@pytest.fixture
async def rated(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(
        create_app(make_settings(**SALE_ENV, **NO_CONTROLLER, PEAK_CS_USER_MESSAGES="20"))
    ) as c:
        yield c


async def test_one_shopper_cannot_lock_out_the_others(rated: httpx.AsyncClient) -> None:
    shop = rated
    spammer, other = await shoppers(shop, 2, prefix="spam")
    answers = await asyncio.gather(
        *(shop.post("/cs/messages", json={"text": f"s{i}"}, headers=spammer) for i in range(100))
    )
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 20 and codes.count(429) == 80
    limited = next(a for a in answers if a.status_code == 429)
    assert _code(limited) == (429, "rate_limited") and 1 <= int(limited.headers["retry-after"]) <= 60
    assert (await shop.post("/cs/messages", json={"text": "hello"}, headers=other)).status_code == 201
    # Shed or not, the same count.
    await shop.put("/degrade/switches/customer_service", json=SHED, headers=ADMIN)
    assert _code(await shop.post("/cs/messages", json={"text": "x"}, headers=spammer)) == (
        429,
        "rate_limited",
    )
    assert (await shop.post("/cs/messages", json={"text": "queued"}, headers=other)).status_code == 202


@pytest.fixture
async def small_pages(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(
        create_app(make_settings(**SALE_ENV, **NO_CS_RATE, **NO_CONTROLLER, PEAK_CS_PAGE_SIZE="3"))
    ) as c:
        yield c


async def test_a_conversation_comes_in_pages(small_pages: httpx.AsyncClient) -> None:
    alice, bob = await shoppers(small_pages, 2, prefix="pages")
    for i in range(7):
        assert (
            await small_pages.post("/cs/messages", json={"text": f"p{i}"}, headers=alice)
        ).status_code == 201
    seen: list[list[str]] = []
    before = ""
    while True:
        page = (await small_pages.get(f"/cs/messages?before={before}", headers=alice)).json()
        seen.append([m["text"] for m in page["messages"]])
        if page["next_before"] is None:
            break
        before = page["next_before"]
    assert seen == [["p4", "p5", "p6"], ["p1", "p2", "p3"], ["p0"]]
    # Someone else's message id pages through nothing.
    assert (await small_pages.get(f"/cs/messages?before={before}", headers=bob)).json()["messages"] == []


@pytest.mark.parametrize(
    "message_id",
    ["nope", "{0f8fad5b-d9cb-469f-a165-70867728950e}", "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
     "0f8fad5bd9cb469fa16570867728950e", "\uff10f8fad5b-d9cb-469f-a165-70867728950e", "²" * 36, "a" * 5000],
)  # fmt: skip
async def test_message_ids_are_canonical_uuids(shop: httpx.AsyncClient, message_id: str) -> None:
    answer = await shop.post(f"/cs/messages/{message_id}/reply", json={"text": "x"}, headers=ADMIN)
    assert _code(answer) == (422, "invalid_request")
    assert "message_id" in answer.json()["error"]["message"]


async def test_bad_query_and_body_values_are_422(shop: httpx.AsyncClient) -> None:
    (alice,) = await shoppers(shop, 1, prefix="badq")
    for before in ("²", "x" * 37, "0f8fad5b-d9cb-469f-a165-70867728950"):
        answer = await shop.get("/cs/messages", params={"before": before}, headers=alice)
        assert _code(answer) == (422, "invalid_request") and "before" in answer.json()["error"]["message"]
    for body in ({"text": "x" * 4001}, {"text": 5}, {"text": ["x"]}, {"text": None}):
        assert _code(await shop.post("/cs/messages", json=body, headers=alice)) == (422, "invalid_request")
    upper = str(uuid.uuid4()).upper()
    assert _code(await shop.post(f"/cs/messages/{upper}/reply", json={"text": "x"}, headers=ADMIN)) == (
        404,
        "message_not_found",
    )


def test_only_what_postgresql_refuses_for_its_data_is_unstorable() -> None:
    refused = [
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
        asyncpg.exceptions.StringDataRightTruncationError("value too long"),
        asyncpg.exceptions.CheckViolationError("check"),
        asyncpg.exceptions.ProgramLimitExceededError("index row size"),
        asyncpg.exceptions._base.DataError("invalid input for query argument $5"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ]
    worth_retrying = [
        asyncpg.exceptions.ConnectionDoesNotExistError("closed"),
        asyncpg.exceptions.TooManyConnectionsError("too many"),
        asyncpg.exceptions.AdminShutdownError("shutdown"),
        asyncpg.exceptions.QueryCanceledError("statement timeout"),
        asyncpg.exceptions.InterfaceError("pool closed"),
        ConnectionRefusedError(),
        TimeoutError(),
    ]
    assert all(unstorable(e) for e in refused)
    assert not any(unstorable(e) for e in worth_retrying)

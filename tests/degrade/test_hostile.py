"""What a hostile or careless caller sends degrade: forced changes, named admins, bad parameters, floods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest

from degrade import keys
from kit.redis import create_redis
from kit.settings import Settings
from peak.app import components, create_app
from tests.degrade.conftest import ADMIN, AUTH, parts, put
from tests.degrade.test_controller import OVERLOAD_ENV
from tests.support import lifespan_client


async def _trail(c: httpx.AsyncClient, headers: dict[str, str] = AUTH) -> list[tuple[str, str, str, str]]:
    entries = (await c.get("/degrade/audit", headers=headers)).json()["entries"]
    return [(e["name"], e["field"], e["new"], e["by"]) for e in entries]


def _code(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


async def test_a_core_subsystem_is_only_made_sheddable_with_force(app_client: httpx.AsyncClient) -> None:
    # The reproduction: a non-core tier in the same call let a core subsystem be shed without force.
    assert _code(await put(app_client, "shop", tier="sheddable", mode="shed", reason="x")) == (
        409,
        "force_required",
    )
    assert (await app_client.get("/shop/buy")).status_code == 200
    # A non-core tier alone lets the controller shed it (its mode is auto): force too.
    assert _code(await put(app_client, "shop", tier="sheddable_plus", reason="x")) == (409, "force_required")
    assert _code(await put(app_client, "shop", tier="critical", mode="shed", reason="x")) == (
        409,
        "force_required",
    )
    assert await _trail(app_client) == []
    forced = await put(app_client, "shop", tier="sheddable", reason="tonight only", force=True)
    assert forced.status_code == 200 and forced.json()["tier"] == "sheddable"
    # Once it is sheddable, whatever keeps it where the controller may shed it still needs force ...
    assert _code(await put(app_client, "shop", mode="auto", reason="x")) == (409, "force_required")
    assert _code(await put(app_client, "shop", tier="sheddable_plus", reason="x")) == (409, "force_required")
    assert _code(await put(app_client, "shop", mode="shed", reason="x")) == (409, "force_required")
    # ... and whatever protects it again does not.
    assert (await put(app_client, "shop", mode="open", reason="pinned open")).status_code == 200
    assert (await put(app_client, "shop", tier="critical_plus", reason="core again")).status_code == 200
    assert (await put(app_client, "shop", mode="auto", reason="back to the controller")).status_code == 200
    # A non-core subsystem made core is core too: taking that back needs force.
    assert (await put(app_client, "extras", tier="critical", reason="campaign")).status_code == 200
    assert _code(await put(app_client, "extras", tier="sheddable", reason="x")) == (409, "force_required")
    assert (await put(app_client, "extras", tier="sheddable", reason="over", force=True)).status_code == 200
    assert (await put(app_client, "extras", mode="shed", reason="non-core: no force")).status_code == 200


async def test_force_is_judged_on_the_stored_switches(
    app_client: httpx.AsyncClient, degrade_settings: Callable[..., Settings]
) -> None:
    # Another process made `shop` sheddable and this one missed the news (no publish, no resync yet).
    direct = create_redis(degrade_settings().require("redis_url"))
    try:
        await direct.hset(keys.SWITCHES, "tier:shop", "sheddable")
    finally:
        await direct.aclose()
    assert _code(await put(app_client, "shop", mode="auto", reason="x")) == (409, "force_required")


@pytest.fixture
async def named_tokens_client(degrade_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    settings = degrade_settings(
        PEAK_ADMIN_TOKENS="alice-ops=tok-alice-0123456789, deploy-bot=tok-bot-0123456789"
    )
    async with lifespan_client(create_app(settings, parts())) as c:
        yield c


async def test_the_audit_names_the_admin_token_used(named_tokens_client: httpx.AsyncClient) -> None:
    c = named_tokens_client
    alice = {"Authorization": "Bearer tok-alice-0123456789"}
    bot = {"Authorization": "Bearer tok-bot-0123456789"}
    assert (
        await c.put("/degrade/switches/extras", json={"mode": "shed", "reason": "a"}, headers=alice)
    ).is_success
    assert (
        await c.put("/degrade/switches/extras", json={"mode": "open", "reason": "b"}, headers=bot)
    ).is_success
    assert (await put(c, "extras", mode="auto", reason="c")).is_success
    wrong = await c.put("/degrade/switches/extras", json={"mode": "shed", "reason": "d"}, headers=AUTH | {
        "Authorization": "Bearer tok-alice-012345678"})  # fmt: skip
    assert _code(wrong) == (403, "forbidden")
    assert await _trail(c, bot) == [
        ("extras", "mode", "shed", "alice-ops"),
        ("extras", "mode", "open", "deploy-bot"),
        ("extras", "mode", "auto", "admin-token"),
    ]
    listing = (await c.get("/degrade/switches", headers=alice)).json()["switches"]
    assert next(s for s in listing if s["name"] == "extras")["changed_by"] == "admin-token"
    # No token, not even its beginning, is in any answer.
    assert "tok-" not in (await c.get("/degrade/audit", headers=alice)).text


async def test_with_sso_the_audit_names_the_admin_user_or_the_token(
    degrade_settings: Callable[..., Settings],
) -> None:
    settings = degrade_settings(PEAK_ADMIN_TOKENS="night-shift=tok-night-0123456789")
    async with lifespan_client(create_app(settings, components())) as c:
        password = "correct horse battery staple"
        assert (
            await c.post("/sso/users", json={"username": "Olga", "password": password})
        ).status_code == 201
        conn = await asyncpg.connect(settings.require("database_url"))
        try:
            await conn.execute("UPDATE sso_users SET roles = roles || '{admin}' WHERE username = 'Olga'")
        finally:
            await conn.close()
        login = await c.post("/sso/login", json={"username": "Olga", "password": password})
        olga = {"Authorization": f"Bearer {login.json()['access_token']}"}
        night = {"Authorization": "Bearer tok-night-0123456789"}
        shed = {"mode": "shed", "reason": "peak"}
        assert (await c.put("/degrade/switches/reviews", json=shed, headers=olga)).status_code == 200
        assert (
            await c.put("/degrade/switches/reviews", json={"mode": "auto", "reason": "x"}, headers=night)
        ).is_success
        assert (await c.put("/degrade/switches/reviews", json=shed, headers=AUTH)).is_success
        assert [by for *_, by in await _trail(c)] == ["Olga", "night-shift", "admin-token"]


BAD_LIMITS = ["²", "٣", "1\n", " 1", "+1", "-1", "0", "1001", "1.5", "1e3", "9" * 5000, "0x10", "", "\uff11"]
BAD_SINCES = [
    "²", "yesterday", "1\n", "12-²", "1-1-1", "18446744073709551616", "1-18446744073709551615",
    "12345678901234567", "2026-11-26", "2026-11-26T14:00:00", "x" * 65, "\uff12\uff10\uff12\uff16-11-26T14:00:00Z",
    "2026-13-01T00:00:00Z", "\u00e9t\u00e9",
]  # fmt: skip


async def test_audit_parameters_are_422_naming_them(app_client: httpx.AsyncClient) -> None:
    await put(app_client, "extras", mode="shed", reason="one entry")
    for limit in BAD_LIMITS:
        if limit == "":
            continue  # empty: the default
        answer = await app_client.get("/degrade/audit", params={"limit": limit}, headers=AUTH)
        assert _code(answer) == (422, "invalid_request"), limit
        assert "limit" in answer.json()["error"]["message"]
    for since in BAD_SINCES:
        answer = await app_client.get("/degrade/audit", params={"since": since}, headers=AUTH)
        assert _code(answer) == (422, "invalid_request"), since
        assert "since" in answer.json()["error"]["message"]
    # Before 1970, or a far future: valid, and simply before or after every entry.
    for since, count in (("0001-01-01T00:00:00+23:59", 1), ("9999-12-31T23:59:59Z", 0), ("0", 1)):
        answer = await app_client.get("/degrade/audit", params={"since": since}, headers=AUTH)
        assert answer.status_code == 200 and len(answer.json()["entries"]) == count, since
    top = await app_client.get("/degrade/audit", params={"since": "9999999999999999-9999999999999999999"},
                               headers=AUTH)  # fmt: skip
    assert top.status_code == 200 and top.json()["entries"] == []


@pytest.mark.parametrize("name", ["²", "a" * 65, "shop%00", "%ff%fe", "extras%2F..", "%E2%80%AE"])
async def test_a_malformed_subsystem_name_is_422(app_client: httpx.AsyncClient, name: str) -> None:
    answer = await app_client.put(
        f"/degrade/switches/{name}", json={"mode": "shed", "reason": "x"}, headers=AUTH
    )
    assert answer.status_code in (404, 422), answer.text
    if answer.status_code == 422:
        assert "name" in answer.json()["error"]["message"]
    assert len(answer.text) < 500


FLOOD_ENV = {
    **OVERLOAD_ENV,
    "PEAK_DEGRADE_ERROR_HIGH": "0.5",
    "PEAK_DEGRADE_ERROR_LOW": "0.1",
    "PEAK_BODY_READ_TIMEOUT_S": "0.3",
    "PEAK_MAX_BODY_BYTES": "1024",
}


async def _trickle() -> AsyncIterator[bytes]:
    for _ in range(20):
        yield b"{"
        await asyncio.sleep(0.2)


async def _flood_round(c: httpx.AsyncClient) -> list[int]:
    slow = [c.post("/shop/pay", content=_trickle()) for _ in range(100)]
    large = [c.post("/shop/pay", content=b"x" * 4096) for _ in range(20)]
    chunked_large = [c.post("/shop/pay", content=_chunks(b"y" * 600, 4)) for _ in range(20)]
    # Client errors that take the handler a while (0.3 s: twice the p99 high mark), rendered or raised.
    slow_4xx = [
        c.get(f"/shop/buy?delay=0.3&status={status}{'&raise=1' if i % 2 else ''}")
        for i, status in enumerate((401, 403, 404, 409, 422, 429, 400, 405))
    ]
    gone = [_gone(c) for _ in range(8)]
    answers = await asyncio.gather(*slow, *large, *chunked_large, *slow_4xx, *gone)
    return [a.status_code for a in answers]


async def _gone(c: httpx.AsyncClient) -> httpx.Response:
    """A request whose client disconnects (the handler raises ClientDisconnect, as reading its body would)."""
    try:
        return await c.get("/shop/buy?delay=0.3&gone=1")
    except AssertionError:
        # httpx's ASGI transport insists on an answer; the kit (rightly) gives none to a client that is gone.
        return httpx.Response(499)


async def _chunks(chunk: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield chunk


async def test_a_flood_of_bad_requests_on_a_core_route_does_not_shed(
    degrade_settings: Callable[..., Settings],
) -> None:
    async with lifespan_client(create_app(degrade_settings(**FLOOD_ENV), parts())) as c:
        seen: set[int] = set()
        worst = {"inflight": 0.0, "p99_ms": 0.0, "error_ratio": 0.0}
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                sample = (await c.get("/degrade/status", headers=AUTH)).json()["this_process"]["signals"]
                for signal in worst:
                    worst[signal] = max(worst[signal], (sample or {}).get(signal, 0))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        loop = asyncio.get_running_loop()
        until = loop.time() + 3
        while loop.time() < until:
            seen.update(await _flood_round(c))
        await asyncio.sleep(0.3)
        stop.set()
        await watcher
        # The flood reached the core route and was answered as the kit and the handler chose.
        assert {408, 413, 401, 404, 422, 429, 499} <= seen
        assert await _trail(c) == []
        assert worst["p99_ms"] < 150 and worst["error_ratio"] == 0 and worst["inflight"] < 20, worst


async def test_server_failures_still_trip_the_controller(degrade_settings: Callable[..., Settings]) -> None:
    async with lifespan_client(create_app(degrade_settings(**FLOOD_ENV), parts())) as c:
        for _ in range(50):
            # Raised, not rendered: 503s that pass the degrade middleware as exceptions.
            await asyncio.gather(*(c.get("/shop/buy?status=503&raise=1") for _ in range(10)))
            if await _trail(c):
                break
            await asyncio.sleep(0.05)
        entries = (await c.get("/degrade/audit", headers=AUTH)).json()["entries"]
        assert entries and entries[0]["name"] == "extras" and "error_ratio" in entries[0]["reason"]


async def test_a_slow_body_that_completes_is_no_slow_core_call(
    degrade_settings: Callable[..., Settings],
) -> None:
    # Within the kit's deadline, but slow: the wait is the client's, not the server's.
    settings = degrade_settings(**{**FLOOD_ENV, "PEAK_BODY_READ_TIMEOUT_S": "5"})
    async with lifespan_client(create_app(settings, parts())) as c:

        async def slow_body() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x"
                await asyncio.sleep(0.1)

        answers = await asyncio.gather(*(c.post("/shop/pay", content=slow_body()) for _ in range(60)))
        assert {a.status_code for a in answers} == {200}
        await asyncio.sleep(0.15)
        sample = (await c.get("/degrade/status", headers=AUTH)).json()["this_process"]["signals"]
        assert sample["core_calls"] >= 60 and sample["p99_ms"] < 150, sample
        assert await _trail(c) == []


async def test_junk_on_the_switch_channel_does_not_stop_the_news(
    make_settings: Callable[..., Settings],
) -> None:
    # No resync to hide a dropped subscription: the news only arrives over pub/sub.
    settings = make_settings(PEAK_ADMIN_TOKEN=ADMIN, PEAK_DEGRADE_RESYNC_S="60")
    direct = create_redis(settings.require("redis_url"))
    async with (
        lifespan_client(create_app(settings, parts())) as listener,
        lifespan_client(create_app(settings, parts())) as other,
    ):
        try:
            for junk in ("not json", "[1, 2]", '{"name": "extras"}', '"x"', "{}"):
                await direct.publish(keys.CHANNEL, junk)
                await asyncio.sleep(0.05)
                status = (await listener.get("/degrade/status", headers=AUTH)).json()["this_process"]
                assert status["redis"] == "ok", (junk, status["redis_error"])
        finally:
            await direct.aclose()
        assert (await put(other, "extras", mode="shed", reason="after the junk")).status_code == 200
        for _ in range(20):
            if (await listener.get("/extras/things")).json() == {"stale": True}:
                break
            await asyncio.sleep(0.05)
        assert (await listener.get("/extras/things")).json() == {"stale": True}

"""Every Lua script sent twice with the same KEYS and ARGV (issue 17 item 3): what the Redis client does when a
call's answer was lost (kit/lane.py and redis-py send the same bytes again). For each bound script a case sets
up state, calls once, snapshots every key, calls again, and checks the second answer and the state against
what the script's ``-- Retry:`` line says: the same (most), or the documented difference. A script without a
case fails ``test_every_script_has_a_case``: a new script adds its own here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from customer_service import keys as cs_keys
from degrade import keys as degrade_keys
from kit.lua import EncodableT, Script
from kit.redis import RedisClient, create_redis
from kit.settings import Settings
from peak.app import components
from reviews import keys as reviews_keys
from seckill import keys as sk
from seckill import scripts as seckill_scripts
from seckill.ids import new_order_id
from sso import code_scripts, throttle_scripts
from sso import keys as sso_keys
from sso import scripts as sso_scripts
from tests.conftest import Servers

SCRIPTS = {script.name: script for part in components() for script in part.scripts}
Check = Callable[[Any, Any], None]


@dataclass
class Case:
    keys: list[str]
    args: list[EncodableT]
    # Asserts the second answer given the first; None: they are equal.
    again: Check | None = None
    # Keys whose value a retry changes as the script's Retry line says, each with a check (first state, second).
    changed: dict[str, Check] = field(default_factory=dict)


Setup = Callable[[RedisClient], Awaitable[Case]]
CASES: dict[str, Setup] = {}


def case(name: str) -> Callable[[Setup], Setup]:
    def register(setup: Setup) -> Setup:
        CASES[name] = setup
        return setup

    return register


def test_every_script_has_a_case() -> None:
    assert sorted(set(SCRIPTS) - set(CASES)) == [], "add a case for each new script to this file"
    assert sorted(set(CASES) - set(SCRIPTS)) == []


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RedisClient]:
    r = create_redis(settings.require("redis_url"))
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture
def nodes(servers: Servers) -> Iterator[list[redis.Redis]]:
    found = [redis.Redis.from_url(url, decode_responses=True) for url in servers.redis_nodes]
    yield found
    for r in found:
        r.close()


def _state(nodes: list[redis.Redis]) -> dict[str, Any]:
    """Every key of every primary with its value (TTLs aside)."""
    out: dict[str, Any] = {}
    for r in nodes:
        for key in r.keys("*"):
            kind = r.type(key)
            value: Any
            if kind == "string":
                value = r.get(key)
            elif kind == "hash":
                value = r.hgetall(key)
            elif kind == "set":
                value = sorted(r.smembers(key))
            elif kind == "zset":
                value = r.zrange(key, 0, -1, withscores=True)
            elif kind == "list":
                value = r.lrange(key, 0, -1)
            elif kind == "stream":
                groups = [
                    {k: g[k] for k in ("name", "pending", "last-delivered-id")} for g in r.xinfo_groups(key)
                ]
                value = (r.xrange(key), groups)
            else:
                value = kind
            out[str(key)] = value
    return out


def _equal_but_first(first: Any, second: Any) -> None:
    """The same answer but its first element (the Redis clock)."""
    assert second[1:] == first[1:]


def _counted_again(by: int = 1) -> Check:
    def check(before: Any, after: Any) -> None:
        assert int(after) == int(before) + by

    return check


def _rescored(before: Any, after: Any) -> None:
    """A journal announced again: the same members, scored by the later clock."""
    assert [m for m, _ in after] == [m for m, _ in before]
    assert all(b <= a for (_, b), (_, a) in zip(before, after, strict=True))


# seckill ---------------------------------------------------------------------------------------------------------

EVENT = 1
NOW_MS = int(time.time() * 1000)


def _prewarm_args(k: sk.EventKeys, buckets: int = 1, stock: int = 10, change: str = "c1") -> list[EncodableT]:
    return [sk.GROUP, "SKU", "Phone", 100, stock, NOW_MS - 60_000, NOW_MS + 3_600_000, 2, 900, buckets,
            k.bucket, 0, 0, "ab" if k.bucket == 0 else "", change]  # fmt: skip


async def _warm(r: RedisClient, buckets: int = 1, stock: int = 10) -> None:
    for bucket in range(buckets):
        k = sk.event_keys(EVENT, bucket)
        await seckill_scripts.PREWARM(r, k.prewarm(), _prewarm_args(k, buckets, stock))


async def _pending_entry(r: RedisClient, order_id: str) -> str:
    k = sk.event_keys(EVENT)
    entry = str(await r.xadd(k.stream, {"o": order_id, "u": "u1", "q": "1", "r": "1", "t": str(NOW_MS)}))
    await r.hset(k.queued, order_id, "u1")
    await r.xreadgroup(sk.GROUP, "w1", {k.stream: ">"}, count=10)
    return entry


@case("seckill_prewarm")
async def _prewarm(r: RedisClient) -> Case:
    k = sk.event_keys(EVENT)
    return Case(k.prewarm(), _prewarm_args(k), again=_expect(lambda first, second: (first, second) == (1, 0)))


def _expect(holds: Callable[[Any, Any], bool]) -> Check:
    """The second answer is what the script's Retry line states, given the first."""

    def check(first: Any, second: Any) -> None:
        assert holds(first, second), (first, second)

    return check


@case("seckill_adjust")
async def _adjust(r: RedisClient) -> Case:
    await _warm(r)
    k = sk.event_keys(EVENT)
    return Case(k.adjust(), [5, NOW_MS + 7_200_000, sk.STOCK_BACK_CHANNEL, EVENT, "c2"])


@case("seckill_view")
async def _view(r: RedisClient) -> Case:
    await _warm(r)
    return Case(sk.event_keys(EVENT).view(), ["view"], again=_equal_but_first)


@case("seckill_snapshot")
async def _snapshot(r: RedisClient) -> Case:
    await _warm(r)
    return Case(sk.event_keys(EVENT).snapshot(), ["snapshot"])


@case("seckill_reserve")
async def _reserve(r: RedisClient) -> Case:
    await _warm(r)
    k = sk.event_keys(EVENT)
    purchases = [f"{new_order_id(EVENT)}\nu{i}\n10.0.0.1\nkey{i}" for i in range(3)]
    head: list[EncodableT] = [10, 1000, sk.RATE_WINDOW_MS, k.user_rate_prefix, k.ip_rate_prefix, sk.REPLAY_MS]
    return Case(k.reserve(purchases[0].partition("\n")[0]), [*head, *purchases])


@case("seckill_take")
async def _take(r: RedisClient) -> Case:
    await _warm(r, buckets=2)
    order_id = new_order_id(EVENT)
    return Case(
        sk.event_keys(EVENT, 1).take(), [order_id, "u1", "1", "0"],
        again=_expect(lambda first, second: (first[0], second) == ("ok", ["replay", order_id])),
    )  # fmt: skip


@case("seckill_hold")
async def _hold(r: RedisClient) -> Case:
    await _warm(r, buckets=2)
    k, order_id = sk.event_keys(EVENT), new_order_id(EVENT)
    await r.hset(k.holds, order_id, f"u1\nkey1\n{NOW_MS}\n1")
    await r.hset(k.users, "u1", 1)
    await r.hset(k.idem, "u1\nkey1", order_id)
    return Case(
        k.hold(), ["release", order_id], again=_expect(lambda first, second: (first, second) == (1, 0))
    )


@case("seckill_void")
async def _void(r: RedisClient) -> Case:
    await _warm(r, buckets=2)
    return Case(sk.event_keys(EVENT, 1).void(), [new_order_id(EVENT)])


@case("seckill_giveback")
async def _giveback(r: RedisClient) -> Case:
    await _warm(r)
    k = sk.event_keys(EVENT)
    await r.hset(k.users, "u1", 1)
    await r.hset(k.meta, "stock", 9)
    return Case(
        k.giveback(), [sk.STOCK_BACK_CHANNEL, EVENT, "both", new_order_id(EVENT), "u1"],
        again=_expect(lambda first, second: (first, second) == (1, 0)),
    )  # fmt: skip


@case("seckill_ack")
async def _ack(r: RedisClient) -> Case:
    await _warm(r)
    order_id = new_order_id(EVENT)
    entry = await _pending_entry(r, order_id)
    return Case(
        sk.event_keys(EVENT).ack(), [sk.GROUP, entry, order_id],
        again=_expect(lambda first, second: (first, second) == (1, 0)),
    )  # fmt: skip


@case("seckill_deadletter")
async def _deadletter(r: RedisClient) -> Case:
    await _warm(r)
    entry = await _pending_entry(r, new_order_id(EVENT))
    return Case(
        sk.event_keys(EVENT).dead_letter(), [sk.GROUP, entry, "bad data", 1],
        again=_expect(lambda first, second: (bool(first), second) == (True, None)),
    )  # fmt: skip


@case("seckill_requeue")
async def _requeue(r: RedisClient) -> Case:
    await _warm(r)
    k = sk.event_keys(EVENT)
    entry = await _pending_entry(r, new_order_id(EVENT))
    dead = await seckill_scripts.dead_letter(r, k, entry, "bad data", 1)
    assert dead is not None
    return Case(
        k.requeue(), [dead], again=_expect(lambda first, second: (bool(first), second) == (True, None))
    )


@case("seckill_repair")
async def _repair(r: RedisClient) -> Case:
    await _warm(r)
    repair: Script = SCRIPTS["seckill_repair"]
    k = sk.event_keys(EVENT)
    # Its keys, in its contract's order: those of one bucket.
    repair_keys = [
        k.meta,
        k.users,
        k.seq,
        k.queued,
        k.dead_orders,
        k.returned,
        k.quota_returned,
        k.holds,
        k.taken,
    ]
    assert repair.name == "seckill_repair"
    return Case(repair_keys, ["read"])


# sso ---------------------------------------------------------------------------------------------------------------

USER = "u1"
IDLE_MS, ABSOLUTE_MS = 900_000, 43_200_000


async def _session(r: RedisClient, sid: str, *, refresh: str = "d0", max_sessions: int = 5) -> None:
    await sso_scripts.open_session(
        r, user_id=USER, session_id=sid, now_ms=NOW_MS, idle_ms=IDLE_MS, absolute_ms=ABSOLUTE_MS,
        max_sessions=max_sessions, roles="shopper",
        fields={"user_id": USER, "username": "alice", "created_at": NOW_MS, "last_seen_at": NOW_MS,
                "absolute_expires_at": NOW_MS + ABSOLUTE_MS, "ip": "10.0.0.1", "user_agent": "test",
                "refresh": refresh, "cookie": "k0"},
    )  # fmt: skip


_ANNOUNCE: list[EncodableT] = [sso_keys.REVOKED_JOURNAL_KEEP_S * 1000, sso_keys.CHANGES_CHANNEL]


@case("sso_session_open")
async def _session_open(r: RedisClient) -> Case:
    # The user already has one of the two sessions allowed: a retry that counted the new one as another would
    # end this one.
    await _session(r, "s0", max_sessions=2)
    return Case(
        [sso_keys.session_index(USER), sso_keys.session(USER, "s1"), sso_keys.account_change(USER),
         sso_keys.journal(USER)],
        [sso_keys.session_prefix(USER), "s1", NOW_MS + 1, IDLE_MS, ABSOLUTE_MS, 2, *_ANNOUNCE, "shopper",
         "user_id", USER, "absolute_expires_at", NOW_MS + ABSOLUTE_MS, "refresh", "d1"],
    )  # fmt: skip


@case("sso_session_touch")
async def _session_touch(r: RedisClient) -> Case:
    await _session(r, "s1")
    keys, args = sso_scripts.token_touch(USER, "s1", "jti1", now_ms=NOW_MS + 5, idle_ms=IDLE_MS, version=0)
    return Case(list(keys), list(args))


@case("sso_session_read")
async def _session_read(r: RedisClient) -> Case:
    await _session(r, "s1")
    keys, args = sso_scripts.session_read(
        USER, "s1", token_id="jti1", cookie_digest="", now_ms=NOW_MS + 5, idle_ms=IDLE_MS
    )
    return Case(list(keys), list(args))


@case("sso_cookie_touch")
async def _cookie_touch(r: RedisClient) -> Case:
    await _session(r, "s1")
    keys, args = sso_scripts.cookie_touch(USER, "s1", "k0", now_ms=NOW_MS + 5, idle_ms=IDLE_MS)
    return Case(
        list(keys), list(args), again=_expect(lambda first, second: first[0] == 1 and second == first)
    )


def _same_sessions(first: Any, second: Any) -> None:
    """The same sessions; the idle time left (the last field) counted down between the calls."""
    assert [row[:-1] for row in second] == [row[:-1] for row in first]
    assert all(0 <= a[-1] - b[-1] < 60_000 for a, b in zip(first, second, strict=True))


@case("sso_session_list")
async def _session_list(r: RedisClient) -> Case:
    await _session(r, "s1")
    await _session(r, "s2")
    return Case([sso_keys.session_index(USER)], [sso_keys.session_prefix(USER)], again=_same_sessions)


@case("sso_session_end")
async def _session_end(r: RedisClient) -> Case:
    await _session(r, "s1")
    return Case(
        [sso_keys.session_index(USER), sso_keys.journal(USER), sso_keys.call_answer(USER, "call1")],
        [sso_keys.session_prefix(USER), "one", "s1", *_ANNOUNCE, sso_keys.CALL_ANSWER_KEEP_S * 1000],
        again=_expect(lambda first, second: (first, second) == (["s1"], ["s1"])),
    )  # fmt: skip


@case("sso_session_revoke")
async def _session_revoke(r: RedisClient) -> Case:
    return Case(
        [sso_keys.revoked_token(USER, "jti1"), sso_keys.journal(USER)],
        [60_000, "jti1", *_ANNOUNCE],
        changed={sso_keys.journal(USER): _rescored},
    )


@case("sso_backchannel_scan")
async def _backchannel_scan(r: RedisClient) -> Case:
    shard = sso_keys.shard_of(USER)
    await r.zadd(sso_keys.journal(USER), {"s:s1": NOW_MS, "j:jti1": NOW_MS})
    await r.hset(sso_keys.oidc_session(USER, "s1"), mapping={"user_id": USER, "c:shop": NOW_MS})
    await r.zadd(sso_keys.oidc_expiries(shard), {"s1": NOW_MS + 3_600_000})
    return Case(
        [sso_keys.JOURNALS[shard], sso_keys.backchannel_cursor(shard), sso_keys.oidc_expiries(shard),
         sso_keys.backchannel_outbox(shard), sso_keys.backchannel_lease(shard)],
        ["w1", 10_000, sso_keys.oidc_session_prefix(shard), sso_keys.shard_user_prefix(shard), 500, 0, 200],
    )  # fmt: skip


def _newer_version(first: Any, second: Any) -> None:
    assert int(second[0]) > int(first[0]) and second[1:] == first[1:] == []


def _versioned(before: Any, after: Any) -> None:
    assert int(after["version"]) > int(before["version"])
    assert {k: v for k, v in after.items() if k != "version"} == {
        k: v for k, v in before.items() if k != "version"
    }


@case("sso_session_account")
async def _session_account(r: RedisClient) -> Case:
    await _session(r, "s1")
    journal = sso_keys.journal(USER)

    def announced_again(before: Any, after: Any) -> None:
        assert len(after) == len(before) + 1  # "u:<user>:<newer version>"

    return Case(
        [sso_keys.session_index(USER), sso_keys.account_change(USER), journal],
        [sso_keys.session_prefix(USER), USER, "roles", "admin shopper", sso_keys.ACCOUNT_CHANGE_KEEP_S * 1000,
         *_ANNOUNCE],
        again=_newer_version,
        changed={sso_keys.account_change(USER): _versioned, sso_keys.session(USER, "s1"): _versioned,
                 journal: announced_again},
    )  # fmt: skip


@case("sso_refresh")
async def _refresh(r: RedisClient) -> Case:
    await _session(r, "s1", refresh="d0" * 32)
    return Case(
        [sso_keys.session(USER, "s1"), sso_keys.session_index(USER), sso_keys.account_change(USER),
         sso_keys.journal(USER)],
        ["d0" * 32, "d1" * 32, NOW_MS + 10, IDLE_MS, "s1", 10_000, 8, 10, 60_000, *_ANNOUNCE],
        again=_expect(lambda first, second: (first[0] == 1 and second == first)),
    )  # fmt: skip


@case("sso_code_redeem")
async def _code_redeem(r: RedisClient) -> Case:
    # A retry must not look like a second redemption (which would revoke what the first issued).
    await _session(r, "s1")
    return Case(
        [sso_keys.auth_code(USER, "c0"), sso_keys.session(USER, "s1"), sso_keys.oidc_session(USER, "s1"),
         sso_keys.oidc_expiries(sso_keys.shard_of(USER)), sso_keys.journal(USER)],
        [NOW_MS + 10, IDLE_MS, "shop", code_scripts.redirect_digest("https://shop/cb"), "ch", "s1", "r1", "jti1",
         660_000, sso_keys.revoked_token(USER, ""), 960_000, *_ANNOUNCE, 86_400_000, USER,
         "shop", code_scripts.redirect_digest("https://shop/cb"), "ch", "S256", "openid", "n", NOW_MS + 60_000],
        again=_expect(lambda first, second: first[0] == 1 and second == first),
    )  # fmt: skip


_LIMITS = throttle_scripts.ThrottleLimits(5, 3, 900, 10, 86_400_000, 10, 100, 86_400, 60_000)


@case("sso_throttle_account")
async def _throttle_account(r: RedisClient) -> Case:
    # A retried attempt counts twice (errs on the side of locking): the account's and the pair's counters.
    return Case(
        [sso_keys.account_failures("alice"), sso_keys.account_network_failures("alice", "10.0.0.0"),
         sso_keys.devices("alice")],
        ["attempt", *list(_LIMITS)[:6], NOW_MS],
        changed={sso_keys.account_failures("alice"): _counted_again(),
                 sso_keys.account_network_failures("alice", "10.0.0.0"): _counted_again()},
    )  # fmt: skip


@case("sso_throttle_network")
async def _throttle_network(r: RedisClient) -> Case:
    return Case(
        [sso_keys.network_failures("10.0.0.0"), sso_keys.network_gate("10.0.0.0")],
        ["attempt", _LIMITS.network_failures, _LIMITS.day_s, _LIMITS.network_max_delay_ms, 0],
        changed={sso_keys.network_failures("10.0.0.0"): _counted_again()},
    )


@case("sso_signup")
async def _signup(r: RedisClient) -> Case:
    key = sso_keys.network_signups("10.0.0.0")
    return Case([key], [20, sso_keys.SIGNUP_WINDOW_S], changed={key: _counted_again()})


# degrade, customer_service ---------------------------------------------------------------------------------------


@case("degrade_set")
async def _degrade_set(r: RedisClient) -> Case:
    def unchanged(first: Any, second: Any) -> None:
        assert first[0] == "changed" and second == ["unchanged", first[2], first[2], first[3]]

    return Case(
        [degrade_keys.SWITCHES, degrade_keys.AUDIT, degrade_keys.PRESSURE],
        ["reviews", "mode", "shed", "drill", "ops", "ops", "", 0, 0, 0, 100, degrade_keys.CHANNEL, "open"],
        again=unchanged,
    )


_PLAN_EDIT_KEYS = [degrade_keys.PLANS, degrade_keys.SCHEDULE, degrade_keys.AUDIT]


@case("degrade_plan_edit")
async def _degrade_plan_edit(r: RedisClient) -> Case:
    # A put sent again finds the same plan: "unchanged", the same record, nothing written.
    return Case(
        _PLAN_EDIT_KEYS, ["put", "sale", "ops", "drill", "", 100, degrade_keys.CHANNEL, 64, "", "reviews=shed"],
        again=_expect(lambda first, second: first[0] == "changed" and second == ["unchanged", first[1]]),
    )  # fmt: skip


@case("degrade_plan_apply")
async def _degrade_plan_apply(r: RedisClient) -> Case:
    await SCRIPTS["degrade_plan_edit"](
        r,
        _PLAN_EDIT_KEYS,
        ["put", "sale", "ops", "drill", "", 100, degrade_keys.CHANNEL, 64, "", "reviews=shed"],
    )
    # Sent again with the same call id: the first answer without its message, nothing written or published.
    return Case(
        [degrade_keys.PLANS, degrade_keys.SCHEDULE, degrade_keys.SWITCHES, degrade_keys.AUDIT],
        ["apply", "sale", "ops", "drill", "call-1", 100, degrade_keys.CHANNEL, ""],
        again=_expect(lambda first, second: first[0] == "applied" and second == [*first[:4], ""]),
    )  # fmt: skip


async def _inbox_entry(r: RedisClient) -> str:
    await r.xgroup_create(cs_keys.INBOX, cs_keys.INBOX_GROUP, id="0", mkstream=True)
    entry = str(await r.xadd(cs_keys.INBOX, {"id": "m1", "body": "hello"}))
    await r.xreadgroup(cs_keys.INBOX_GROUP, "w1", {cs_keys.INBOX: ">"}, count=10)
    return entry


@case("customer_service_post")
async def _cs_post(r: RedisClient) -> Case:
    def queued_twice(before: Any, after: Any) -> None:
        entries, groups = after
        assert [fields for _, fields in entries] == [fields for _, fields in before[0]] * 2 and groups == []

    def other_entry(first: Any, second: Any) -> None:
        assert first[0] == second[0] == "ok" and first[1] != second[1]

    rate = cs_keys.rate("u1")
    # Counted twice and queued twice with the same message id: the writer's ON CONFLICT (id) keeps one row.
    return Case(
        [cs_keys.INBOX, rate], [5, 60_000, 100, "id", "m1", "body", "hello"], again=other_entry,
        changed={rate: _counted_again(), cs_keys.INBOX: queued_twice},
    )  # fmt: skip


@case("customer_service_dead_letter")
async def _cs_dead_letter(r: RedisClient) -> Case:
    entry = await _inbox_entry(r)
    return Case(
        [cs_keys.INBOX, cs_keys.DEAD_LETTERS], [cs_keys.INBOX_GROUP, entry, "bad", 100],
        again=_expect(lambda first, second: (bool(first), second) == (True, None)),
    )  # fmt: skip


@case("customer_service_requeue")
async def _cs_requeue(r: RedisClient) -> Case:
    entry = await _inbox_entry(r)
    dead = await SCRIPTS["customer_service_dead_letter"](
        r, [cs_keys.INBOX, cs_keys.DEAD_LETTERS], [cs_keys.INBOX_GROUP, entry, "bad", 100]
    )
    return Case(
        [cs_keys.DEAD_LETTERS, cs_keys.INBOX], [dead],
        again=_expect(lambda first, second: (bool(first), second) == (True, None)),
    )  # fmt: skip


@case("reviews_cache_summary")
async def _reviews_cache_summary(r: RedisClient) -> Case:
    await r.set(reviews_keys.summary("SKU-1"), b'{"count": 2}')
    return Case([reviews_keys.summary("SKU-1")], [b'{"count": 3}', 3, 60_000])


# After every case: the parameters are read when the decorator runs.
@pytest.mark.parametrize("name", sorted(CASES))
async def test_a_script_sent_twice(name: str, client: RedisClient, nodes: list[redis.Redis]) -> None:
    script = SCRIPTS[name]
    made = await CASES[name](client)
    first = await script(client, made.keys, made.args)
    before = _state(nodes)
    second = await script(client, made.keys, made.args)
    after = _state(nodes)
    if made.again is None:
        assert second == first
    else:
        made.again(first, second)
    for key, check in made.changed.items():
        check(before.pop(key, None), after.pop(key, None))
    assert after == before

"""Redis refusing writes (issue 17): out of memory (maxmemory with noeviction) and AOF write errors (a full
disk). Purchases answer 503 `unavailable`, never 500, and nothing is half-written: the reservation script
takes no stock, counts nobody and queues nothing when its first write is refused (a script without flags is
refused at its first write when Redis was out of memory before it started; once it wrote, it runs to the end).
SSO login and refresh answer 503 too. Once Redis takes writes again, purchases work and every 202 is an order.

Each test runs a private redis-server (its settings are changed, its disk filled): the cluster pass adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devstack.redis import RedisServer
from kit.settings import Settings
from peak.app import create_app
from seckill import keys
from tests.conftest import TEST_REDIS
from tests.seckill.conftest import (
    PASSWORD,
    SALE_ENV,
    MakeSettings,
    assert_balanced,
    drain,
    http_event,
    order_rows,
    seckill_context,
    shoppers,
)
from tests.support import lifespan_client

pytestmark = pytest.mark.skipif(TEST_REDIS == "cluster", reason="a private redis-server of its own")


def _books(r: redis.Redis, event_id: int) -> dict[str, Any]:
    """Everything a purchase writes in its bucket."""
    k = keys.event_keys(event_id)
    return {
        "meta": r.hmget(k.meta, ["stock", "reserved"]), "stream": r.xlen(k.stream), "users": r.hgetall(k.users),
        "seq": r.hgetall(k.seq), "queued": r.hlen(k.queued), "idem": r.hlen(k.idem),
    }  # fmt: skip


def _code(answer: httpx.Response) -> tuple[int, str]:
    try:
        return answer.status_code, str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return answer.status_code, answer.text[:80]


async def _buy(shop: httpx.AsyncClient, event_id: int, who: dict[str, str], key: str) -> httpx.Response:
    return await shop.post(f"/seckill/events/{event_id}/orders", headers={**who, "Idempotency-Key": key})


async def _refused_then_healed(
    settings: Settings, r: redis.Redis, refuse: Any, heal: Any, *, acked_on_disk: Any = None
) -> None:
    async with lifespan_client(create_app(settings)) as shop:
        users = await shoppers(shop, 40)
        login = (await shop.post("/sso/login", json={"username": "shopper0", "password": PASSWORD})).json()
        event_id = await http_event(shop, stock=100, per_user_limit=3)
        first = await _buy(shop, event_id, users[0], "k0")
        assert first.status_code == 202, first.text
        acked = {"k0": first.json()["order_id"]}
        before = _books(r, event_id)
        await asyncio.to_thread(refuse)
        # A burst of purchases (coalesced into script calls) while writes are refused.
        answers = await asyncio.gather(*(_buy(shop, event_id, u, f"k{i}") for i, u in enumerate(users)))
        codes = [_code(a) for a in answers]
        print(f"while Redis refused writes: {Counter(codes)}")
        refused = [c for c in codes if c[0] != 202]
        assert refused and all(c[0] == 503 and c[1] == "unavailable" for c in refused), codes
        for i, answer in enumerate(answers):
            if answer.status_code == 202:  # only a write Redis took before it noticed the full disk
                assert acked.setdefault(f"k{i}", answer.json()["order_id"]) == answer.json()["order_id"]
        if len(refused) == len(codes):
            # Nothing half-written: no stock taken, nobody counted, nothing queued, no key remembered.
            assert _books(r, event_id) == before
        login_again = await shop.post("/sso/login", json={"username": "shopper1", "password": PASSWORD})
        refresh = await shop.post(
            "/sso/token", data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
        )
        assert _code(login_again) == (503, "unavailable"), login_again.text
        assert _code(refresh) == (503, "unavailable"), refresh.text
        await asyncio.to_thread(heal)
        # Writes are taken again: every shopper retries with its key until its purchase went through.
        for _ in range(50):
            answers = await asyncio.gather(*(_buy(shop, event_id, u, f"k{i}") for i, u in enumerate(users)))
            if all(a.status_code == 202 for a in answers):
                break
            await asyncio.sleep(0.1)
        for i, answer in enumerate(answers):
            assert answer.status_code == 202, answer.text
            assert acked.setdefault(f"k{i}", answer.json()["order_id"]) == answer.json()["order_id"]
        refreshed = await shop.post(
            "/sso/token", data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
    if acked_on_disk is not None:
        # Every acknowledged order is in the AOF once it is fsynced (everysec): a restart would find it.
        await asyncio.sleep(1.5)
        on_disk = await asyncio.to_thread(acked_on_disk)
        assert [o for o in acked.values() if o not in on_disk] == []
    async with seckill_context(settings) as ctx:
        await drain(ctx, event_id)
        rows = await order_rows(ctx, event_id)
        assert sorted(str(row["order_id"]) for row in rows) == sorted(acked.values())
        await assert_balanced(ctx, event_id)


async def test_out_of_memory_answers_503_and_writes_nothing(
    make_settings: MakeSettings, own_redis: RedisServer
) -> None:
    r = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    try:
        await _refused_then_healed(
            make_settings(**SALE_ENV, PEAK_REDIS_URL=own_redis.url), r,
            refuse=lambda: r.config_set("maxmemory", 1), heal=lambda: r.config_set("maxmemory", 0),
        )  # fmt: skip
    finally:
        r.close()


def _aof_text(server: RedisServer) -> str:
    return "".join(p.read_bytes().decode(errors="replace") for p in server.data_dir.rglob("*.aof*"))


@contextlib.contextmanager
def _small_disk(path: Path, size_kib: int) -> Iterator[None]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full disk: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


async def test_aof_write_errors_answer_503_and_every_202_reaches_the_aof(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    with _small_disk(disk, 8192):
        server = RedisServer(disk / "redis")
        server.start()
        r = redis.Redis.from_url(server.url, decode_responses=True)
        filler = disk / "filler"

        def fill() -> None:
            # Every byte of the disk taken: the next AOF write fails (ENOSPC), and Redis refuses writes (MISCONF).
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            with contextlib.suppress(redis.ResponseError):
                r.set("peak-test-probe", "x" * 65536)  # a write of its own to meet the full disk
            for _ in range(100):
                if r.info("persistence")["aof_last_write_status"] == "err":
                    return
                time.sleep(0.05)
            raise AssertionError("Redis did not notice the full disk")

        def free() -> None:
            filler.unlink()
            for _ in range(100):
                if r.info("persistence")["aof_last_write_status"] == "ok":
                    return
                time.sleep(0.05)
            raise AssertionError("Redis did not take writes again")

        try:
            await _refused_then_healed(
                make_settings(**SALE_ENV, PEAK_REDIS_URL=server.url), r, refuse=fill, heal=free,
                acked_on_disk=lambda: _aof_text(server),
            )  # fmt: skip
        finally:
            r.close()
            server.stop()

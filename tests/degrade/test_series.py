"""The signals series: per-subsystem counts that match the requests made, a real process's history across its
restart, and a Redis outage the appending loop waits out while the process serves."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from degrade import keys, series
from devstack.processes import free_port
from devstack.redis import RedisServer
from kit.redis import RedisClient, create_redis
from kit.settings import Settings
from peak.app import create_app
from tests.degrade.conftest import ADMIN, AUTH, parts, put
from tests.support import kill_group, lifespan_client, start_peak, wait_http


async def _entries(redis: RedisClient) -> list[tuple[str, dict[str, str]]]:
    rows: list[tuple[str, dict[str, str]]] = await redis.xrange(keys.SERIES)  # type: ignore[assignment]
    return rows


def _counted(rows: list[tuple[str, dict[str, str]]], name: str, process: str | None = None) -> list[int]:
    """[requests, 5xx, shed] of ``name`` summed over the entries (of one process)."""
    total = [0, 0, 0]
    for _, fields in rows:
        if process is None or fields["p"] == process:
            for i, n in enumerate(orjson.loads(fields["subs"]).get(name, [0, 0, 0])):
                total[i] += n
    return total


async def _until(check: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def test_rates_per_subsystem_match_the_requests_made(
    degrade_settings: Callable[..., Settings], settings: Settings
) -> None:
    app = create_app(degrade_settings(PEAK_DEGRADE_SERIES_S="0.2"), parts())
    redis = create_redis(settings.require("redis_url"))
    try:
        async with lifespan_client(app) as c:
            # After the first entry every interval is a whole one.
            assert await _until(lambda: _entries(redis))
            opened = await asyncio.gather(*(c.get("/extras/things") for _ in range(150)))
            assert {r.json()["stale"] for r in opened} == {False}
            failed = await asyncio.gather(*(c.get("/shop/buy?fail=1") for _ in range(10)))
            assert {r.status_code for r in failed} == {500}
            assert (await put(c, "extras", mode="shed", reason="series test")).status_code == 200
            shed = await asyncio.gather(*(c.get("/extras/things") for _ in range(50)))
            assert {r.headers["x-degraded"] for r in shed} == {"extras"}

            async def all_counted() -> bool:
                rows = await _entries(redis)
                return _counted(rows, "extras") == [200, 0, 50] and _counted(rows, "shop")[0] == 10

            assert await _until(all_counted), _counted(await _entries(redis), "extras")
            rows = await _entries(redis)
            assert _counted(rows, "shop") == [10, 10, 0]
            assert len({fields["p"] for _, fields in rows}) == 1
            # Boundaries shared by every process: each entry ends on a multiple of the interval.
            assert all(int(fields["at"]) % 200 == 0 for _, fields in rows)

            answer = await c.get("/degrade/series?minutes=5", headers=AUTH)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["interval_s"] == 0.2 and body["truncated"] is False
            ((pid, points),) = body["processes"].items()
            assert pid == rows[0][1]["p"] and all(len(p) == 6 for p in points)
            extras = body["subsystems"]["extras"]
            # Each rate is its entry's count over the time that entry measured (``dt``, about 0.2 s; a late
            # wake-up on a loaded machine makes one longer and the next shorter): times it, back to the counts.
            # (An entry written since ``rows`` were read counts none of these requests.)
            seconds = collections.defaultdict(float, {int(f["at"]): int(f["dt"]) / 1000 for _, f in rows})
            assert round(sum(p[1] * seconds[p[0]] for p in extras)) == 200
            assert round(sum(p[3] * seconds[p[0]] for p in extras)) == 50
            assert round(sum(p[2] * seconds[p[0]] for p in body["subsystems"]["shop"])) == 10
            assert [p[0] for p in extras] == sorted(p[0] for p in extras)
            # Only what is newer than last_id.
            later = (await c.get(f"/degrade/series?after={body['last_id']}", headers=AUTH)).json()
            assert all(p[0] > points[-1][0] for p in later["processes"].get(pid, []))
            assert later["last_id"] >= body["last_id"]
            # What a hostile client sends: 422 or 401, never a 500.
            for query in ("minutes=0", "minutes=121", "minutes=x", "after=abc", "after=1-2-3", "after=%00"):
                bad = await c.get(f"/degrade/series?{query}", headers=AUTH)
                assert bad.status_code == 422, (query, bad.text)
            assert (await c.get("/degrade/series")).status_code == 401
            wrong = await c.get("/degrade/series", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403
            # The same body for the console hub, in Python.
            direct = await series.read(redis, after=body["last_id"])
            assert set(direct) >= {"interval_s", "last_id", "processes", "subsystems"}
    finally:
        await redis.aclose()


@pytest.mark.slow
async def test_a_real_process_history_survives_its_restart_and_a_redis_outage(
    servers: object, tmp_path: Path
) -> None:
    private = RedisServer(tmp_path / "redis")
    private.start()
    env = {
        **servers.env(),  # type: ignore[attr-defined]
        "PEAK_REDIS_URL": private.url,
        "PEAK_ADMIN_TOKEN": ADMIN,
        "PEAK_WORKERS": "1",
        "PEAK_DEGRADE_SERIES_S": "0.2",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    redis = create_redis(private.url)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    proc = start_peak("serve", env={**env, "PEAK_PORT": str(port)}, log=logs[0])
    try:
        wait_http(f"{url}/readyz")
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(20):
                assert (await http.get("/reviews/SKU-S")).status_code == 200
            assert await _until(lambda: _counts_reach(redis, "reviews", 20))
            first = {fields["p"] for _, fields in await _entries(redis)}
            assert len(first) == 1
            kill_group(proc)
            # Back with two server processes sharing their Prometheus files, as under `peak up`.
            metrics_dir = tmp_path / "metrics"
            metrics_dir.mkdir()
            again = {
                **env,
                "PEAK_PORT": str(port),
                "PEAK_WORKERS": "2",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            }
            proc = start_peak("serve", env=again, log=logs[1])
            wait_http(f"{url}/readyz")

            async def three_processes() -> set[str]:
                ids = {fields["p"] for _, fields in await _entries(redis)}
                return ids if len(ids) == 3 else set()

            ids = await _until(three_processes)
            assert first < ids, ids
            second = ids - first
            body = await series.read(redis)
            assert set(body["processes"]) == ids
            # The stopped process is still in the history, before the new ones.
            old_end = body["processes"][next(iter(first))][-1][0]
            assert all(old_end < body["processes"][p][0][0] for p in second)
            assert sum(p[1] for p in body["subsystems"]["reviews"]) * 0.2 >= 15

            # A fleet-wide gauge is exported once, with Redis's figure, whichever process is scraped.
            event = {
                "sku": "SKU-S", "title": "Phone", "price": 100, "stock": 7, "ticket_required": False,
                "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2999-01-01T00:00:00Z",
            }  # fmt: skip
            made = await http.post("/seckill/events", json=event, headers=AUTH)
            assert made.status_code == 201, made.text
            line = f'peak_seckill_stock_left{{event="{made.json()["id"]}"}} 7.0'
            for _ in range(6):
                lines = (await http.get("/metrics")).text.splitlines()
                assert lines.count(line) == 1, [x for x in lines if x.startswith("peak_seckill")]

            private.stop()
            outage_at_ms = time.time() * 1000
            started = time.monotonic()
            while time.monotonic() - started < 3:
                assert (await http.get("/healthz")).status_code == 200
                switches = await http.get("/degrade/switches", headers=AUTH)
                assert switches.status_code == 200 and switches.json()["redis"] == "unreachable"
                scrape = await http.get("/metrics")
                assert scrape.status_code == 200 and "peak_requests_total" in scrape.text
                await asyncio.sleep(0.2)
            private.start()
            await redis.aclose()
            redis = create_redis(private.url)

            async def resumed() -> bool:
                rows = await _entries(redis)
                late = {f["p"] for _, f in rows if int(f["at"]) > outage_at_ms + 3000}
                return bool(late == second)

            assert await _until(resumed, timeout_s=10)
            # Nothing written before the outage was lost with the restart (AOF), the first process included.
            assert {fields["p"] for _, fields in await _entries(redis)} == ids
        text = logs[1].read_text()
        # Once per process and outage.
        assert text.count("degrade series: Redis unreachable") == 2, text[-3000:]
        assert "appending resumes" in text
    finally:
        kill_group(proc)
        await redis.aclose()
        private.stop()


async def _counts_reach(redis: RedisClient, name: str, n: int) -> bool:
    return _counted(await _entries(redis), name)[0] >= n

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from degrade import keys
from devstack.processes import free_port
from devstack.redis import RedisServer
from kit.redis import create_redis
from kit.settings import Settings
from peak.app import create_app
from tests.degrade.conftest import ADMIN, AUTH, parts, put
from tests.support import kill_group, lifespan_client, run_peak, start_peak, wait_http

pytestmark = pytest.mark.slow


def _reviews(listing: dict[str, object]) -> str:
    switches = listing["switches"]
    assert isinstance(switches, list)
    return str(next(s["effective"] for s in switches if s["name"] == "reviews"))


async def _others(ops: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Heartbeat records of every live process but this one (granian serves from child processes)."""
    status = (await ops.get("/degrade/status", headers=AUTH)).json()
    return [p for p in status["processes"] if p["pid"] != os.getpid()]


async def test_a_change_reaches_two_other_processes_within_a_second(
    degrade_settings: Callable[..., Settings], servers: object, tmp_path: Path
) -> None:
    settings = degrade_settings(PEAK_DEGRADE_HEARTBEAT_S="0.2")
    env = {
        **servers.env(),  # type: ignore[attr-defined]
        "PEAK_ADMIN_TOKEN": ADMIN,
        "PEAK_WORKERS": "1",
        "PEAK_DEGRADE_HEARTBEAT_S": "0.2",
        "PEAK_DEGRADE_SAMPLE_S": "0.1",
        # Pub/sub alone must do it: the safety-net resync is far slower than the 1 s promised.
        "PEAK_DEGRADE_RESYNC_S": "30",
    }
    ports = [free_port(), free_port()]
    procs = [
        start_peak("serve", env={**env, "PEAK_PORT": str(p)}, log=tmp_path / f"api{p}.log") for p in ports
    ]
    procs.append(start_peak("worker", env=env, log=tmp_path / "worker.log"))
    try:
        for p in ports:
            wait_http(f"http://127.0.0.1:{p}/readyz")
        async with httpx.AsyncClient(timeout=5) as http, lifespan_client(create_app(settings)) as ops:
            for _ in range(100):
                if sorted(p["role"] for p in await _others(ops)) == ["api", "api", "worker"]:
                    break
                await asyncio.sleep(0.1)
            urls = [f"http://127.0.0.1:{p}/degrade/switches" for p in ports]
            for url in urls:
                assert _reviews((await http.get(url, headers=AUTH)).json()) == "open"
            for mode in ("shed", "open", "shed"):
                changed = await put(ops, "reviews", mode=mode, reason="propagation test")
                assert changed.status_code == 200, changed.text
                start = time.monotonic()
                pending = set(urls)
                while pending and time.monotonic() - start < 1.0:
                    for url in list(pending):
                        if _reviews((await http.get(url, headers=AUTH)).json()) == mode:
                            pending.discard(url)
                    await asyncio.sleep(0.01)
                assert not pending, f"not {mode} within 1 s: {pending}"
            # The real processes answer for the shed subsystem with its header.
            gone = await http.post(
                f"http://127.0.0.1:{ports[0]}/reviews/SKU", json={"rating": 5, "text": "x"}
            )
            assert gone.status_code == 503 and gone.headers["x-degraded"] == "reviews"
            # Every live process, the worker too, reports in its heartbeat when it started obeying.
            audit = (await ops.get("/degrade/audit", headers=AUTH)).json()["entries"]
            changed_ms = int(audit[-1]["id"].split("-")[0])
            others: list[dict[str, Any]] = []
            for _ in range(50):
                others = await _others(ops)
                # A heartbeat record may predate the last change; wait for fresh ones.
                if all(p["applied_at_ms"].get("reviews", 0) >= changed_ms for p in others):
                    break
                await asyncio.sleep(0.1)
            assert len(others) == 3
            for record in others:
                assert record["modes"]["reviews"] == "shed" and record["redis"] == "ok"
                assert record["applied_at_ms"]["reviews"] - changed_ms < 1000, record
            api = next(p for p in others if p["role"] == "api")
            assert "inflight" in api["signals"] and api["controller"]["marks"]
    finally:
        for proc in procs:
            kill_group(proc)


async def test_redis_down_keeps_last_modes_and_resyncs_on_reconnect(
    degrade_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    private = RedisServer(tmp_path / "redis")
    private.start()
    try:
        settings = degrade_settings(PEAK_REDIS_URL=private.url)
        async with lifespan_client(create_app(settings, parts())) as c:
            assert (await put(c, "extras", mode="shed", reason="before the outage")).status_code == 200
            private.stop()
            await asyncio.sleep(1.0)
            status = (await c.get("/degrade/status", headers=AUTH)).json()
            assert status["this_process"]["redis"] == "unreachable"
            assert status["this_process"]["redis_error"]
            assert status["this_process"]["modes"]["extras"] == "shed"
            assert status["processes"] is None and "Redis" in status["processes_error"]
            still = await c.get("/extras/things")
            assert still.json() == {"stale": True} and still.headers["x-degraded"] == "extras"
            listing = (await c.get("/degrade/switches", headers=AUTH)).json()
            assert listing["redis"] == "unreachable"
            refused = await put(c, "extras", mode="open", reason="during the outage")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unreachable"

            private.start()
            # Changed behind the process's back (its subscription is not back yet, or missed the message).
            direct = create_redis(private.url)
            try:
                await direct.hset(keys.SWITCHES, mapping={"mode:extras": "open", "reason:extras": "restored"})
            finally:
                await direct.aclose()
            for _ in range(100):
                listing = (await c.get("/degrade/switches", headers=AUTH)).json()
                if listing["redis"] == "ok" and listing["modes"]["extras"] == "open":
                    break
                await asyncio.sleep(0.1)
            assert listing["redis"] == "ok" and listing["modes"]["extras"] == "open"
            assert "x-degraded" not in (await c.get("/extras/things")).headers
            # Scripts are loaded again transparently on the restarted server.
            assert (await put(c, "extras", mode="shed", reason="after the outage")).status_code == 200
    finally:
        private.stop()


def test_cli_lists_sets_and_audits(degrade_settings: Callable[..., Settings], servers: object) -> None:
    degrade_settings()
    env = servers.env()  # type: ignore[attr-defined]
    listed = run_peak("degrade", "ls", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "reviews" in listed.stdout and "sheddable" in listed.stdout and "sso" in listed.stdout
    refused = run_peak("degrade", "set", "seckill", "shed", "--reason", "drill", env=env)
    assert refused.returncode == 1 and "force" in refused.stderr
    forced = run_peak("degrade", "set", "seckill", "shed", "--reason", "drill", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert "seckill: set mode shed" in forced.stdout
    shed = run_peak("degrade", "set", "reviews", "shed", "--reason", "flash sale", env=env)
    assert shed.returncode == 0 and "now shed" in shed.stdout
    unknown = run_peak("degrade", "set", "nosuch", "shed", "--reason", "x", env=env)
    assert unknown.returncode == 1 and "no subsystem 'nosuch'" in unknown.stderr
    bad = run_peak("degrade", "set", "reviews", "off", "--reason", "x", env=env)
    assert bad.returncode == 2
    audit = run_peak("degrade", "audit", env=env)
    assert audit.returncode == 0
    lines = audit.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "seckill" in lines[0] and "ops" in lines[0] and "cli:" in lines[0] and "drill" in lines[0]
    assert "reviews" in lines[1] and "flash sale" in lines[1]
    retiered = run_peak(
        "degrade", "set", "reviews", "--tier", "sheddable_plus", "--reason", "campaign", env=env
    )
    assert retiered.returncode == 0 and "tier sheddable_plus" in retiered.stdout
    listing = run_peak("degrade", "ls", env=env).stdout
    assert any(
        line.split()[:4] == ["reviews", "sheddable_plus", "shed", "shed"] for line in listing.splitlines()
    )

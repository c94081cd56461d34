from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

import degrade.component
from degrade.board import Board
from degrade.controller import Marks
from degrade.settings import DegradeSettings
from degrade.signals import Sample
from kit.settings import Settings, SettingsError
from peak.app import components, create_app
from tests.degrade.conftest import AUTH, put, shop_component
from tests.support import lifespan_client

# Only in-flight requests and core p99 count here: the test process's own CPU and loop lag would be noise.
OVERLOAD_ENV = {
    "PEAK_DEGRADE_SAMPLE_S": "0.1",
    "PEAK_DEGRADE_WINDOW_S": "0.5",
    "PEAK_DEGRADE_HIGH_SAMPLES": "3",
    "PEAK_DEGRADE_LOW_SAMPLES": "5",
    "PEAK_DEGRADE_DWELL_S": "1",
    "PEAK_DEGRADE_STEP_S": "0.5",
    "PEAK_DEGRADE_QUIET_S": "0.3",
    "PEAK_DEGRADE_INFLIGHT_HIGH": "20",
    "PEAK_DEGRADE_INFLIGHT_LOW": "2",
    "PEAK_DEGRADE_P99_HIGH_MS": "150",
    "PEAK_DEGRADE_P99_LOW_MS": "50",
    "PEAK_DEGRADE_MIN_CALLS": "5",
    "PEAK_DEGRADE_LAG_HIGH_MS": "600000",
    "PEAK_DEGRADE_LAG_LOW_MS": "600000",
    "PEAK_DEGRADE_CPU_HIGH": "256",
    "PEAK_DEGRADE_CPU_LOW": "256",
    "PEAK_DEGRADE_ERROR_HIGH": "1",
    "PEAK_DEGRADE_ERROR_LOW": "1",
}


def _all_parts() -> list[object]:
    every = components()
    return [*every[:-1], shop_component(), every[-1]]


async def _audit(c: httpx.AsyncClient) -> list[tuple[str, str, str, str]]:
    entries = (await c.get("/degrade/audit", headers=AUTH)).json()["entries"]
    return [(e["name"], e["old"], e["new"], e["source"]) for e in entries]


async def _load(c: httpx.AsyncClient, stop: asyncio.Event, delay_s: float) -> None:
    while not stop.is_set():
        await c.get(f"/shop/buy?delay={delay_s}")


@contextlib.asynccontextmanager
async def _overload(c: httpx.AsyncClient, *, clients: int = 60, delay_s: float = 0.2) -> AsyncIterator[None]:
    """``clients`` callers of a slow core handler, one request after another, until the block ends."""
    stop = asyncio.Event()
    load = [asyncio.create_task(_load(c, stop, delay_s)) for _ in range(clients)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*load)


async def _wait_audit(c: httpx.AsyncClient, count: int, *, timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s * 10)):
        if len(await _audit(c)) >= count:
            return
        await asyncio.sleep(0.1)


async def test_overload_sheds_reviews_then_customer_service_and_restores_without_flapping(
    degrade_settings: Callable[..., Settings],
) -> None:
    settings = degrade_settings(**OVERLOAD_ENV)
    async with lifespan_client(create_app(settings, _all_parts())) as c:  # type: ignore[arg-type]
        # A slow core handler piles up 60 requests in flight.
        async with _overload(c):
            await _wait_audit(c, 2)
            during = await c.get("/reviews/SKU-1")
            assert during.headers.get("x-degraded") == "reviews"
            # Nothing else goes while the overload lasts: core tiers are never shed.
            await asyncio.sleep(1.5)
            assert await _audit(c) == [
                ("reviews", "open", "shed", "controller"),
                ("customer_service", "open", "shed", "controller"),
            ]
            status = (await c.get("/degrade/status", headers=AUTH)).json()["this_process"]
            assert status["signals"]["inflight"] > 20
            assert {
                "reviews": "shed",
                "customer_service": "shed",
                "sso": "open",
                "seckill": "open",
            }.items() <= (status["modes"].items())
        # Calm again: customer_service (the higher tier) comes back first, then reviews, once each.
        await _wait_audit(c, 4)
        await asyncio.sleep(2)
        trail = await _audit(c)
        assert trail == [
            ("reviews", "open", "shed", "controller"),
            ("customer_service", "open", "shed", "controller"),
            ("customer_service", "shed", "open", "controller"),
            ("reviews", "shed", "open", "controller"),
        ]
        entries = (await c.get("/degrade/audit", headers=AUTH)).json()["entries"]
        assert "inflight" in entries[0]["reason"] and "low mark" in entries[2]["reason"]
        assert entries[0]["by"].endswith(entries[0]["by"].split(":")[-1]) and ":api:" in entries[0]["by"]
        assert "x-degraded" not in (await c.get("/reviews/SKU-1")).headers


async def test_controller_leaves_ops_modes_alone(degrade_settings: Callable[..., Settings]) -> None:
    settings = degrade_settings(**OVERLOAD_ENV)
    async with lifespan_client(create_app(settings, _all_parts())) as c:  # type: ignore[arg-type]
        # Ops pin reviews open; the controller may only shed what is in auto mode.
        await put(c, "reviews", mode="open", reason="reviews must stay up tonight")
        async with _overload(c):
            await _wait_audit(c, 2)
        trail = await _audit(c)
        assert trail[:2] == [
            ("reviews", "auto", "open", "ops"),
            ("customer_service", "open", "shed", "controller"),
        ]
        assert not any(name == "reviews" and source == "controller" for name, *_, source in trail)


async def test_slow_core_latency_alone_trips_the_controller(
    degrade_settings: Callable[..., Settings],
) -> None:
    settings = degrade_settings(**{**OVERLOAD_ENV, "PEAK_DEGRADE_INFLIGHT_HIGH": "100000"})
    async with lifespan_client(create_app(settings, _all_parts())) as c:  # type: ignore[arg-type]
        # Few requests in flight, but each takes 0.3 s: the core p99 is far above its high mark.
        async with _overload(c, clients=5, delay_s=0.3):
            await _wait_audit(c, 1)
        entries = (await c.get("/degrade/audit", headers=AUTH)).json()["entries"]
        assert entries[0]["name"] == "reviews" and "p99_ms" in entries[0]["reason"]


def test_marks_are_checked(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match="PEAK_DEGRADE_P99_LOW_MS"):
        Marks.from_settings(
            make_settings(PEAK_DEGRADE_P99_LOW_MS="900", PEAK_DEGRADE_P99_HIGH_MS="500").of(DegradeSettings)
        )
    marks = Marks.from_settings(make_settings().of(DegradeSettings))
    calm = Sample(at=0, inflight=0, p99_ms=1, lag_ms=1, cpu=0.1, error_ratio=0, core_calls=100)
    assert marks.all_below(calm) and not marks.above(calm)
    busy = Sample(at=0, inflight=0, p99_ms=1, lag_ms=1, cpu=0.1, error_ratio=0.5, core_calls=100)
    assert marks.above(busy) == ["error_ratio 0.5 > 0.25"]


def test_a_component_with_an_unknown_tier_is_refused() -> None:
    from kit.component import Component

    with pytest.raises(ValueError, match="tier 'optional'"):
        Board.from_components([Component(name="x", tier="optional")], exclude="degrade")
    # degrade never lists itself: ops cannot lock themselves out of the switches.
    board = Board.from_components([degrade.component.component(), shop_component()], exclude="degrade")
    assert list(board.subsystems) == ["shop"]


async def test_core_errors_trip_the_controller(degrade_settings: Callable[..., Settings]) -> None:
    env = {**OVERLOAD_ENV, "PEAK_DEGRADE_ERROR_HIGH": "0.5", "PEAK_DEGRADE_ERROR_LOW": "0.1"}
    async with lifespan_client(create_app(degrade_settings(**env), _all_parts())) as c:  # type: ignore[arg-type]
        for _ in range(50):
            await asyncio.gather(*(c.get("/shop/buy?fail=1") for _ in range(10)))
            if await _audit(c):
                break
            await asyncio.sleep(0.05)
        entries = (await c.get("/degrade/audit", headers=AUTH)).json()["entries"]
        assert entries[0]["name"] == "reviews" and "error_ratio" in entries[0]["reason"]


async def test_a_calm_process_does_not_restore_what_a_busy_one_needs_shed(
    degrade_settings: Callable[..., Settings],
) -> None:
    # The busy process reports pressure every sample (0.1 s); on a loaded CI machine a gap of more than the
    # usual 0.3 s of quiet let the calm one restore a tier while the busy one still needed it shed.
    settings = degrade_settings(**{**OVERLOAD_ENV, "PEAK_DEGRADE_QUIET_S": "1.5"})
    async with (
        lifespan_client(create_app(settings, _all_parts())) as busy,  # type: ignore[arg-type]
        lifespan_client(create_app(settings, _all_parts())) as calm,  # type: ignore[arg-type]
    ):
        async with _overload(busy):
            await _wait_audit(calm, 2)
            # The calm process has been below every low mark far longer than M samples and the dwell time.
            await asyncio.sleep(2.5)
            assert len(await _audit(calm)) == 2
            decisions = (await calm.get("/degrade/status", headers=AUTH)).json()["this_process"]["controller"]
            assert any(d["status"] == "pressure" for d in decisions["decisions"])
        await _wait_audit(calm, 4)
        await asyncio.sleep(1)
        assert [(n, new) for n, _, new, _ in await _audit(calm)] == [
            ("reviews", "shed"),
            ("customer_service", "shed"),
            ("customer_service", "open"),
            ("reviews", "open"),
        ]


async def test_a_tier_changed_at_run_time_is_obeyed(degrade_settings: Callable[..., Settings]) -> None:
    async with lifespan_client(create_app(degrade_settings(**OVERLOAD_ENV), _all_parts())) as c:  # type: ignore[arg-type]
        # Ops make reviews core for tonight, and customer_service the lowest tier.
        await put(c, "reviews", tier="critical", reason="reviews campaign tonight")
        await put(c, "customer_service", tier="sheddable", reason="reviews campaign tonight")
        async with _overload(c):
            await _wait_audit(c, 3)
            await asyncio.sleep(1)
        trail = await _audit(c)
        assert trail[2] == ("customer_service", "open", "shed", "controller")
        assert [t for t in trail if t[3] == "controller" and t[0] != "customer_service"] == []


async def test_controller_can_be_turned_off(degrade_settings: Callable[..., Settings]) -> None:
    settings = degrade_settings(**OVERLOAD_ENV, PEAK_DEGRADE_CONTROLLER="0")
    async with lifespan_client(create_app(settings, _all_parts())) as c:  # type: ignore[arg-type]
        async with _overload(c):
            await asyncio.sleep(1.5)
            status = (await c.get("/degrade/status", headers=AUTH)).json()["this_process"]
        assert await _audit(c) == []
        # Still measured and reported, only no decisions.
        assert status["controller"] is None and status["signals"]["inflight"] > 20

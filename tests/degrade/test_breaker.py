from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from degrade.breaker import Breaker, BreakerConfig, BreakerOpen, Breakers
from degrade.client import breaker
from degrade.service import Degrade
from kit.context import open_context
from kit.settings import Settings
from tests.degrade.conftest import parts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(**config: float) -> tuple[Breaker, Clock]:
    clock = Clock()
    defaults: dict[str, float] = {"min_calls": 5, "window_s": 10, "open_s": 5, "half_open_probes": 2}
    return Breaker("jwks", BreakerConfig(**{**defaults, **config}), clock=clock), clock  # type: ignore[arg-type]


def _calls(b: Breaker, *, failed: int = 0, ok: int = 0, slow: int = 0) -> None:
    for _ in range(failed):
        b.acquire()
        b.record(failed=True, duration_s=0.01)
    for _ in range(ok):
        b.acquire()
        b.record(failed=False, duration_s=0.01)
    for _ in range(slow):
        b.acquire()
        b.record(failed=False, duration_s=b.config.slow_call_s + 0.1)


def test_stays_closed_below_min_calls_even_if_all_fail() -> None:
    b, _ = _breaker()
    _calls(b, failed=4)
    assert b.state == "closed"
    _calls(b, failed=1)
    assert b.state == "open" and b.trips == 1 and "5 of 5 calls failed" in b.last_trip_reason


def test_trips_on_error_ratio_only_when_reached() -> None:
    b, _ = _breaker(error_ratio=0.5)
    _calls(b, ok=6)
    _calls(b, failed=5)
    assert b.state == "closed"
    _calls(b, failed=1)  # 6 of 12
    assert b.state == "open"


def test_trips_on_slow_call_ratio() -> None:
    b, _ = _breaker(slow_ratio=0.6, slow_call_s=0.5)
    _calls(b, ok=2, slow=2)
    assert b.state == "closed"
    _calls(b, slow=1)  # 3 of 5 slow
    assert b.state == "open" and "slower than 0.5 s" in b.last_trip_reason


def test_old_calls_leave_the_window() -> None:
    b, clock = _breaker()
    _calls(b, failed=4)
    clock.now += 11
    _calls(b, ok=1, failed=1)
    assert b.state == "closed"


def test_open_fails_fast_then_half_open_probes_close_it() -> None:
    b, clock = _breaker(half_open_probes=2)
    _calls(b, failed=5)
    with pytest.raises(BreakerOpen) as caught:
        b.acquire()
    assert caught.value.status_code == 503 and caught.value.code == "circuit_open"
    assert caught.value.headers["Retry-After"] == "5"
    clock.now += 5
    assert b.state == "half_open"
    b.acquire()
    b.acquire()
    with pytest.raises(BreakerOpen):
        b.acquire()  # only the configured number of probes go through
    b.record(failed=False, duration_s=0.01)
    assert b.state == "half_open"
    b.record(failed=False, duration_s=0.01)
    assert b.state == "closed"
    # A fresh window: four failures are below min_calls again.
    _calls(b, failed=4)
    assert b.state == "closed"


def test_a_failed_or_slow_probe_opens_again() -> None:
    b, clock = _breaker(half_open_probes=3)
    _calls(b, failed=5)
    clock.now += 5
    b.acquire()
    b.record(failed=True, duration_s=0.01)
    assert b.state == "open" and b.trips == 2
    clock.now += 5
    b.acquire()
    b.record(failed=False, duration_s=b.config.slow_call_s)
    assert b.state == "open" and "slow" in b.last_trip_reason


def test_reconfigure_keeps_state_and_calls() -> None:
    b, clock = _breaker(error_ratio=0.9)
    _calls(b, ok=3, failed=3)
    assert b.state == "closed"
    b.reconfigure(BreakerConfig(error_ratio=0.5, min_calls=5, window_s=10, open_s=5, half_open_probes=2))
    assert b.state == "open"  # the same six calls, judged by the new ratio
    b.reconfigure(BreakerConfig(open_s=60, half_open_probes=1))
    clock.now += 30
    assert b.state == "open"  # still open: the timer kept running, the new open time applies
    clock.now += 30
    assert b.state == "half_open"
    b.acquire()
    b.record(failed=False, duration_s=0.01)
    assert b.state == "closed"


def test_bad_config_is_refused() -> None:
    for bad in (
        {"error_ratio": 0},
        {"slow_ratio": 1.5},
        {"min_calls": 0},
        {"half_open_probes": 0},
        {"open_s": 0},
    ):
        with pytest.raises(ValueError):
            BreakerConfig(**bad)


async def test_guard_counts_failures_and_frees_cancelled_probes() -> None:
    b, clock = _breaker(half_open_probes=1)
    for _ in range(5):
        with pytest.raises(RuntimeError):
            async with b.guard():
                raise RuntimeError("jwks down")
    assert b.state == "open"
    with pytest.raises(BreakerOpen):
        async with b.guard():
            pass
    clock.now += 5

    async def hang() -> None:
        async with b.guard():
            await asyncio.sleep(60)

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancelled probe gave its slot back: the breaker is not stuck half-open.
    assert b.state == "half_open"

    async def fetch() -> str:
        return "keys"

    assert await b.call(fetch) == "keys"
    assert b.state == "closed"


async def test_concurrent_probes_are_limited() -> None:
    b, clock = _breaker(half_open_probes=3)
    _calls(b, failed=5)
    clock.now += 5
    gate = asyncio.Event()
    passed = 0

    async def probe() -> str:
        nonlocal passed
        try:
            async with b.guard():
                passed += 1
                await gate.wait()
            return "ok"
        except BreakerOpen:
            return "rejected"

    tasks = [asyncio.create_task(probe()) for _ in range(50)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == 3 and results.count("rejected") == 47
    assert b.state == "closed"


def test_registry_shares_breakers_and_reconfigures_in_place() -> None:
    breakers = Breakers(BreakerConfig())
    jwks = breakers.get("jwks")
    _calls(jwks, failed=5)
    again = breakers.get("jwks", BreakerConfig(open_s=30))
    assert again is jwks and jwks.state == "open" and jwks.config.open_s == 30
    assert breakers.status()["jwks"]["state"] == "open"


async def test_process_breakers_use_settings_and_show_in_status(
    degrade_settings: Callable[..., Settings],
) -> None:
    settings = degrade_settings(PEAK_DEGRADE_BREAKER_PROBES="7", PEAK_DEGRADE_BREAKER_MIN_CALLS="2")
    async with open_context(settings, parts(), "api") as ctx:
        jwks = breaker(ctx, "jwks")
        assert jwks is breaker(ctx, "jwks") and jwks.config.half_open_probes == 7
        for _ in range(2):
            with pytest.raises(OSError):
                async with jwks.guard():
                    raise OSError("connection refused")
        reported = ctx.get(Degrade).status()["breakers"]["jwks"]
        assert reported["state"] == "open" and reported["trips"] == 1
        assert reported["last_trip_reason"] == "2 of 2 calls failed"

"""The degradation controller's settings (``PEAK_DEGRADE_*``): ``ctx.settings.of(DegradeSettings)``, read once
when the service starts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from kit.settings import SettingsError, setting

__all__ = ["DegradeSettings"]

# (low, high) fields of each signal's marks.
_MARKS = (
    ("inflight_low", "inflight_high"),
    ("p99_low_ms", "p99_high_ms"),
    ("lag_low_ms", "lag_high_ms"),
    ("cpu_low", "cpu_high"),
    ("error_low", "error_high"),
)


@dataclass(frozen=True, slots=True)
class DegradeSettings:
    resync_s: float = setting(
        "PEAK_DEGRADE_RESYNC_S", 0.5, "periodic resync of switch modes", low=0.05, high=60
    )
    controller: bool = setting(
        "PEAK_DEGRADE_CONTROLLER", True, "let the automatic controller shed `auto` subsystems"
    )
    sample_s: float = setting("PEAK_DEGRADE_SAMPLE_S", 1.0, "controller sample interval", low=0.02, high=60)
    window_s: float = setting(
        "PEAK_DEGRADE_WINDOW_S", 10.0, "sliding window of core p99 latency and error ratio", low=0.1, high=600
    )
    high_samples: int = setting(
        "PEAK_DEGRADE_HIGH_SAMPLES",
        3,
        "K: samples above a high mark before shedding a tier",
        low=1,
        high=1000,
    )
    low_samples: int = setting(
        "PEAK_DEGRADE_LOW_SAMPLES", 10, "M: samples below every low mark before restoring", low=1, high=10000
    )
    dwell_s: float = setting(
        "PEAK_DEGRADE_DWELL_S", 30.0, "least time a tier stays shed before it is restored", low=0, high=86400
    )
    step_s: float = setting(
        "PEAK_DEGRADE_STEP_S", 5.0, "least time between two automatic changes, fleet-wide", low=0, high=3600
    )
    quiet_s: float = setting(
        "PEAK_DEGRADE_QUIET_S",
        5.0,
        "no restore while any process reported pressure this recently",
        low=0,
        high=3600,
    )
    inflight_high: int = setting(
        "PEAK_DEGRADE_INFLIGHT_HIGH", 512, "in-flight requests per process: high mark", low=1, high=10000000
    )
    inflight_low: int = setting(
        "PEAK_DEGRADE_INFLIGHT_LOW", 128, "in-flight requests per process: low mark", low=0, high=10000000
    )
    p99_high_ms: float = setting(
        "PEAK_DEGRADE_P99_HIGH_MS", 500.0, "p99 latency of core routes: high mark", low=0.1, high=600000
    )
    p99_low_ms: float = setting(
        "PEAK_DEGRADE_P99_LOW_MS", 200.0, "p99 latency of core routes: low mark", low=0, high=600000
    )
    lag_high_ms: float = setting(
        "PEAK_DEGRADE_LAG_HIGH_MS", 200.0, "event-loop lag: high mark", low=0.1, high=600000
    )
    lag_low_ms: float = setting(
        "PEAK_DEGRADE_LAG_LOW_MS", 50.0, "event-loop lag: low mark", low=0, high=600000
    )
    cpu_high: float = setting(
        "PEAK_DEGRADE_CPU_HIGH", 0.95, "process CPU, fraction of one core: high mark", low=0.01, high=256
    )
    cpu_low: float = setting(
        "PEAK_DEGRADE_CPU_LOW", 0.7, "process CPU, fraction of one core: low mark", low=0, high=256
    )
    error_high: float = setting(
        "PEAK_DEGRADE_ERROR_HIGH",
        0.25,
        "5xx ratio of core answers (4xx left out): high mark",
        low=0.001,
        high=1,
    )
    error_low: float = setting(
        "PEAK_DEGRADE_ERROR_LOW", 0.05, "5xx ratio of core answers (4xx left out): low mark", low=0, high=1
    )
    min_calls: int = setting(
        "PEAK_DEGRADE_MIN_CALLS",
        20,
        "core calls in the window before p99 and error ratio count",
        low=1,
        high=1000000,
    )
    retry_after_s: int = setting(
        "PEAK_DEGRADE_RETRY_AFTER_S", 5, "Retry-After of a shed subsystem's 503", low=1, high=3600
    )
    heartbeat_s: float = setting(
        "PEAK_DEGRADE_HEARTBEAT_S",
        1.0,
        "process heartbeat interval (its record lives 3 intervals)",
        low=0.1,
        high=600,
    )
    audit_max: int = setting(
        "PEAK_DEGRADE_AUDIT_MAX", 100000, "audit entries kept (oldest trimmed)", low=100, high=100000000
    )
    schedule_s: float = setting(
        "PEAK_DEGRADE_SCHEDULE_S",
        0.25,
        "each API process checks for a scheduled plan that is due this often (one cheap script call)",
        low=0.05,
        high=60,
    )
    series_s: float = setting(
        "PEAK_DEGRADE_SERIES_S",
        2.0,
        "each API process appends its signals and per-subsystem counts to the series this often",
        low=0.1,
        high=60,
    )
    series_keep_s: float = setting(
        "PEAK_DEGRADE_SERIES_KEEP_S",
        7200.0,
        "signals series kept in Redis (older entries trimmed)",
        low=60,
        high=604800,
    )
    breaker_error_ratio: float = setting(
        "PEAK_DEGRADE_BREAKER_ERROR_RATIO", 0.5, "breaker trips at this failed-call ratio", low=0.01, high=1
    )
    breaker_slow_ratio: float = setting(
        "PEAK_DEGRADE_BREAKER_SLOW_RATIO", 0.5, "breaker trips at this slow-call ratio", low=0.01, high=1
    )
    breaker_slow_ms: float = setting(
        "PEAK_DEGRADE_BREAKER_SLOW_MS", 1000.0, "a call slower than this is slow", low=1, high=600000
    )
    breaker_min_calls: int = setting(
        "PEAK_DEGRADE_BREAKER_MIN_CALLS",
        5,
        "calls in the window before the breaker may trip",
        low=1,
        high=100000,
    )
    breaker_window_s: float = setting(
        "PEAK_DEGRADE_BREAKER_WINDOW_S", 10.0, "breaker statistics window", low=0.1, high=3600
    )
    breaker_open_s: float = setting(
        "PEAK_DEGRADE_BREAKER_OPEN_S", 5.0, "time open before half-open probes", low=0.01, high=3600
    )
    breaker_probes: int = setting(
        "PEAK_DEGRADE_BREAKER_PROBES", 3, "half-open probe calls that must succeed to close", low=1, high=1000
    )

    def check(self) -> None:
        # A low mark above its high mark leaves no calm band: the controller would shed and restore in turns.
        env = {f.name: f.metadata["env"] for f in fields(self)}
        for low, high in _MARKS:
            if getattr(self, low) > getattr(self, high):
                raise SettingsError(
                    f"{env[low]} ({getattr(self, low):g}) must not be above {env[high]} ({getattr(self, high):g})"
                )

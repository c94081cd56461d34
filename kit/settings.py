"""One typed settings object, read once from ``PEAK_*`` environment variables and validated at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Settings", "SettingsError"]


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable and is fit for one line."""


def _setting(
    env: str,
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    meta = {"env": env, "doc": doc, "low": low, "high": high, "choices": choices, "secret": secret}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    # Servers. Unset URLs make `peak up` start private servers under data_dir.
    redis_url: str | None = _setting(
        "PEAK_REDIS_URL",
        None,
        "Redis URL (redis://, rediss://, unix://); redis+cluster://host:port for Redis Cluster",
    )
    database_url: str | None = _setting("PEAK_DATABASE_URL", None, "PostgreSQL URL (postgresql://…)")
    host: str = _setting("PEAK_HOST", "127.0.0.1", "address the API server binds")
    port: int = _setting("PEAK_PORT", 8000, "port the API server binds", low=1, high=65535)
    workers: int = _setting("PEAK_WORKERS", os.cpu_count() or 1, "API server processes", low=1, high=256)
    background_workers: int = _setting(
        "PEAK_BACKGROUND_WORKERS", 1, "`peak worker` processes started by `peak up`", low=0, high=64
    )
    data_dir: str = _setting("PEAK_DATA_DIR", ".peak", "where `peak up` keeps private Redis/PostgreSQL data")
    public_url: str | None = _setting(
        "PEAK_PUBLIC_URL", None, "URL clients reach the API at; default http://HOST:PORT"
    )
    redis_pool_size: int = _setting(
        "PEAK_REDIS_POOL_SIZE", 256, "Redis connections per process", low=1, high=10000
    )
    db_pool_size: int = _setting(
        "PEAK_DB_POOL_SIZE", 10, "PostgreSQL connections per process", low=1, high=1000
    )
    log_json: bool = _setting("PEAK_LOG_JSON", False, "one JSON object per log line")
    log_level: str = _setting(
        "PEAK_LOG_LEVEL", "info", "log level", choices=("debug", "info", "warning", "error")
    )
    access_log: bool = _setting("PEAK_ACCESS_LOG", True, "one log line per request")
    admin_token: str | None = _setting(
        "PEAK_ADMIN_TOKEN", None, "bearer token accepted as an admin credential (ops scripts)", secret=True
    )
    secret_key: str | None = _setting(
        "PEAK_SECRET_KEY",
        None,
        "passphrase that encrypts private signing keys at rest (`peak up` generates one under data_dir)",
        secret=True,
    )

    bench_baseline: bool = _setting(
        "PEAK_BENCH_BASELINE", False, "mount the naive row-lock purchase that `peak bench` compares with"
    )

    # Scale out
    trusted_proxies: str | None = _setting(
        "PEAK_TRUSTED_PROXIES",
        None,
        "comma-separated addresses or networks of load balancers whose X-Forwarded-For names the client "
        "(`peak up --instances` sets 127.0.0.1)",
    )

    # SSO
    sso_issuer: str | None = _setting("PEAK_SSO_ISSUER", None, "JWT `iss`; default the public URL")
    sso_audience: str = _setting("PEAK_SSO_AUDIENCE", "peak", "JWT `aud` of access tokens")
    sso_algorithm: str = _setting(
        "PEAK_SSO_ALGORITHM", "RS256", "access token signature", choices=("RS256", "ES256", "EdDSA")
    )
    sso_access_token_ttl_s: int = _setting(
        "PEAK_SSO_ACCESS_TOKEN_TTL_S", 900, "access token lifetime", low=10, high=900
    )
    sso_idle_timeout_s: int = _setting(
        "PEAK_SSO_IDLE_TIMEOUT_S", 900, "session idle timeout (sliding)", low=1, high=86400
    )
    sso_absolute_timeout_s: int = _setting(
        "PEAK_SSO_ABSOLUTE_TIMEOUT_S", 43200, "session absolute lifetime, never extended", low=1, high=2592000
    )
    sso_max_sessions: int = _setting(
        "PEAK_SSO_MAX_SESSIONS", 5, "sessions per user; a login beyond ends the oldest", low=1, high=1000
    )
    sso_min_password_length: int = _setting(
        "PEAK_SSO_MIN_PASSWORD_LENGTH", 12, "shortest accepted password", low=8, high=128
    )
    sso_argon2_memory_kib: int = _setting(
        "PEAK_SSO_ARGON2_MEMORY_KIB", 19456, "argon2id memory cost", low=8, high=4194304
    )
    sso_argon2_time_cost: int = _setting(
        "PEAK_SSO_ARGON2_TIME_COST", 2, "argon2id iterations", low=1, high=100
    )
    sso_argon2_parallelism: int = _setting("PEAK_SSO_ARGON2_PARALLELISM", 1, "argon2id lanes", low=1, high=64)
    cookie_secure: bool = _setting("PEAK_COOKIE_SECURE", False, "mark the session cookie Secure")
    sso_throttle: bool = _setting("PEAK_SSO_THROTTLE", True, "throttle failed logins")
    sso_account_max_failures: int = _setting(
        "PEAK_SSO_ACCOUNT_MAX_FAILURES", 10, "failed logins per account per window", low=1, high=100000
    )
    sso_account_window_s: int = _setting(
        "PEAK_SSO_ACCOUNT_WINDOW_S", 900, "account failure window", low=1, high=86400
    )
    sso_ip_daily_failures: int = _setting(
        "PEAK_SSO_IP_DAILY_FAILURES", 100, "failed logins per client IP per day", low=1, high=10000000
    )

    # Seckill
    seckill_user_rate_per_s: int = _setting(
        "PEAK_SECKILL_USER_RATE_PER_S",
        10,
        "order attempts per user per second on one event",
        low=1,
        high=1000000,
    )
    seckill_ip_rate_per_s: int = _setting(
        "PEAK_SECKILL_IP_RATE_PER_S",
        1000,
        "order attempts per client IP per second on one event",
        low=1,
        high=10000000,
    )
    seckill_max_deliveries: int = _setting(
        "PEAK_SECKILL_MAX_DELIVERIES",
        5,
        "deliveries before an order message is dead-lettered",
        low=1,
        high=1000,
    )
    seckill_batch_size: int = _setting(
        "PEAK_SECKILL_BATCH_SIZE", 200, "order messages written per PostgreSQL batch", low=1, high=10000
    )
    seckill_claim_idle_ms: int = _setting(
        "PEAK_SECKILL_CLAIM_IDLE_MS",
        10000,
        "pending time before another worker reclaims",
        low=100,
        high=3600000,
    )
    seckill_sweep_interval_s: float = _setting(
        "PEAK_SECKILL_SWEEP_INTERVAL_S",
        1.0,
        "how often a worker cancels unpaid orders past pay_by",
        low=0.05,
        high=3600,
    )
    seckill_soldout_recheck_s: float = _setting(
        "PEAK_SECKILL_SOLDOUT_RECHECK_S",
        0.5,
        "how often each process rechecks the events it remembers as sold out",
        low=0.05,
        high=60,
    )
    seckill_coalesce_max: int = _setting(
        "PEAK_SECKILL_COALESCE_MAX",
        128,
        "purchases of one event sent in one script call (1 turns coalescing off)",
        low=1,
        high=1000,
    )

    # Degradation controller
    degrade_resync_s: float = _setting(
        "PEAK_DEGRADE_RESYNC_S", 0.5, "periodic resync of switch modes", low=0.05, high=60
    )
    degrade_controller: bool = _setting(
        "PEAK_DEGRADE_CONTROLLER", True, "let the automatic controller shed `auto` subsystems"
    )
    degrade_sample_s: float = _setting(
        "PEAK_DEGRADE_SAMPLE_S", 1.0, "controller sample interval", low=0.02, high=60
    )
    degrade_window_s: float = _setting(
        "PEAK_DEGRADE_WINDOW_S", 10.0, "sliding window of core p99 latency and error ratio", low=0.1, high=600
    )
    degrade_high_samples: int = _setting(
        "PEAK_DEGRADE_HIGH_SAMPLES",
        3,
        "K: samples above a high mark before shedding a tier",
        low=1,
        high=1000,
    )
    degrade_low_samples: int = _setting(
        "PEAK_DEGRADE_LOW_SAMPLES", 10, "M: samples below every low mark before restoring", low=1, high=10000
    )
    degrade_dwell_s: float = _setting(
        "PEAK_DEGRADE_DWELL_S", 30.0, "least time a tier stays shed before it is restored", low=0, high=86400
    )
    degrade_step_s: float = _setting(
        "PEAK_DEGRADE_STEP_S", 5.0, "least time between two automatic changes, fleet-wide", low=0, high=3600
    )
    degrade_quiet_s: float = _setting(
        "PEAK_DEGRADE_QUIET_S",
        5.0,
        "no restore while any process reported pressure this recently",
        low=0,
        high=3600,
    )
    degrade_inflight_high: int = _setting(
        "PEAK_DEGRADE_INFLIGHT_HIGH", 512, "in-flight requests per process: high mark", low=1, high=10000000
    )
    degrade_inflight_low: int = _setting(
        "PEAK_DEGRADE_INFLIGHT_LOW", 128, "in-flight requests per process: low mark", low=0, high=10000000
    )
    degrade_p99_high_ms: float = _setting(
        "PEAK_DEGRADE_P99_HIGH_MS", 500.0, "p99 latency of core routes: high mark", low=0.1, high=600000
    )
    degrade_p99_low_ms: float = _setting(
        "PEAK_DEGRADE_P99_LOW_MS", 200.0, "p99 latency of core routes: low mark", low=0, high=600000
    )
    degrade_lag_high_ms: float = _setting(
        "PEAK_DEGRADE_LAG_HIGH_MS", 200.0, "event-loop lag: high mark", low=0.1, high=600000
    )
    degrade_lag_low_ms: float = _setting(
        "PEAK_DEGRADE_LAG_LOW_MS", 50.0, "event-loop lag: low mark", low=0, high=600000
    )
    degrade_cpu_high: float = _setting(
        "PEAK_DEGRADE_CPU_HIGH", 0.95, "process CPU, fraction of one core: high mark", low=0.01, high=256
    )
    degrade_cpu_low: float = _setting(
        "PEAK_DEGRADE_CPU_LOW", 0.7, "process CPU, fraction of one core: low mark", low=0, high=256
    )
    degrade_error_high: float = _setting(
        "PEAK_DEGRADE_ERROR_HIGH", 0.25, "5xx ratio of core routes: high mark", low=0.001, high=1
    )
    degrade_error_low: float = _setting(
        "PEAK_DEGRADE_ERROR_LOW", 0.05, "5xx ratio of core routes: low mark", low=0, high=1
    )
    degrade_min_calls: int = _setting(
        "PEAK_DEGRADE_MIN_CALLS",
        20,
        "core calls in the window before p99 and error ratio count",
        low=1,
        high=1000000,
    )
    degrade_retry_after_s: int = _setting(
        "PEAK_DEGRADE_RETRY_AFTER_S", 5, "Retry-After of a shed subsystem's 503", low=1, high=3600
    )
    degrade_heartbeat_s: float = _setting(
        "PEAK_DEGRADE_HEARTBEAT_S",
        1.0,
        "process heartbeat interval (its record lives 3 intervals)",
        low=0.1,
        high=600,
    )
    degrade_audit_max: int = _setting(
        "PEAK_DEGRADE_AUDIT_MAX", 100000, "audit entries kept (oldest trimmed)", low=100, high=100000000
    )
    degrade_breaker_error_ratio: float = _setting(
        "PEAK_DEGRADE_BREAKER_ERROR_RATIO", 0.5, "breaker trips at this failed-call ratio", low=0.01, high=1
    )
    degrade_breaker_slow_ratio: float = _setting(
        "PEAK_DEGRADE_BREAKER_SLOW_RATIO", 0.5, "breaker trips at this slow-call ratio", low=0.01, high=1
    )
    degrade_breaker_slow_ms: float = _setting(
        "PEAK_DEGRADE_BREAKER_SLOW_MS", 1000.0, "a call slower than this is slow", low=1, high=600000
    )
    degrade_breaker_min_calls: int = _setting(
        "PEAK_DEGRADE_BREAKER_MIN_CALLS",
        5,
        "calls in the window before the breaker may trip",
        low=1,
        high=100000,
    )
    degrade_breaker_window_s: float = _setting(
        "PEAK_DEGRADE_BREAKER_WINDOW_S", 10.0, "breaker statistics window", low=0.1, high=3600
    )
    degrade_breaker_open_s: float = _setting(
        "PEAK_DEGRADE_BREAKER_OPEN_S", 5.0, "time open before half-open probes", low=0.01, high=3600
    )
    degrade_breaker_probes: int = _setting(
        "PEAK_DEGRADE_BREAKER_PROBES", 3, "half-open probe calls that must succeed to close", low=1, high=1000
    )
    reviews_page_size: int = _setting("PEAK_REVIEWS_PAGE_SIZE", 20, "reviews per page", low=1, high=200)
    reviews_cache_ttl_s: int = _setting(
        "PEAK_REVIEWS_CACHE_TTL_S",
        604800,
        "how long the cached summary served when shed lives",
        low=1,
        high=31536000,
    )
    cs_claim_idle_ms: int = _setting(
        "PEAK_CS_CLAIM_IDLE_MS",
        30000,
        "queued support message pending this long is taken over",
        low=100,
        high=3600000,
    )

    def public_base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def issuer(self) -> str:
        return self.sso_issuer or self.public_base_url()

    def require(self, name: str) -> str:
        """The value of an optional setting that this command needs, or a SettingsError naming it."""
        value = getattr(self, name)
        if value is None or value == "":
            env = _META[name]["env"]
            raise SettingsError(f"{env} is not set: {_META[name]['doc']}")
        return str(value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            meta = f.metadata
            raw = environ.get(meta["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(meta, _HINTS[f.name], raw.strip())
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        if self.sso_absolute_timeout_s < self.sso_idle_timeout_s:
            raise SettingsError(
                "PEAK_SSO_ABSOLUTE_TIMEOUT_S must be at least PEAK_SSO_IDLE_TIMEOUT_S "
                f"({self.sso_absolute_timeout_s} < {self.sso_idle_timeout_s})"
            )
        for name in ("redis_url", "database_url"):
            url = getattr(self, name)
            if url is not None and "://" not in url:
                raise SettingsError(f"{_META[name]['env']} must be a URL, got {url!r}")

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(variable, type, default, meaning) for every setting, for `peak settings` and the README."""
        rows = []
        for f in fields(cls):
            hint = _HINTS[f.name].replace(" | None", "")
            default = "" if f.default is None else str(f.default)
            if f.name == "workers":
                default = "CPU cores"
            rows.append((f.metadata["env"], hint, default, f.metadata["doc"]))
        return rows


def _parse(meta: Mapping[str, Any], hint: str, raw: str) -> Any:
    env = meta["env"]
    kind = hint.replace(" | None", "")
    value: Any
    if kind == "bool":
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{env} must be 1/0, true/false, yes/no or on/off, got {raw!r}")
    if kind == "int":
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{env} must be a whole number, got {raw!r}") from None
    elif kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{env} must be a number, got {raw!r}") from None
    else:
        value = raw
    if meta["choices"] and value not in meta["choices"]:
        raise SettingsError(f"{env} must be one of {', '.join(meta['choices'])}, got {raw!r}")
    if meta["low"] is not None and value < meta["low"]:
        raise SettingsError(f"{env} must be at least {meta['low']:g}, got {raw!r}")
    if meta["high"] is not None and value > meta["high"]:
        raise SettingsError(f"{env} must be at most {meta['high']:g}, got {raw!r}")
    return value


_HINTS: dict[str, str] = {name: str(hint) for name, hint in Settings.__annotations__.items()}
_META: dict[str, Mapping[str, Any]] = {f.name: f.metadata for f in fields(Settings)}

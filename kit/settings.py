"""Typed settings read once from ``PEAK_*`` environment variables: the kit's own, and one section per subsystem.

A section is a frozen dataclass whose fields are made by :func:`setting` (``sso/settings.py``, ...). The kit
never names a section: ``Settings.of(SsoSettings)`` reads one from the same environment (once per process), and
the composition root hands every section to ``Settings.from_env(sections=...)`` so that a bad value fails at
start, naming its variable, and to ``Settings.describe`` for `peak settings` and the README table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from kit.access_log import BUFFER_LINES, SAMPLE

__all__ = ["Settings", "SettingsError", "describe", "load", "setting"]

S = TypeVar("S")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable and is fit for one line."""


def setting(
    env: str,
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    secret: bool = False,
    default_doc: str = "",
) -> Any:
    """A field of a settings dataclass: its variable, default, meaning and bounds (``default_doc`` shows a
    computed default in `peak settings`)."""
    meta = {"env": env, "doc": doc, "low": low, "high": high, "choices": choices, "secret": secret,
            "default_doc": default_doc}  # fmt: skip
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    # Servers. Unset URLs make `peak up` start private servers under data_dir.
    redis_url: str | None = setting(
        "PEAK_REDIS_URL",
        None,
        "Redis URL (redis://, rediss://, unix://); redis+cluster://host:port for Redis Cluster",
    )
    database_url: str | None = setting("PEAK_DATABASE_URL", None, "PostgreSQL URL (postgresql://…)")
    host: str = setting("PEAK_HOST", "127.0.0.1", "address the API server binds")
    port: int = setting("PEAK_PORT", 8000, "port the API server binds", low=1, high=65535)
    workers: int = setting(
        "PEAK_WORKERS", os.cpu_count() or 1, "API server processes", low=1, high=256, default_doc="CPU cores"
    )
    background_workers: int = setting(
        "PEAK_BACKGROUND_WORKERS", 1, "`peak worker` processes started by `peak up`", low=0, high=64
    )
    data_dir: str = setting("PEAK_DATA_DIR", ".peak", "where `peak up` keeps private Redis/PostgreSQL data")
    public_url: str | None = setting(
        "PEAK_PUBLIC_URL", None, "URL clients reach the API at; default http://HOST:PORT"
    )
    redis_pool_size: int = setting(
        "PEAK_REDIS_POOL_SIZE", 256, "Redis connections per process", low=1, high=10000
    )
    db_pool_size: int = setting(
        "PEAK_DB_POOL_SIZE", 10, "PostgreSQL connections per process", low=1, high=1000
    )
    db_acquire_timeout_s: float = setting(
        "PEAK_DB_ACQUIRE_TIMEOUT_S",
        2.0,
        "longest wait of a request for a PostgreSQL connection (a free one from the pool, or a new one "
        "connected; any process's connect timeout): while PostgreSQL is down or saturated, a request that "
        "needs it answers 503 `unavailable` within about this",
        low=0.1,
        high=60,
    )
    outage_retry_max_s: float = setting(
        "PEAK_OUTAGE_RETRY_MAX_S",
        5.0,
        "longest pause of a background loop between tries while PostgreSQL or Redis is unreachable (the "
        "pause doubles from 0.1 s up to this); also how late a loop may resume once the store is back",
        low=0.1,
        high=300,
    )
    log_json: bool = setting("PEAK_LOG_JSON", False, "one JSON object per log line")
    log_level: str = setting(
        "PEAK_LOG_LEVEL", "info", "log level", choices=("debug", "info", "warning", "error")
    )
    access_log: bool = setting("PEAK_ACCESS_LOG", True, "one log line per request")
    access_log_buffer_lines: int = setting(
        "PEAK_ACCESS_LOG_BUFFER_LINES",
        BUFFER_LINES,
        f"access-log lines a process queues while its stderr is not read; beyond them one request in {SAMPLE} "
        "is still logged and the rest are counted in a warning",
        low=64,
        high=1048576,
    )
    admin_token: str | None = setting(
        "PEAK_ADMIN_TOKEN",
        None,
        "bearer token accepted as an admin credential (ops scripts); named `admin-token` in the audit",
        secret=True,
    )
    admin_tokens: str | None = setting(
        "PEAK_ADMIN_TOKENS",
        None,
        "comma-separated name=token pairs accepted as admin credentials; the audit names who by the name",
        secret=True,
    )
    max_body_bytes: int = setting(
        "PEAK_MAX_BODY_BYTES",
        65536,
        "largest request body accepted (413 `body_too_large`)",
        low=1024,
        high=1073741824,
    )
    body_read_timeout_s: float = setting(
        "PEAK_BODY_READ_TIMEOUT_S",
        10.0,
        "longest wait for a whole request body; a body still arriving is cut off (408 `request_timeout`)",
        low=0.1,
        high=3600,
    )
    secret_key: str | None = setting(
        "PEAK_SECRET_KEY",
        None,
        "passphrase that encrypts private signing keys at rest (`peak up` generates one under data_dir); keys "
        "derived from it also seal authorization codes, sign the sign-in form's CSRF tokens and derive refresh "
        "token successors, so every API instance needs the same one",
        secret=True,
    )

    # Scale out
    trusted_proxies: str | None = setting(
        "PEAK_TRUSTED_PROXIES",
        None,
        "comma-separated addresses or networks of load balancers whose X-Forwarded-For names the client "
        "(`peak up --instances` sets 127.0.0.1)",
    )

    def public_base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    # The environment the sections are read from (``of``); ``dataclasses.replace`` keeps it.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The sections read so far (see ``of``).
        object.__setattr__(self, "_sections", {})

    def require(self, name: str) -> str:
        """The value of an optional setting that this command needs, or a SettingsError naming it."""
        return require(self, name)

    def of(self, section: type[S]) -> S:
        """A subsystem's settings, read from the environment these settings came from (once)."""
        found: dict[type[Any], Any] = self._sections  # type: ignore[attr-defined]
        try:
            return found[section]  # type: ignore[no-any-return]
        except KeyError:
            found[section] = value = load(section, self.environ)
            return value

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, sections: Iterable[type[Any]] = ()
    ) -> Settings:
        """The kit's settings; every section given is read and checked now, so a bad value fails at start."""
        environ = dict(os.environ if environ is None else environ)
        settings = replace(load(cls, environ), environ=environ)
        for section in sections:
            settings.of(section)
        return settings

    def check(self) -> None:
        for name in ("redis_url", "database_url"):
            url = getattr(self, name)
            if url is not None and "://" not in url:
                raise SettingsError(f"{_env(type(self), name)} must be a URL, got {url!r}")

    @classmethod
    def describe(cls, sections: Iterable[type[Any]] = ()) -> list[tuple[str, str, str, str]]:
        """(variable, type, default, meaning) of the kit's settings and then of each section's."""
        rows = describe(cls)
        for section in sections:
            rows.extend(describe(section))
        return rows


def load(cls: type[S], environ: Mapping[str, str]) -> S:
    """A settings dataclass from ``PEAK_*`` variables; its ``check()`` (if any) judges values together."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if "env" not in f.metadata:
            continue
        raw = environ.get(f.metadata["env"])
        if raw is None or raw.strip() == "":
            continue
        values[f.name] = _parse(f.metadata, str(f.type), raw.strip())
    value = cls(**values)
    check = getattr(value, "check", None)
    if check is not None:
        check()
    return value


def require(section: object, name: str) -> str:
    """The value of an optional setting that a command needs, or a SettingsError naming its variable."""
    value = getattr(section, name)
    if value is None or value == "":
        f = next(f for f in fields(section) if f.name == name)  # type: ignore[arg-type]
        raise SettingsError(f"{f.metadata['env']} is not set: {f.metadata['doc']}")
    return str(value)


def describe(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(variable, type, default, meaning) for every setting of a settings dataclass."""
    rows = []
    for f in fields(cls):
        if "env" not in f.metadata:
            continue
        hint = str(f.type).replace(" | None", "")
        default = "" if f.default is None else str(f.default)
        if f.metadata.get("default_doc"):
            default = f.metadata["default_doc"]
        rows.append((f.metadata["env"], hint, default, f.metadata["doc"]))
    return rows


def _env(cls: type[Any], name: str) -> str:
    return str(next(f for f in fields(cls) if f.name == name).metadata["env"])


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

"""Single sign-on's settings (``PEAK_SSO_*``), read by the kit's machinery: ``ctx.settings.of(SsoSettings)``."""

from __future__ import annotations

from dataclasses import dataclass

from kit.settings import Settings, SettingsError, setting

__all__ = ["SsoSettings"]


@dataclass(frozen=True, slots=True)
class SsoSettings:
    issuer: str | None = setting("PEAK_SSO_ISSUER", None, "JWT `iss`; default the public URL")
    audience: str = setting("PEAK_SSO_AUDIENCE", "peak", "JWT `aud` of access tokens")
    algorithm: str = setting(
        "PEAK_SSO_ALGORITHM", "RS256", "access token signature", choices=("RS256", "ES256", "EdDSA")
    )
    access_token_ttl_s: int = setting(
        "PEAK_SSO_ACCESS_TOKEN_TTL_S", 900, "access token lifetime", low=10, high=900
    )
    idle_timeout_s: int = setting(
        "PEAK_SSO_IDLE_TIMEOUT_S", 900, "session idle timeout (sliding)", low=1, high=86400
    )
    absolute_timeout_s: int = setting(
        "PEAK_SSO_ABSOLUTE_TIMEOUT_S", 43200, "session absolute lifetime, never extended", low=1, high=2592000
    )
    max_sessions: int = setting(
        "PEAK_SSO_MAX_SESSIONS", 5, "sessions per user; a login beyond ends the oldest", low=1, high=1000
    )
    min_password_length: int = setting(
        "PEAK_SSO_MIN_PASSWORD_LENGTH", 12, "shortest accepted password", low=8, high=128
    )
    argon2_memory_kib: int = setting(
        "PEAK_SSO_ARGON2_MEMORY_KIB", 19456, "argon2id memory cost", low=8, high=4194304
    )
    argon2_time_cost: int = setting("PEAK_SSO_ARGON2_TIME_COST", 2, "argon2id iterations", low=1, high=100)
    argon2_parallelism: int = setting("PEAK_SSO_ARGON2_PARALLELISM", 1, "argon2id lanes", low=1, high=64)
    cookie_secure: bool = setting("PEAK_COOKIE_SECURE", False, "mark the session cookie Secure")
    throttle: bool = setting("PEAK_SSO_THROTTLE", True, "throttle failed logins")
    account_max_failures: int = setting(
        "PEAK_SSO_ACCOUNT_MAX_FAILURES", 10, "failed logins per account per window", low=1, high=100000
    )
    account_window_s: int = setting(
        "PEAK_SSO_ACCOUNT_WINDOW_S", 900, "account failure window", low=1, high=86400
    )
    ip_daily_failures: int = setting(
        "PEAK_SSO_IP_DAILY_FAILURES", 100, "failed logins per client IP per day", low=1, high=10000000
    )

    def check(self) -> None:
        if self.absolute_timeout_s < self.idle_timeout_s:
            raise SettingsError(
                "PEAK_SSO_ABSOLUTE_TIMEOUT_S must be at least PEAK_SSO_IDLE_TIMEOUT_S "
                f"({self.absolute_timeout_s} < {self.idle_timeout_s})"
            )

    def issuer_for(self, settings: Settings) -> str:
        """JWT ``iss``: PEAK_SSO_ISSUER, or else the public URL."""
        return self.issuer or settings.public_base_url()

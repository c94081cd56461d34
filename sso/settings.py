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
        "PEAK_SSO_ALGORITHM",
        "ES256",
        "access token signature (ID tokens: each client's, RS256 unless registered otherwise)",
        choices=("RS256", "ES256", "EdDSA"),
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
    cookie_secure: bool = setting(
        "PEAK_COOKIE_SECURE",
        False,
        "force the session cookie Secure (it is whenever PEAK_PUBLIC_URL is https)",
    )
    refresh_grace_s: int = setting(
        "PEAK_SSO_REFRESH_GRACE_S",
        10,
        "a refresh token presented again this long after its rotation gets the same answer (a retry), not reuse"
        " detection",
        low=0,
        high=60,
    )
    refresh_max: int = setting(
        "PEAK_SSO_REFRESH_MAX", 10, "refresh token rotations per session per window", low=1, high=10000
    )
    refresh_window_s: int = setting(
        "PEAK_SSO_REFRESH_WINDOW_S", 60, "window of PEAK_SSO_REFRESH_MAX", low=1, high=86400
    )
    throttle: bool = setting(
        "PEAK_SSO_THROTTLE", True, "throttle failed logins (per account, client network and device cookie)"
    )
    account_max_failures: int = setting(
        "PEAK_SSO_ACCOUNT_MAX_FAILURES",
        10,
        "failed logins per account per window; then the account's unknown devices wait",
        low=1,
        high=100000,
    )
    account_ip_max_failures: int = setting(
        "PEAK_SSO_ACCOUNT_IP_MAX_FAILURES",
        5,
        "failed logins per account from one client network per window; then that network's unknown devices"
        " wait",
        low=1,
        high=100000,
    )
    account_window_s: int = setting(
        "PEAK_SSO_ACCOUNT_WINDOW_S", 900, "account failure window", low=1, high=86400
    )
    ip_daily_failures: int = setting(
        "PEAK_SSO_IP_DAILY_FAILURES",
        100,
        "failed logins per client network (IPv4 address, IPv6 /64) per day; beyond, unknown devices wait a"
        " growing delay",
        low=1,
        high=10000000,
    )
    ip_max_delay_s: int = setting(
        "PEAK_SSO_IP_MAX_DELAY_S",
        60,
        "longest wait between unknown-device logins of a network past its daily budget",
        low=1,
        high=86400,
    )
    device_max_failures: int = setting(
        "PEAK_SSO_DEVICE_MAX_FAILURES",
        5,
        "failed logins a known device may make (none succeeding) before it is an unknown device again",
        low=1,
        high=1000,
    )
    device_ttl_s: int = setting(
        "PEAK_SSO_DEVICE_TTL_S",
        7776000,
        "a device stays known this long after its last successful login (the device cookie's lifetime)",
        low=60,
        high=63072000,
    )
    signups_per_ip_per_hour: int = setting(
        "PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR",
        20,
        "registrations per client network per hour; 0 turns the limit off (load tests)",
        low=0,
        high=10000000,
    )
    hash_queue: int = setting(
        "PEAK_SSO_HASH_QUEUE",
        256,
        "password hashes waiting per process beyond the pool; when full, login, registration and password"
        " change answer 503 `busy`",
        low=1,
        high=100000,
    )
    code_ttl_s: int = setting(
        "PEAK_SSO_CODE_TTL_S",
        60,
        "an OpenID Connect authorization code is redeemable this long after GET /sso/authorize issued it",
        low=1,
        high=600,
    )
    signin_form_ttl_s: int = setting(
        "PEAK_SSO_SIGNIN_FORM_TTL_S",
        600,
        "the sign-in page's form (its CSRF token) can be posted this long after the page was shown",
        low=10,
        high=86400,
    )
    backchannel_timeout_s: float = setting(
        "PEAK_SSO_BACKCHANNEL_TIMEOUT_S",
        3.0,
        "back-channel logout: how long one POST to a client's backchannel_logout_uri may take",
        low=0.1,
        high=30,
    )
    backchannel_retry_base_s: float = setting(
        "PEAK_SSO_BACKCHANNEL_RETRY_BASE_S",
        2.0,
        "back-channel logout: pause before the first retry, doubled each further retry (never under the"
        " timeout plus 1 s)",
        low=0.1,
        high=3600,
    )
    backchannel_retry_max_s: float = setting(
        "PEAK_SSO_BACKCHANNEL_RETRY_MAX_S",
        60.0,
        "back-channel logout: longest pause between two attempts",
        low=0.1,
        high=86400,
    )
    backchannel_attempts: int = setting(
        "PEAK_SSO_BACKCHANNEL_ATTEMPTS",
        12,
        "back-channel logout: attempts per delivery before it becomes a dead letter (`peak sso backchannel`)",
        low=1,
        high=1000,
    )
    backchannel_idle_check_s: float = setting(
        "PEAK_SSO_BACKCHANNEL_IDLE_CHECK_S",
        30.0,
        "back-channel logout: how often the workers look for OIDC sessions that ran out idle",
        low=0.1,
        high=3600,
    )
    revocation_feed: str | None = setting(
        "PEAK_SSO_REVOCATION_FEED",
        None,
        "URL of GET /sso/revocations: the validator of a process that is not the API (`peak worker`) learns"
        " revocations from this feed instead of Redis pub/sub (with PEAK_SSO_REVOCATION_FEED_CLIENT and _SECRET)",
    )
    revocation_feed_client: str | None = setting(
        "PEAK_SSO_REVOCATION_FEED_CLIENT",
        None,
        "client id for PEAK_SSO_REVOCATION_FEED (`peak sso add-client`)",
    )
    revocation_feed_secret: str | None = setting(
        "PEAK_SSO_REVOCATION_FEED_SECRET", None, "that client's secret", secret=True
    )

    def check(self) -> None:
        if self.revocation_feed and not (self.revocation_feed_client and self.revocation_feed_secret):
            raise SettingsError(
                "PEAK_SSO_REVOCATION_FEED needs PEAK_SSO_REVOCATION_FEED_CLIENT and PEAK_SSO_REVOCATION_FEED_SECRET"
            )
        if self.absolute_timeout_s < self.idle_timeout_s:
            raise SettingsError(
                "PEAK_SSO_ABSOLUTE_TIMEOUT_S must be at least PEAK_SSO_IDLE_TIMEOUT_S "
                f"({self.absolute_timeout_s} < {self.idle_timeout_s})"
            )

    def issuer_for(self, settings: Settings) -> str:
        """JWT ``iss``: PEAK_SSO_ISSUER, or else the public URL."""
        return self.issuer or settings.public_base_url()

"""Failed-login throttles: per account (window) and per client IP (daily budget), in one Lua script."""

from __future__ import annotations

from kit.lua import Scripts
from kit.redis import RedisClient
from kit.settings import Settings
from sso import keys
from sso.errors import raise_for_throttle

__all__ = ["LoginThrottle"]


class LoginThrottle:
    def __init__(self, redis: RedisClient, scripts: Scripts, settings: Settings) -> None:
        self._redis = redis
        self._script = scripts["sso_throttle"]
        self._on = settings.sso_throttle
        self._limits = (
            settings.sso_account_max_failures,
            settings.sso_account_window_s,
            settings.sso_ip_daily_failures,
        )

    async def attempt(self, username: str, ip: str) -> None:
        """Count an attempt against its account up front; TooManyRequests when a limit is reached."""
        if self._on:
            raise_for_throttle(await self._call("attempt", username, ip))

    async def failed(self, username: str, ip: str) -> None:
        if self._on:
            await self._call("failure", username, ip)

    async def succeeded(self, username: str, ip: str) -> None:
        if self._on:
            await self._call("success", username, ip)

    async def _call(self, mode: str, username: str, ip: str) -> list[int]:
        answer: list[int] = await self._script(
            self._redis, [keys.account_failures(username), keys.ip_failures(ip)], [mode, *self._limits]
        )
        return answer

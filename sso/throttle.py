"""Failed-login throttles: per account (window) and per client IP (daily budget), in one Lua script."""

from __future__ import annotations

from typing import Literal

from kit.redis import RedisClient
from sso import scripts
from sso.settings import SsoSettings

__all__ = ["LoginThrottle"]


class LoginThrottle:
    def __init__(self, redis: RedisClient, settings: SsoSettings) -> None:
        self._redis = redis
        self._on = settings.throttle
        self._limits = (settings.account_max_failures, settings.account_window_s, settings.ip_daily_failures)

    async def attempt(self, username: str, ip: str) -> None:
        """Count an attempt against its account up front; TooManyRequests when a limit is reached."""
        if self._on:
            await self._call("attempt", username, ip)

    async def failed(self, username: str, ip: str) -> None:
        if self._on:
            await self._call("failure", username, ip)

    async def succeeded(self, username: str, ip: str) -> None:
        if self._on:
            await self._call("success", username, ip)

    async def _call(self, mode: Literal["attempt", "failure", "success"], username: str, ip: str) -> None:
        await scripts.throttle(self._redis, mode, username, ip, self._limits)

"""The single sign-on hop's one round trip to its session: the cookie touch, or one plain read when this
process touched the session a moment ago, as the strict check does (``sso.client.session_check``).

The touch (``sso/lua/cookie_touch.lua``) checks the session and its cookie, slides it at most once a second
and answers when its password sign-in was (for ``max_age``). For the read window after a touch found the
session live, this process sends ``HMGET`` of the same fields instead, which answers every verdict the touch
would (ended, expired, another cookie) and slides nothing. Concurrent hops share one write either way; they
never share one command, even for one session: the cookie is an argument, and a forged one must not get the
answer of the real one sent with it.
"""

from __future__ import annotations

from typing import Any

from kit.coalescer import ScriptBatcher
from kit.reads import ReadBatcher
from kit.redis import RedisClient
from sso import scripts
from sso.client.session_check import RecentTouches
from sso.tokens import OpaqueToken

__all__ = ["CookieCheck"]

_FIELDS = ("absolute_expires_at", "cookie", "auth_time", "created_at")


class CookieCheck:
    def __init__(self, redis: RedisClient, *, idle_ms: int, remembered: int = 20_000) -> None:
        self._idle_ms = idle_ms
        self._touch = ScriptBatcher(redis, scripts.COOKIE_TOUCH)
        self._reads = ReadBatcher(redis)
        self._recent = RecentTouches(idle_ms, remembered)

    async def auth_time(self, cookie: OpaqueToken, now_ms: int) -> int:
        """When the live session of ``cookie`` was signed in to with its password (s); SessionEnded or
        InvalidCookie otherwise."""
        keys, args = scripts.cookie_touch(
            cookie.user_id, cookie.session_id, cookie.digest, now_ms=now_ms, idle_ms=self._idle_ms
        )
        if self._recent.fresh(cookie.session_id, now_ms):
            (fields,) = await self._reads((("HMGET", keys[0], *_FIELDS),))
            return scripts.check_cookie_touch(_verdict(fields, args[2], now_ms))
        reply = await self._touch(keys, args)
        auth_time = scripts.check_cookie_touch(reply)
        self._recent.touched(cookie.session_id, now_ms)
        return auth_time


def _verdict(fields: Any, cookie_digest: Any, now_ms: int) -> Any:
    """The touch's answer from HMGET absolute_expires_at cookie auth_time created_at (as lua/_slide.lua and
    cookie_touch.lua decide it); an error reply is raised."""
    if isinstance(fields, Exception):
        raise fields
    absolute, cookie, auth_time, created_at = fields
    if absolute is None or now_ms >= int(absolute):
        return 0
    if cookie != cookie_digest:
        return -2
    return [1, int(auth_time) if auth_time else int(created_at or 0) // 1000]

"""The strict check's one round trip to the session: the touch script, or two plain reads when this process
slid the session a moment ago.

The touch (``sso/lua/session_touch.lua``) checks the token's revocation marker and the session, and slides the
session at most once a second (``lua/_slide.lua``). Redis spends 14.9 µs on that EVALSHA on the development VM,
11 of them the fixed cost of running a script, against 3.2 µs for its EXISTS and HMGET alone. So for
``READ_WINDOW_MS`` after a touch found the session live, this process asks those two commands instead, which
answer every verdict the touch would (revoked, ended, expired, the roles of a newer account version) and
slide nothing; the next check after the window touches again. Concurrent checks of either kind share one write
(``ScriptBatcher``, ``kit.reads``). A session is then slid at most ``SLIDE_STEP_MS + READ_WINDOW_MS`` after
its last check rather than ``SLIDE_STEP_MS``: its idle end is up to 1.5 s early, out of 15 minutes (``slid_within_ms``).
The single sign-on hop checks its cookie's session the same way (``sso.oidc.cookie_check``, ``RecentTouches``).
"""

from __future__ import annotations

from typing import Any

from kit.coalescer import ScriptBatcher
from kit.reads import ReadBatcher
from kit.redis import RedisClient
from sso import scripts
from sso.client.principal import Principal

__all__ = ["RecentTouches", "SessionCheck", "slid_within_ms"]

# lua/_slide.lua leaves a session slid less than this ago as it is (a tenth of the idle timeout when shorter).
SLIDE_STEP_MS = 1000
READ_WINDOW_MS = SLIDE_STEP_MS // 2


def slid_within_ms(idle_ms: int) -> int:
    """How long before a strict check its session may have been slid last (its idle end is that early)."""
    return min(SLIDE_STEP_MS, idle_ms // 10) + _window_ms(idle_ms)


def _window_ms(idle_ms: int) -> int:
    return min(READ_WINDOW_MS, idle_ms // 20)


_FIELDS = ("absolute_expires_at", "version", "roles")


class RecentTouches:
    """The sessions this process found live with a touch less than the read window ago (at most
    ``remembered`` of them): those its next checks may only read."""

    def __init__(self, idle_ms: int, remembered: int = 20_000) -> None:
        self._window_ms = _window_ms(idle_ms)
        self._remembered = remembered
        # Session id -> when this process last found it live with a touch (ms).
        self._touched_at: dict[str, int] = {}

    def fresh(self, session_id: str, now_ms: int) -> bool:
        touched = self._touched_at.get(session_id)
        return touched is not None and 0 <= now_ms - touched < self._window_ms

    def touched(self, session_id: str, now_ms: int) -> None:
        if len(self._touched_at) >= self._remembered:
            fresh = {sid: at for sid, at in self._touched_at.items() if 0 <= now_ms - at < self._window_ms}
            # Still full of sessions touched this instant: forget them all (their next check touches).
            self._touched_at = fresh if len(fresh) < self._remembered // 2 else {}
        self._touched_at[session_id] = now_ms


class SessionCheck:
    def __init__(self, redis: RedisClient, *, idle_ms: int, remembered: int = 20_000) -> None:
        self._idle_ms = idle_ms
        self._touch = ScriptBatcher(redis, scripts.SESSION_TOUCH, same_keys_same_answer=True)
        self._reads = ReadBatcher(redis)
        self._recent = RecentTouches(idle_ms, remembered)

    async def __call__(self, principal: Principal, now_ms: int) -> Any:
        """What SESSION_TOUCH answers for ``principal``'s token now: 1 (live), the account's roles now (a
        string) when they changed after the token was issued, 0 (ended or expired) or -1 (token revoked)."""
        keys, args = scripts.token_touch(
            principal.user_id, principal.session_id, principal.token_id, now_ms=now_ms, idle_ms=self._idle_ms,
            version=principal.version,
        )  # fmt: skip
        if self._recent.fresh(principal.session_id, now_ms):
            session, marker = keys
            exists, fields = await self._reads((("EXISTS", marker), ("HMGET", session, *_FIELDS)))
            return _verdict(exists, fields, now_ms, principal.version)
        reply = await self._touch(keys, args)
        if reply == 1 or isinstance(reply, str):
            self._recent.touched(principal.session_id, now_ms)
        return reply


def _verdict(exists: Any, fields: Any, now_ms: int, version: int) -> Any:
    """The touch's answer from EXISTS marker and HMGET absolute_expires_at version roles (as lua/_slide.lua
    and session_touch.lua decide it); an error reply is raised."""
    for reply in (exists, fields):
        if isinstance(reply, Exception):
            raise reply
    if exists == 1:
        return -1
    absolute, session_version, roles = fields
    if absolute is None or now_ms >= int(absolute):
        return 0
    if int(session_version or 0) > version:
        return roles or ""
    return 1

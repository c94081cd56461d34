"""Sessions in Redis: open, check by cookie, list, end, rotate refresh tokens, and announce every end.

Every end is published on the changes channel (validators hear it at once) and written to the revocation
journal (validators poll it, so a lost message delays nothing by more than a poll interval).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from kit.redis import RedisClient
from sso import keys, scripts
from sso.errors import InvalidCookie, InvalidGrant, RefreshTokenReused
from sso.settings import SsoSettings
from sso.tokens import OpaqueToken, new_session_id

__all__ = ["NewSession", "SessionInfo", "Sessions"]

log = logging.getLogger("peak.sso")


@dataclass(frozen=True)
class NewSession:
    session_id: str
    refresh_token: OpaqueToken
    cookie: OpaqueToken


@dataclass(frozen=True)
class SessionInfo:
    id: str
    created_at: int
    last_seen_at: int
    idle_expires_at: int
    absolute_expires_at: int
    ip: str
    user_agent: str


def _roles(value: Iterable[str]) -> str:
    return " ".join(sorted(set(value)))


class Sessions:
    def __init__(self, redis: RedisClient, settings: SsoSettings) -> None:
        self._redis = redis
        self._idle_ms = settings.idle_timeout_s * 1000
        self._absolute_ms = settings.absolute_timeout_s * 1000
        self._max = settings.max_sessions

    async def open(
        self, *, user_id: str, username: str, roles: Sequence[str], ip: str, user_agent: str
    ) -> NewSession:
        now_ms = int(time.time() * 1000)
        sid = new_session_id()
        refresh, cookie = OpaqueToken.new(user_id, sid), OpaqueToken.new(user_id, sid)
        fields: dict[str, str | int] = {
            "user_id": user_id,
            "username": username,
            "roles": _roles(roles),
            "created_at": now_ms,
            "last_seen_at": now_ms,
            "absolute_expires_at": now_ms + self._absolute_ms,
            "ip": ip,
            "user_agent": user_agent[:512],
            "refresh": refresh.digest,
            "cookie": cookie.digest,
        }
        ended = await scripts.open_session(
            self._redis, user_id=user_id, session_id=sid, now_ms=now_ms, idle_ms=self._idle_ms,
            absolute_ms=self._absolute_ms, max_sessions=self._max, fields=fields,
        )  # fmt: skip
        await self.announce(f"s:{s}" for s in ended)
        return NewSession(sid, refresh, cookie)

    async def by_cookie(self, value: str) -> tuple[str, str, str, frozenset[str]]:
        """(user id, session id, username, roles) of a live session cookie, sliding the session."""
        cookie = OpaqueToken.parse(value)
        if cookie is None:
            raise InvalidCookie()
        found = await scripts.touch_by_cookie(
            self._redis, cookie.user_id, cookie.session_id, cookie.digest,
            now_ms=int(time.time() * 1000), idle_ms=self._idle_ms,
        )  # fmt: skip
        return found.user_id, cookie.session_id, found.username, found.roles

    async def info(self, user_id: str, session_id: str) -> SessionInfo | None:
        for entry in await self.of_user(user_id):
            if entry.id == session_id:
                return entry
        return None

    async def of_user(self, user_id: str) -> list[SessionInfo]:
        now_ms = int(time.time() * 1000)
        return [
            SessionInfo(
                id=s.id,
                created_at=s.created_at_ms // 1000,
                last_seen_at=s.last_seen_at_ms // 1000,
                idle_expires_at=(now_ms + max(0, s.idle_left_ms)) // 1000,
                absolute_expires_at=s.absolute_expires_at_ms // 1000,
                ip=s.ip,
                user_agent=s.user_agent,
            )
            for s in await scripts.list_sessions(self._redis, user_id)
        ]

    async def end(
        self, user_id: str, which: Literal["one", "all", "others"], session_id: str = ""
    ) -> list[str]:
        ended = await scripts.end_sessions(self._redis, user_id, which, session_id)
        await self.announce(f"s:{s}" for s in ended)
        return ended

    async def rotate_refresh(self, presented: str, roles: Sequence[str]) -> tuple[OpaqueToken, str]:
        """A new refresh token for the session of ``presented`` and the session's username; InvalidGrant if
        it is unknown, used (which ends the session) or its session has ended."""
        token = OpaqueToken.parse(presented)
        if token is None:
            raise InvalidGrant()
        new = OpaqueToken.new(token.user_id, token.session_id)
        try:
            username = await scripts.rotate_refresh(
                self._redis, user_id=token.user_id, session_id=token.session_id, presented_digest=token.digest,
                new_digest=new.digest, now_ms=int(time.time() * 1000), idle_ms=self._idle_ms, roles=_roles(roles),
            )  # fmt: skip
        except RefreshTokenReused:
            log.warning("refresh token reused: session %s of user %s ended", token.session_id, token.user_id)
            await self.announce([f"s:{token.session_id}"])
            raise
        return new, username

    async def end_by_refresh_token(self, token: OpaqueToken) -> None:
        """End the session of a current or already used refresh token; anything else changes nothing."""
        current, used = await self._redis.hmget(
            keys.session(token.user_id, token.session_id), ["refresh", f"used:{token.digest}"]
        )
        if current == token.digest or used:
            await self.end(token.user_id, "one", token.session_id)

    async def revoke_access_token(self, user_id: str, token_id: str, expires_at: int) -> None:
        ttl_s = expires_at - int(time.time()) + 30
        if ttl_s > 0:
            await self._redis.set(keys.revoked_token(user_id, token_id), "1", ex=ttl_s)
        await self.announce([f"j:{token_id}"])

    async def announce(self, messages: Iterable[str]) -> None:
        batch = list(messages)
        if not batch:
            return
        now_ms = int(time.time() * 1000)
        await self._redis.zadd(keys.REVOKED_JOURNAL, dict.fromkeys(batch, now_ms))
        await self._redis.zremrangebyscore(
            keys.REVOKED_JOURNAL, "-inf", now_ms - keys.REVOKED_JOURNAL_KEEP_S * 1000
        )
        for message in batch:
            await self._redis.publish(keys.CHANGES_CHANNEL, message)

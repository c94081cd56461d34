"""Every SSO Lua script (``sso/lua/``), bound once: the KEYS each takes and what its reply means.

Keys come from ``sso/keys.py``; a reply becomes a typed result here, and a reply code an exception of
``sso/errors.py`` here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from kit.lua import Call, EncodableT, Script
from kit.redis import RedisClient
from sso import keys
from sso.errors import (
    AccountLocked,
    InvalidCookie,
    InvalidGrant,
    IpBudgetSpent,
    RefreshTokenReused,
    SessionEnded,
    TokenRevoked,
)

__all__ = [
    "ALL",
    "SESSION_TOUCH",
    "CookieSession",
    "ListedSession",
    "check_token_touch",
    "end_sessions",
    "list_sessions",
    "open_session",
    "rotate_refresh",
    "throttle",
    "token_touch",
    "touch_by_cookie",
]

SESSION_OPEN = Script.of("sso", "session_open")
SESSION_TOUCH = Script.of("sso", "session_touch")
SESSION_LIST = Script.of("sso", "session_list")
SESSION_END = Script.of("sso", "session_end")
REFRESH = Script.of("sso", "refresh")
THROTTLE = Script.of("sso", "throttle")

# What the component hands the kit to load at start.
ALL = (SESSION_OPEN, SESSION_TOUCH, SESSION_LIST, SESSION_END, REFRESH, THROTTLE)


class CookieSession(NamedTuple):
    user_id: str
    username: str
    roles: frozenset[str]


class ListedSession(NamedTuple):
    id: str
    created_at_ms: int
    last_seen_at_ms: int
    absolute_expires_at_ms: int
    ip: str
    user_agent: str
    idle_left_ms: int


async def open_session(
    redis: RedisClient,
    *,
    user_id: str,
    session_id: str,
    now_ms: int,
    idle_ms: int,
    absolute_ms: int,
    max_sessions: int,
    fields: Mapping[str, EncodableT],
) -> list[str]:
    """The ids of the sessions ended to make room for this one, oldest first."""
    ended: list[Any] = await SESSION_OPEN(
        redis,
        [keys.session_index(user_id), keys.session(user_id, session_id)],
        [keys.session_prefix(user_id), session_id, now_ms, idle_ms, absolute_ms, max_sessions,
         *[v for pair in fields.items() for v in pair]],
    )  # fmt: skip
    return [str(s) for s in ended]


def _raise_for_touch(code: int) -> None:
    if code == 0:
        raise SessionEnded()
    if code == -1:
        raise TokenRevoked()
    if code == -2:
        raise InvalidCookie()


def token_touch(user_id: str, session_id: str, token_id: str, *, now_ms: int, idle_ms: int) -> Call:
    """The call of SESSION_TOUCH that checks and slides the session of an access token (the validator
    batches these); its reply goes to ``check_token_touch``."""
    return [keys.session(user_id, session_id), keys.revoked_token(user_id, token_id)], [now_ms, idle_ms, ""]


def check_token_touch(reply: Any) -> None:
    """SessionEnded (ended or expired) or TokenRevoked, unless the session is live and now slid."""
    _raise_for_touch(int(reply))


async def touch_by_cookie(
    redis: RedisClient, user_id: str, session_id: str, cookie_digest: str, *, now_ms: int, idle_ms: int
) -> CookieSession:
    """The live session a cookie belongs to, now slid; SessionEnded or InvalidCookie otherwise."""
    reply = await SESSION_TOUCH(redis, [keys.session(user_id, session_id)], [now_ms, idle_ms, cookie_digest])
    if not isinstance(reply, list):
        _raise_for_touch(int(reply))
    _, owner, username, roles = reply
    return CookieSession(str(owner), str(username), frozenset(str(roles).split()))


async def list_sessions(redis: RedisClient, user_id: str) -> list[ListedSession]:
    """The user's live sessions, oldest first."""
    rows: list[list[Any]] = await SESSION_LIST(
        redis, [keys.session_index(user_id)], [keys.session_prefix(user_id)]
    )
    return [
        ListedSession(str(sid), int(created), int(seen), int(absolute), str(ip), str(agent), int(ttl_ms))
        for sid, created, seen, absolute, ip, agent, ttl_ms in rows
    ]


async def end_sessions(
    redis: RedisClient, user_id: str, which: Literal["one", "all", "others"], session_id: str = ""
) -> list[str]:
    """The ids of the sessions that were live and are now ended."""
    ended: list[Any] = await SESSION_END(
        redis, [keys.session_index(user_id)], [keys.session_prefix(user_id), which, session_id]
    )
    return [str(s) for s in ended]


async def rotate_refresh(
    redis: RedisClient,
    *,
    user_id: str,
    session_id: str,
    presented_digest: str,
    new_digest: str,
    now_ms: int,
    idle_ms: int,
    roles: str,
) -> str:
    """The session's username once its refresh token is replaced by ``new_digest``; RefreshTokenReused when
    the presented token was already used (the session is now ended), InvalidGrant for an unknown token or a
    session that has ended."""
    reply = await REFRESH(
        redis,
        [keys.session(user_id, session_id), keys.session_index(user_id)],
        [presented_digest, new_digest, now_ms, idle_ms, roles, session_id],
    )
    code = int(reply[0] if isinstance(reply, list) else reply)
    if code == -1:
        raise RefreshTokenReused()
    if code != 1:
        raise InvalidGrant()
    return str(reply[1])


async def throttle(
    redis: RedisClient,
    mode: Literal["attempt", "failure", "success"],
    username: str,
    ip: str,
    limits: Sequence[int],
) -> None:
    """Count a login ``mode``; AccountLocked or IpBudgetSpent when an attempt is over a limit."""
    status, retry_after_s = await THROTTLE(
        redis, [keys.account_failures(username), keys.ip_failures(ip)], [mode, *limits]
    )
    if int(status) == 1:
        raise AccountLocked(int(retry_after_s))
    if int(status) == 2:
        raise IpBudgetSpent(int(retry_after_s))

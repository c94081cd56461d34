"""Every SSO Lua script (``sso/lua/``), bound once: the KEYS each takes and what its reply means.

Keys come from ``sso/keys.py``; a reply becomes a typed result here, and a reply code an exception of
``sso/errors.py`` here and nowhere else.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Literal, NamedTuple

from kit.lua import Call, EncodableT, Script
from kit.redis import RedisClient
from sso import keys
from sso.errors import (
    AccountDisabled,
    InvalidCookie,
    InvalidGrant,
    RefreshTokenReused,
    SessionEnded,
    TokenRevoked,
    TooManyRefreshes,
    TooManySignups,
)

__all__ = [
    "ALL",
    "SESSION_READ",
    "SESSION_TOUCH",
    "CookieSession",
    "CurrentSession",
    "ListedSession",
    "OpenedSession",
    "Rotation",
    "change_account",
    "check_cookie_touch",
    "check_token_touch",
    "cookie_touch",
    "end_sessions",
    "list_sessions",
    "open_session",
    "read_session",
    "revoke_token",
    "rotate_refresh",
    "session_read",
    "signup",
    "token_touch",
    "touch_by_cookie",
]


def _after(fragment: str, name: str) -> Script:
    """A script with a shared Lua fragment (``lua/_<fragment>.lua``, its function) first."""
    prelude = resources.files("sso").joinpath("lua", f"_{fragment}.lua").read_text(encoding="utf-8")
    script = Script.of("sso", name)
    return Script(script.name, prelude + script.source)


def _announcing(name: str) -> Script:
    """A script that announces what it ends or changes: ``_announce.lua`` (its ``announce()``) first."""
    return _after("announce", name)


SESSION_OPEN = _announcing("session_open")
SESSION_TOUCH = _after("slide", "session_touch")
SESSION_READ = _after("slide", "session_read")
SESSION_LIST = Script.of("sso", "session_list")
SESSION_END = _announcing("session_end")
SESSION_REVOKE = _announcing("session_revoke")
SESSION_ACCOUNT = _announcing("session_account")
REFRESH = _announcing("refresh")
THROTTLE_ACCOUNT = Script.of("sso", "throttle_account")
THROTTLE_NETWORK = Script.of("sso", "throttle_network")
SIGNUP = Script.of("sso", "signup")
COOKIE_TOUCH = _after("slide", "cookie_touch")


# Its call and reply: sso/code_scripts.py.
CODE_REDEEM = _announcing("code_redeem")

# What the component hands the kit to load at start.
ALL = (SESSION_OPEN, SESSION_TOUCH, SESSION_READ, SESSION_LIST, SESSION_END, SESSION_REVOKE, SESSION_ACCOUNT,
       REFRESH, THROTTLE_ACCOUNT, THROTTLE_NETWORK, SIGNUP, COOKIE_TOUCH, CODE_REDEEM)  # fmt: skip
# What every announcing script is told: how long journal entries stay (ms), and the channel.
_ANNOUNCE = (keys.REVOKED_JOURNAL_KEEP_S * 1000, keys.CHANGES_CHANNEL)


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


class CurrentSession(NamedTuple):
    """A session as SESSION_READ answers it, just slid; times in seconds, roles as Redis keeps them."""

    user_id: str
    username: str
    roles: str
    version: int
    created_at: int
    last_seen_at: int
    idle_expires_at: int
    absolute_expires_at: int
    ip: str
    user_agent: str
    id: str


class OpenedSession(NamedTuple):
    version: int
    roles: tuple[str, ...]
    ended: list[str]


class Rotation(NamedTuple):
    username: str
    absolute_expires_at_ms: int
    rotated_at_ms: int
    version: int
    # An OpenID Connect client's: the scope its code granted ("" for the first-party login's token).
    scope: str = ""


async def open_session(
    redis: RedisClient,
    *,
    user_id: str,
    session_id: str,
    now_ms: int,
    idle_ms: int,
    absolute_ms: int,
    max_sessions: int,
    roles: str,
    fields: Mapping[str, EncodableT],
) -> OpenedSession:
    """The new session's account version and roles (the latest change's, when `peak sso` changed them while
    the login was under way), and the ids of the sessions ended (and announced) to make room, oldest first;
    AccountDisabled when the account was disabled meanwhile."""
    reply = await SESSION_OPEN(
        redis,
        [keys.session_index(user_id), keys.session(user_id, session_id), keys.account_change(user_id),
         keys.journal(user_id)],
        [keys.session_prefix(user_id), session_id, now_ms, idle_ms, absolute_ms, max_sessions, *_ANNOUNCE, roles,
         *[v for pair in fields.items() for v in pair]],
    )  # fmt: skip
    if not isinstance(reply, list):
        raise AccountDisabled()
    version, stored_roles, *ended = reply
    return OpenedSession(int(version), tuple(str(stored_roles).split()), [str(e) for e in ended])


def _raise_for_touch(code: int) -> None:
    if code == 0:
        raise SessionEnded()
    if code == -1:
        raise TokenRevoked()
    if code == -2:
        raise InvalidCookie()


def token_touch(
    user_id: str, session_id: str, token_id: str, *, now_ms: int, idle_ms: int, version: int
) -> Call:
    """The call of SESSION_TOUCH that checks and slides the session of an access token issued at account
    ``version`` (the validator batches these); its reply goes to ``check_token_touch``."""
    return _touch_keys(user_id, session_id, token_id), [now_ms, idle_ms, "", version]


@functools.lru_cache(maxsize=20_000)  # the validator's token cache size: a key pair per token it remembers
def _touch_keys(user_id: str, session_id: str, token_id: str) -> tuple[str, str]:
    return keys.session(user_id, session_id), keys.revoked_token(user_id, token_id)


def check_token_touch(reply: Any) -> frozenset[str] | None:
    """None when the session is live (now slid) and the token's roles are the account's; the roles now when
    the token was issued before they changed; SessionEnded (ended or expired) or TokenRevoked otherwise."""
    if isinstance(reply, str):
        return frozenset(reply.split())
    _raise_for_touch(int(reply))
    return None


async def touch_by_cookie(
    redis: RedisClient, user_id: str, session_id: str, cookie_digest: str, *, now_ms: int, idle_ms: int
) -> CookieSession:
    """The live session a cookie belongs to, now slid; SessionEnded or InvalidCookie otherwise."""
    reply = await SESSION_TOUCH(
        redis, [keys.session(user_id, session_id)], [now_ms, idle_ms, cookie_digest, 0]
    )
    if not isinstance(reply, list):
        _raise_for_touch(int(reply))
    _, owner, username, roles = reply
    return CookieSession(str(owner), str(username), frozenset(str(roles).split()))


def cookie_touch(user_id: str, session_id: str, cookie_digest: str, *, now_ms: int, idle_ms: int) -> Call:
    """The call of COOKIE_TOUCH that checks and slides the session of a cookie (the single sign-on hop
    batches these); its reply goes to ``check_cookie_touch``."""
    return [keys.session(user_id, session_id)], [now_ms, idle_ms, cookie_digest]


def check_cookie_touch(reply: Any) -> int:
    """When the live session's password sign-in was (``auth_time``, s); SessionEnded (ended or expired) or
    InvalidCookie otherwise."""
    if type(reply) is list:
        return int(reply[1])
    _raise_for_touch(int(reply))
    raise SessionEnded()  # an unknown answer: refuse rather than guess


def session_read(
    user_id: str, session_id: str, *, token_id: str, cookie_digest: str, now_ms: int, idle_ms: int
) -> Call:
    """SESSION_READ for an access token's session (``token_id``) or a cookie's (``cookie_digest``)."""
    session = keys.session(user_id, session_id)
    if cookie_digest:
        return [session], [now_ms, idle_ms, cookie_digest]
    return [session, keys.revoked_token(user_id, token_id)], [now_ms, idle_ms, ""]


def read_session(reply: Any, session_id: str) -> CurrentSession:
    """The live session, now slid; SessionEnded (ended or expired), TokenRevoked or InvalidCookie otherwise."""
    if type(reply) is not list or len(reply) != 10:
        _raise_for_touch(int(reply) if type(reply) is int else 0)
        raise SessionEnded()  # an unknown answer: refuse rather than guess
    owner, username, roles, version, created, seen, idle_end, absolute, ip, agent = reply
    return CurrentSession(
        owner, username, roles, version, created, seen, idle_end, absolute, ip, agent, session_id
    )


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
    """The ids of the sessions that were live and are now ended, and announced by the same call (a retry of
    the call by the Redis client gets the same answer)."""
    ended: list[Any] = await SESSION_END(
        redis,
        [keys.session_index(user_id), keys.journal(user_id), keys.call_answer(user_id, secrets.token_hex(8))],
        [keys.session_prefix(user_id), which, session_id, *_ANNOUNCE, keys.CALL_ANSWER_KEEP_S * 1000],
    )
    return [str(s) for s in ended]


async def revoke_token(redis: RedisClient, user_id: str, token_id: str, *, ttl_ms: int) -> None:
    """Mark an access token revoked for ``ttl_ms`` and announce it, in one call."""
    await SESSION_REVOKE(
        redis,
        [keys.revoked_token(user_id, token_id), keys.journal(user_id)],
        [ttl_ms, token_id, *_ANNOUNCE],
    )


async def change_account(
    redis: RedisClient, user_id: str, change: Literal["roles", "disable"], roles: Sequence[str]
) -> tuple[int, list[str]]:
    """Record a change of the account's roles (every live session takes them) or its disabling (every
    session ends), and announce it: the new account version and the ids of the sessions ended."""
    version, *ended = await SESSION_ACCOUNT(
        redis,
        [keys.session_index(user_id), keys.account_change(user_id), keys.journal(user_id)],
        [keys.session_prefix(user_id), user_id, change, " ".join(sorted(set(roles))),
         keys.ACCOUNT_CHANGE_KEEP_S * 1000, *_ANNOUNCE],
    )  # fmt: skip
    return int(version), [str(e) for e in ended]


async def rotate_refresh(
    redis: RedisClient,
    *,
    user_id: str,
    session_id: str,
    presented_digest: str,
    successor_digest: str,
    now_ms: int,
    idle_ms: int,
    grace_ms: int,
    used_kept: int,
    max_rotations: int,
    window_ms: int,
    client_id: str = "",
    token_id: str = "",
) -> Rotation:
    """The session once its refresh token is replaced by its successor (or, for the token rotated last and
    presented again within ``grace_ms``, the same answer as then); RefreshTokenReused when the token was used
    before that (the session is now ended and announced), TooManyRefreshes past ``max_rotations`` per
    window, InvalidGrant for an unknown token or a session that has ended. ``client_id``: an OpenID Connect
    client's own token in the session (its access token's id ``token_id`` is kept for a code reuse to revoke)."""
    reply = await REFRESH(
        redis,
        [keys.session(user_id, session_id), keys.session_index(user_id), keys.account_change(user_id),
         keys.journal(user_id)],
        [presented_digest, successor_digest, now_ms, idle_ms, session_id, grace_ms, used_kept, max_rotations,
         window_ms, *_ANNOUNCE, f":{client_id}" if client_id else "", token_id if client_id else ""],
    )  # fmt: skip
    code = int(reply[0] if isinstance(reply, list) else reply)
    if code == -1:
        raise RefreshTokenReused()
    if code == -3:
        raise TooManyRefreshes(-(-int(reply[1]) // 1000))
    if code != 1:
        raise InvalidGrant()
    _, username, absolute_ms, rotated_at_ms, version, scope = reply
    return Rotation(str(username), int(absolute_ms), int(rotated_at_ms), int(version), str(scope))


async def signup(redis: RedisClient, network: str, per_hour: int) -> None:
    """Count a registration from the network; TooManySignups past ``per_hour``."""
    status, retry_after_s = await SIGNUP(
        redis, [keys.network_signups(network)], [per_hour, keys.SIGNUP_WINDOW_S]
    )
    if int(status) == 1:
        raise TooManySignups(int(retry_after_s))

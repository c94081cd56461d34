"""Sessions in Redis: open, check by cookie, list, end, rotate refresh tokens, revoke access tokens, and
take account changes (roles, disabling) to every session of the account.

Each script that ends a session, revokes a token or changes an account also announces it, in the same call:
into the revocation journal of the user's shard (scored by the Redis clock; validators poll it) and on the
changes channel (validators hear it at once). No crash between a change and its announcement can leave it
unannounced, and a lost message delays nothing by more than a poll interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from kit.coalescer import ScriptBatcher
from kit.redis import RedisClient
from sso import code_scripts, keys, scripts
from sso.client.session_check import slid_within_ms
from sso.errors import InvalidCookie, InvalidGrant, RefreshTokenReused
from sso.scripts import CurrentSession
from sso.settings import SsoSettings
from sso.tokens import OpaqueToken, new_session_id

__all__ = [
    "USED_KEPT",
    "CodeRedemption",
    "CurrentSession",
    "NewSession",
    "Refreshed",
    "SessionInfo",
    "Sessions",
]

log = logging.getLogger("peak.sso")

# Used refresh tokens a session remembers for reuse detection. At the default rate limit (10 a minute) an
# older one is at least 3 minutes old; presenting it is refused (invalid_grant) but no longer ends the session.
USED_KEPT = 32
# An OpenID Connect client's fields in a session (each with ":<client id>" appended; sso/lua/code_redeem.lua).
_CLIENT_FIELDS = ("refresh", "previous", "rotated_at", "used", "window_start", "window_count", "scope", "jti",
                  "grant")  # fmt: skip
# Sessions whose fixed fields a process keeps for GET /sso/session (about 1 KiB each).
_FIXED_KEPT = 100_000


@dataclass(frozen=True)
class NewSession:
    session_id: str
    refresh_token: OpaqueToken
    cookie: OpaqueToken
    roles: tuple[str, ...]
    version: int
    absolute_expires_at: int


@dataclass(frozen=True)
class Refreshed:
    """A rotation's answer, the same for a replay of it: the successor and what its access token says."""

    user_id: str
    session_id: str
    username: str
    refresh_token: OpaqueToken
    token_id: str
    issued_at: int
    absolute_expires_at: int
    version: int
    # An OpenID Connect client's token: the scope its code granted ("" for the first-party login's).
    scope: str = ""


@dataclass(frozen=True)
class CodeRedemption:
    """An authorization code redeemed: its session now, what the code recorded, and the tokens to issue."""

    redeemed: code_scripts.Redeemed
    refresh_token: OpaqueToken
    token_id: str


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
    """``rotation_key`` (sso.tokens.rotation_key) is needed only to rotate refresh tokens."""

    def __init__(
        self, redis: RedisClient, settings: SsoSettings, *, rotation_key: bytes | None = None
    ) -> None:
        self._redis = redis
        self._idle_ms = settings.idle_timeout_s * 1000
        # A strict check may leave the session as this long ago slid (lua/_slide.lua, sso.client.session_check).
        self._slid_within_ms = slid_within_ms(self._idle_ms)
        self._absolute_ms = settings.absolute_timeout_s * 1000
        self._max = settings.max_sessions
        self._rotation_key = rotation_key
        self._grace_ms = settings.refresh_grace_s * 1000
        self._max_rotations = settings.refresh_max
        self._window_ms = settings.refresh_window_s * 1000
        self._code_ttl_ms = settings.code_ttl_s * 1000
        self._used_code_keep_ms = (settings.code_ttl_s + keys.USED_CODE_KEEP_S) * 1000
        # A revoked access token's marker outlives the token (with the validators' clock leeway).
        self._revoked_ttl_ms = (settings.access_token_ttl_s + 60) * 1000
        # GET /sso/session, coalesced like the strict check. Reads by token share a command when they name the
        # same token (the same answer either would get); reads by cookie never do: the cookie is an argument,
        # and a forged one must not get the answer of the real one sent in the same batch.
        self._read_by_token = ScriptBatcher(redis, scripts.SESSION_READ, same_keys_same_answer=True)
        self._read_by_cookie = ScriptBatcher(redis, scripts.SESSION_READ)
        # Session id -> its last read: created_at, absolute_expires_at, ip and user agent never change after
        # the login, so a later read by token needs only the strict check's own touch (``slid``).
        self._fixed: dict[str, CurrentSession] = {}

    async def open(
        self, *, user_id: str, username: str, roles: Sequence[str], ip: str, user_agent: str
    ) -> NewSession:
        """A new session; AccountDisabled if the account was disabled since the caller read it."""
        now_ms = int(time.time() * 1000)
        sid = new_session_id()
        refresh, cookie = OpaqueToken.new(user_id, sid), OpaqueToken.new(user_id, sid)
        absolute_ms = now_ms + self._absolute_ms
        fields: dict[str, str | int] = {
            "user_id": user_id,
            "username": username,
            "created_at": now_ms,
            "last_seen_at": now_ms,
            "absolute_expires_at": absolute_ms,
            # OpenID Connect `auth_time` (s): every session is opened by a password sign-in.
            "auth_time": now_ms // 1000,
            "ip": ip,
            "user_agent": user_agent[:512],
            "refresh": refresh.digest,
            "cookie": cookie.digest,
        }
        opened = await scripts.open_session(
            self._redis, user_id=user_id, session_id=sid, now_ms=now_ms, idle_ms=self._idle_ms,
            absolute_ms=self._absolute_ms, max_sessions=self._max, roles=_roles(roles), fields=fields,
        )  # fmt: skip
        return NewSession(sid, refresh, cookie, opened.roles, opened.version, absolute_ms // 1000)

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

    async def current_by_token(self, user_id: str, session_id: str, token_id: str) -> CurrentSession:
        """The session of a verified access token, slid, in one (coalesced) round trip; SessionEnded or
        TokenRevoked otherwise."""
        now_ms = int(time.time() * 1000)
        keys_, args = scripts.session_read(
            user_id, session_id, token_id=token_id, cookie_digest="", now_ms=now_ms, idle_ms=self._idle_ms
        )
        current = scripts.read_session(await self._read_by_token(keys_, args), session_id)
        if len(self._fixed) >= _FIXED_KEPT:
            for old in list(self._fixed)[: _FIXED_KEPT // 10]:  # the oldest tenth: read again when seen
                del self._fixed[old]
        self._fixed[session_id] = current
        return current

    def known(self, session_id: str) -> CurrentSession | None:
        """The session's last read by ``current_by_token`` in this process, if any."""
        return self._fixed.get(session_id)

    def slid(self, known: CurrentSession, now_ms: int) -> CurrentSession:
        """``known`` as a touch at ``now_ms`` leaves it (the strict check slid it): what SESSION_READ answers.
        The touch leaves a session slid under a second before as it is (lua/_slide.lua), and a check half a
        second after a touch only reads it (sso.client.session_check): the idle end given is the earliest it
        can be."""
        k = known  # NamedTuple._replace costs 2 us of the ~30 of GET /sso/session
        idle_end = min((now_ms - self._slid_within_ms + self._idle_ms) // 1000, k.absolute_expires_at)
        return CurrentSession(
            k.user_id, k.username, k.roles, k.version, k.created_at, now_ms // 1000, idle_end,
            k.absolute_expires_at, k.ip, k.user_agent, k.id,
        )  # fmt: skip

    async def current_by_cookie(self, value: str) -> CurrentSession:
        """The session a cookie belongs to, slid, in one (coalesced) round trip; InvalidCookie or
        SessionEnded otherwise."""
        cookie = OpaqueToken.parse(value)
        if cookie is None:
            raise InvalidCookie()
        now_ms = int(time.time() * 1000)
        keys_, args = scripts.session_read(
            cookie.user_id, cookie.session_id, token_id="", cookie_digest=cookie.digest, now_ms=now_ms,
            idle_ms=self._idle_ms,
        )  # fmt: skip
        return scripts.read_session(await self._read_by_cookie(keys_, args), cookie.session_id)

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
        """End sessions and announce it (one script); the ids of those that were live."""
        return await scripts.end_sessions(self._redis, user_id, which, session_id)

    async def rotate_refresh(self, presented: str, *, client_id: str = "") -> Refreshed:
        """Replace the refresh token ``presented`` by its successor, or give the same answer again for the
        token rotated last when it comes back within the grace (a retry). InvalidGrant if it is unknown, used
        before (which ends the session) or its session has ended; TooManyRefreshes past the rate limit.
        ``client_id``: the OpenID Connect client's own token in the session (another's is unknown to it)."""
        assert self._rotation_key is not None, "Sessions(rotation_key=...) to rotate refresh tokens"
        token = OpaqueToken.parse(presented)
        if token is None:
            raise InvalidGrant()
        successor = token.successor(self._rotation_key)
        token_id = successor.access_token_id(self._rotation_key)
        try:
            rotation = await scripts.rotate_refresh(
                self._redis, user_id=token.user_id, session_id=token.session_id, presented_digest=token.digest,
                successor_digest=successor.digest, now_ms=int(time.time() * 1000), idle_ms=self._idle_ms,
                grace_ms=self._grace_ms, used_kept=USED_KEPT, max_rotations=self._max_rotations,
                window_ms=self._window_ms, client_id=client_id, token_id=token_id,
            )  # fmt: skip
        except RefreshTokenReused:
            log.warning("refresh token reused: session %s of user %s ended", token.session_id, token.user_id)
            raise
        return Refreshed(
            user_id=token.user_id,
            session_id=token.session_id,
            username=rotation.username,
            refresh_token=successor,
            token_id=token_id,
            issued_at=rotation.rotated_at_ms // 1000,
            absolute_expires_at=rotation.absolute_expires_at_ms // 1000,
            version=rotation.version,
            scope=rotation.scope,
        )

    async def redeem_code(
        self, *, user_id: str, session_id: str, code_digest: str, sealed: code_scripts.Code | None,
        client_id: str, redirect_uri: str, challenge: str,
    ) -> CodeRedemption:  # fmt: skip
        """Redeem an authorization code for the client (``challenge``: BASE64URL(SHA256(code_verifier)), or
        "" without one) and put the client's new refresh token in the session, in one call; CodeReused or
        CodeRefused otherwise (sso.code_scripts.redeem_code). ``sealed``: the sealed code's record (None for a
        code of the release before, recorded in Redis). The access token's id is derived from the refresh
        token, as for a rotation: a retried call brings the same and is answered alike."""
        assert self._rotation_key is not None, "Sessions(rotation_key=...) to issue refresh tokens"
        refresh = OpaqueToken.new(user_id, session_id)
        token_id = refresh.access_token_id(self._rotation_key)
        redeemed = await code_scripts.redeem_code(
            self._redis, user_id=user_id, session_id=session_id, code_digest=code_digest, client_id=client_id,
            redirect_uri=redirect_uri, challenge=challenge, sealed=sealed, code_ttl_ms=self._code_ttl_ms,
            refresh_digest=refresh.digest, token_id=token_id, now_ms=int(time.time() * 1000),
            idle_ms=self._idle_ms, used_keep_ms=self._used_code_keep_ms, revoked_ttl_ms=self._revoked_ttl_ms,
            oidc_keep_ms=keys.OIDC_SESSION_KEEP_S * 1000,
        )  # fmt: skip
        return CodeRedemption(redeemed, refresh, token_id)

    async def end_by_refresh_token(self, token: OpaqueToken) -> None:
        """End the session of a current or remembered used refresh token of the login's; for an OpenID
        Connect client's, end that client's grant in the session (its refresh token and its latest access
        token; RFC 7009 2.1). Anything else changes nothing."""
        session = keys.session(token.user_id, token.session_id)
        fields = {str(k): str(v) for k, v in (await self._redis.hgetall(session)).items()}
        mark = token.digest[:32]

        def holds(suffix: str) -> bool:
            remembered = fields.get("used" + suffix, "")
            return fields.get("refresh" + suffix) == token.digest or any(
                remembered[i : i + 32] == mark for i in range(0, len(remembered), 32)
            )

        if holds(""):
            await self.end(token.user_id, "one", token.session_id)
            return
        for name in fields:
            suffix = name[len("refresh") :]
            if name.startswith("refresh:") and holds(suffix):
                await self._redis.hdel(session, *[f + suffix for f in _CLIENT_FIELDS])
                if jti := fields.get("jti" + suffix):
                    await scripts.revoke_token(self._redis, token.user_id, jti, ttl_ms=self._revoked_ttl_ms)
                return

    async def revoke_access_token(self, user_id: str, token_id: str, expires_at: int) -> None:
        """Refuse the token everywhere until it expires (with leeway), announced in the same call."""
        ttl_ms = (expires_at - int(time.time()) + 30) * 1000
        await scripts.revoke_token(self._redis, user_id, token_id, ttl_ms=max(1000, ttl_ms))

    async def change_roles(self, user_id: str, roles: Sequence[str]) -> int:
        """Every live session of the account takes ``roles``; tokens issued before stop carrying weight
        (validators hear of it). The account's new version."""
        version, _ = await scripts.change_account(self._redis, user_id, "roles", roles)
        return version

    async def disable(self, user_id: str) -> list[str]:
        """End every session of a disabled account and refuse new ones racing the disabling; the ids ended."""
        _, ended = await scripts.change_account(self._redis, user_id, "disable", ())
        return ended

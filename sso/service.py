"""The SSO flows (register, login, refresh, password change, revocation) over accounts, sessions and tokens.

One ``Sso`` per API process, registered in the context; routes and tests call it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kit.errors import ApiError, ServiceUnavailable, Unauthorized
from sso.accounts import Account, Accounts, canonical_username, username_key
from sso.client import Principal, TokenValidator
from sso.clients import Clients
from sso.errors import (
    InvalidCredentials,
    InvalidGrant,
    InvalidUsername,
    SessionEnded,
    TokenRevoked,
    UsernameTaken,
    WeakPassword,
)
from sso.keystore import KeyStore
from sso.oidc.codes import CodeSeal
from sso.passwords import Passwords
from sso.sessions import CurrentSession, Sessions
from sso.settings import SsoSettings
from sso.throttle import LoginThrottle, Ticket
from sso.tokens import CLIENT_ID, Grant, OpaqueToken, Signer

__all__ = ["Caller", "Sso", "TokenPair"]

# Longer passwords only cost hashing time; nobody types more.
_MAX_PASSWORD_LENGTH = 1024
# How long the JWK set is served from memory before PostgreSQL is asked again.
_JWKS_CACHE_S = 1.0


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    session_id: str
    cookie: str
    # An OpenID Connect client's pair: the scope granted (RFC 6749 5.1).
    scope: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "session_id": self.session_id,
        }
        if self.scope is not None:
            body["scope"] = self.scope
        return body


@dataclass(frozen=True)
class Caller:
    """Who is calling an SSO endpoint, by bearer token or session cookie."""

    user_id: str
    session_id: str
    username: str
    roles: frozenset[str]
    token: Principal | None = None


@dataclass(kw_only=True)
class Sso:
    settings: SsoSettings
    accounts: Accounts
    passwords: Passwords
    sessions: Sessions
    throttle: LoginThrottle
    keystore: KeyStore
    signer: Signer
    clients: Clients
    validator: TokenValidator
    # Authorization codes: sealed by the hop, opened by the token endpoint (PEAK_SECRET_KEY's).
    codes: CodeSeal
    _jwks: tuple[float, dict[str, Any]] = field(default=(0.0, {}), init=False, repr=False)

    # -- accounts --------------------------------------------------------------------------------

    def _check_password(self, password: str) -> None:
        if len(password) < self.settings.min_password_length:
            raise WeakPassword(
                f"the password must be at least {self.settings.min_password_length} characters"
            )
        if len(password) > _MAX_PASSWORD_LENGTH:
            raise WeakPassword(f"the password must be at most {_MAX_PASSWORD_LENGTH} characters")

    async def register(
        self, username: str, password: str, *, ip: str, reserved: Collection[str] = ()
    ) -> Account:
        """A new account; ``reserved`` names (the admin tokens') are taken whatever their case."""
        name = canonical_username(username)
        if name is None:
            raise InvalidUsername()
        if username_key(name) in {username_key(c) for n in reserved if (c := canonical_username(n))}:
            raise UsernameTaken(f"the username {name!r} is taken")
        self._check_password(password)
        async with self.passwords.turn("signup"):
            await self.throttle.signup(ip)
            password_hash = await self.passwords.hash(password)
        return await self.accounts.create(name, password_hash)

    async def change_password(
        self, caller: Caller, old_password: str, new_password: str, *, ip: str, devices: Sequence[str] = ()
    ) -> str | None:
        """Wrong old passwords count like failed logins. The device cookie's value, as after a login."""
        self._check_password(new_password)
        async with (
            self.passwords.turn("login"),
            self._counted(username_key(caller.username), ip, devices) as ticket,
        ):
            account = await self.accounts.by_id(caller.user_id)
            if account is None or not await self.passwords.verify(account.password_hash, old_password):
                raise InvalidCredentials()
            password_hash = await self.passwords.hash(new_password)
        device = await self.throttle.succeeded(ticket)
        await self.accounts.set_password_hash(account.id, password_hash, changed=True)
        await self.sessions.end(account.id, "others", caller.session_id)
        return device

    @contextlib.asynccontextmanager
    async def _counted(self, key: str, ip: str, devices: Sequence[str]) -> AsyncIterator[Ticket]:
        """An attempt counted by the throttle; given back if PostgreSQL could not decide it."""
        ticket = await self.throttle.check(key, ip, list(devices))
        try:
            yield ticket
        except ServiceUnavailable:
            await self.throttle.give_back(ticket)
            raise

    # -- sessions and tokens -----------------------------------------------------------------------

    async def login(
        self, username: str, password: str, *, ip: str, user_agent: str, devices: Sequence[str] = ()
    ) -> tuple[TokenPair, str | None]:
        """The tokens, and the device cookie's value (None: set none). ``devices`` are the device tokens the
        client sent (``sso.devices.tokens_of``)."""
        name = canonical_username(username)
        if name is None:
            raise InvalidUsername()
        key = username_key(name)
        # The throttle counts inside the hashing turn: attempts counted and not yet decided never exceed the
        # pool's size, so a crowd behind one address logging in at once does not look like a failure spree.
        async with self.passwords.turn("login"), self._counted(key, ip, devices) as ticket:
            account = await self.accounts.by_username(key)
            # Unknown usernames are verified against a dummy hash: the same time, the same answer.
            matches = await self.passwords.verify(account.password_hash if account else None, password)
            if account is None or not matches:
                raise InvalidCredentials()
            if account.disabled:
                raise ApiError("this account is disabled", code="account_disabled", status_code=403)
            rehashed = None
            if self.passwords.needs_rehash(account.password_hash):
                rehashed = await self.passwords.hash(password)
        device = await self.throttle.succeeded(ticket)
        if rehashed is not None:
            await self.accounts.set_password_hash(account.id, rehashed, changed=False)
        session = await self.sessions.open(
            user_id=account.id,
            username=account.username,
            roles=account.roles,
            ip=ip,
            user_agent=user_agent,
        )
        # The session's roles: the account's as read above, or a `peak sso` change's made meanwhile.
        grant = Grant(account.id, account.username, session.roles, session.session_id,
                      not_after=session.absolute_expires_at, version=session.version)  # fmt: skip
        return self._pair(grant, str(session.refresh_token), str(session.cookie)), device

    def _pair(self, grant: Grant, refresh: str, cookie: str) -> TokenPair:
        access, expires_in = self.signer.access_token(grant)
        return TokenPair(access, expires_in, refresh, grant.session_id, cookie, grant.scope)

    async def refresh(self, refresh_token: str, *, client_id: str = "") -> TokenPair:
        """A rotation (or a replay of the last one, answered alike); the account is read after it, so its
        roles are at least as new as any change the rotation saw. ``client_id``: an OpenID Connect client's
        own refresh token in the session, authenticated by the caller."""
        refreshed = await self.sessions.rotate_refresh(refresh_token, client_id=client_id)
        account = await self.accounts.by_id(refreshed.user_id)
        if account is None or account.disabled:
            await self.sessions.end(refreshed.user_id, "all")
            raise InvalidGrant()
        grant = Grant(account.id, refreshed.username, account.roles, refreshed.session_id,
                      not_after=refreshed.absolute_expires_at, version=refreshed.version,
                      issued_at=refreshed.issued_at, token_id=refreshed.token_id,
                      client_id=client_id or CLIENT_ID, scope=refreshed.scope if client_id else None)  # fmt: skip
        return self._pair(grant, str(refreshed.refresh_token), "")

    async def caller(self, bearer: str | None, cookie: str | None) -> Caller:
        """The caller of an SSO endpoint; either credential slides the session."""
        if bearer is not None:
            principal = await self.validator.validate(bearer, strict=True)
            return Caller(principal.user_id, principal.session_id, principal.username, principal.roles,
                          principal)  # fmt: skip
        if cookie:
            user_id, sid, username, roles = await self.sessions.by_cookie(cookie)
            return Caller(user_id, sid, username, roles)
        raise Unauthorized("send a bearer token or the peak_sid session cookie")

    async def current_session(
        self, bearer: str | None, cookie: str | None
    ) -> tuple[frozenset[str], CurrentSession]:
        """The caller's roles now and its session, slid, in one coalesced round trip (the strict check's,
        reading the session's fields too): the same verdicts as ``caller``."""
        if bearer is not None:
            seen = self.validator.cached(bearer)
            known = self.sessions.known(seen.session_id) if seen is not None else None
            if known is not None:
                # Read before: its fixed fields are in memory, and the strict check's own coalesced touch
                # (the same round trip, verdicts and roles as GET /sso/userinfo) slides it.
                principal = await self.validator.validate(bearer, strict=True)
                return principal.roles, self.sessions.slid(known, int(time.time() * 1000))
            principal = await self.validator.validate(bearer, account_changes=False)
            try:
                current = await self.sessions.current_by_token(
                    principal.user_id, principal.session_id, principal.token_id
                )
            except (SessionEnded, TokenRevoked) as exc:
                self.validator.refused(principal, exc)
                raise
            except (RedisConnectionError, RedisTimeoutError):
                raise ServiceUnavailable("the session store cannot be reached; try again shortly") from None
            # The token's roles, unless the account changed after it was issued: then Redis's, as strict does.
            if current.version > principal.version:
                return frozenset(current.roles.split()), current
            return principal.roles, current
        if cookie:
            current = await self.sessions.current_by_cookie(cookie)
            return frozenset(current.roles.split()), current
        raise Unauthorized("send a bearer token or the peak_sid session cookie")

    async def end_everything(self, user_id: str) -> list[str]:
        return await self.sessions.end(user_id, "all")

    # -- RFC 7662 / RFC 7009 -----------------------------------------------------------------------

    async def introspect(self, token: str) -> dict[str, Any]:
        try:
            principal = await self.validator.validate(token, strict=True)
        except Unauthorized:
            return {"active": False}
        return {
            "active": True,
            "sub": principal.user_id,
            "sid": principal.session_id,
            "username": principal.username,
            "roles": sorted(principal.roles),
            "exp": principal.expires_at,
            "iat": principal.issued_at,
            "iss": self.validator.issuer,
            "aud": self.validator.audience,
            "token_type": "Bearer",
            "client_id": principal.client_id or CLIENT_ID,
        }

    async def revoke(self, token: str) -> None:
        """RFC 7009: end what the token grants if it is ours; anything else is quietly accepted. The form of
        the token tells its kind, so ``token_type_hint`` is not needed."""
        opaque = OpaqueToken.parse(token)
        if opaque is not None:
            await self.sessions.end_by_refresh_token(opaque)
            return
        try:
            principal = await self.validator.validate(token)
        except Unauthorized:
            return
        await self.sessions.revoke_access_token(principal.user_id, principal.token_id, principal.expires_at)

    async def jwks(self) -> dict[str, Any]:
        fetched_at, jwks = self._jwks
        if time.monotonic() - fetched_at > _JWKS_CACHE_S:
            jwks = await self.keystore.jwks()
            self._jwks = (time.monotonic(), jwks)
        return jwks

    def forget_jwks(self) -> None:
        self._jwks = (0.0, {})

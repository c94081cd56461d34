"""The SSO flows (register, login, refresh, password change, revocation) over accounts, sessions and tokens.

One ``Sso`` per API process, registered in the context; routes and tests call it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from kit.errors import ApiError, Unauthorized
from sso.accounts import Account, Accounts
from sso.client import Principal, TokenValidator
from sso.clients import Clients
from sso.errors import InvalidCredentials, InvalidGrant, WeakPassword
from sso.keystore import KeyStore
from sso.passwords import Passwords
from sso.sessions import Sessions
from sso.settings import SsoSettings
from sso.throttle import LoginThrottle
from sso.tokens import CLIENT_ID, OpaqueToken, Signer

__all__ = ["Caller", "Sso", "TokenPair"]

_USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{3,64}$")
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

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "session_id": self.session_id,
        }


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
    _jwks: tuple[float, dict[str, Any]] = field(default=(0.0, {}), init=False, repr=False)

    # -- accounts --------------------------------------------------------------------------------

    def _check_password(self, password: str) -> None:
        if len(password) < self.settings.min_password_length:
            raise WeakPassword(
                f"the password must be at least {self.settings.min_password_length} characters"
            )
        if len(password) > _MAX_PASSWORD_LENGTH:
            raise WeakPassword(f"the password must be at most {_MAX_PASSWORD_LENGTH} characters")

    async def register(self, username: str, password: str) -> Account:
        if not _USERNAME.match(username):
            raise ApiError(
                "a username is 3 to 64 letters, digits or . _ @ + -", code="invalid_username", status_code=422
            )
        self._check_password(password)
        return await self.accounts.create(username, await self.passwords.hash(password))

    async def change_password(self, caller: Caller, old_password: str, new_password: str) -> None:
        account = await self.accounts.by_id(caller.user_id)
        if account is None or not await self.passwords.verify(account.password_hash, old_password):
            raise InvalidCredentials()
        self._check_password(new_password)
        await self.accounts.set_password_hash(
            account.id, await self.passwords.hash(new_password), changed=True
        )
        await self.sessions.end(account.id, "others", caller.session_id)

    # -- sessions and tokens -----------------------------------------------------------------------

    async def login(self, username: str, password: str, *, ip: str, user_agent: str) -> TokenPair:
        await self.throttle.attempt(username, ip)
        account = await self.accounts.by_username(username)
        # Unknown usernames are verified against a dummy hash: the same time, the same answer.
        matches = await self.passwords.verify(account.password_hash if account else None, password)
        if account is None or not matches:
            await self.throttle.failed(username, ip)
            raise InvalidCredentials()
        if account.disabled:
            raise ApiError("this account is disabled", code="account_disabled", status_code=403)
        await self.throttle.succeeded(username, ip)
        if self.passwords.needs_rehash(account.password_hash):
            await self.accounts.set_password_hash(
                account.id, await self.passwords.hash(password), changed=False
            )
        session = await self.sessions.open(
            user_id=account.id,
            username=account.username,
            roles=account.roles,
            ip=ip,
            user_agent=user_agent,
        )
        return self._pair(account.id, account.username, account.roles, session.session_id,
                          str(session.refresh_token), str(session.cookie))  # fmt: skip

    def _pair(
        self, user_id: str, username: str, roles: tuple[str, ...], sid: str, refresh: str, cookie: str
    ) -> TokenPair:
        access = self.signer.access_token(user_id=user_id, username=username, roles=roles, session_id=sid)
        return TokenPair(access, self.signer.ttl_s, refresh, sid, cookie)

    async def refresh(self, refresh_token: str) -> TokenPair:
        token = OpaqueToken.parse(refresh_token)
        if token is None:
            raise InvalidGrant()
        account = await self.accounts.by_id(token.user_id)
        if account is None or account.disabled:
            await self.sessions.end(token.user_id, "all")
            raise InvalidGrant()
        new, username = await self.sessions.rotate_refresh(refresh_token, account.roles)
        return self._pair(account.id, username, account.roles, token.session_id, str(new), "")

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

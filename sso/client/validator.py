"""``TokenValidator``: access tokens checked locally against the published keys, with what it has verified
cached, revocations applied from ``Revocations`` and, in strict mode, the session checked and slid in Redis in
one round trip (concurrent checks share one write, ``ScriptBatcher``).

Account changes (`peak sso revoke USER admin`, `peak sso disable USER`) count at once in strict mode: Redis
answers the session's roles now when the token's are older. Without Redis a validator refuses a changed
account's older tokens once the change is announced (the holder refreshes and gets the new roles). A key that
leaves the published set takes the verified tokens it signed out of the cache.

Revocations come from Redis (the changes channel and the journals) or, for a validator without Redis access,
from peak's HTTP feed (``revocation_feed``, ``sso.client.feed``); after a gap in the feed every cached token is
verified again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

import jwt
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kit.errors import ServiceUnavailable, Unauthorized
from kit.redis import RedisClient
from kit.tasks import cancel_loops
from sso import scripts
from sso.client.feed import RevocationFeed
from sso.client.jwks import KeySource
from sso.client.principal import Principal
from sso.client.revocations import Revocations
from sso.client.session_check import SessionCheck
from sso.errors import SessionEnded, TokenRevoked

__all__ = ["ALGORITHMS", "MAX_LEEWAY_S", "TokenValidator"]

log = logging.getLogger("peak.sso")

ALGORITHMS = ("RS256", "ES256", "EdDSA")
MAX_LEEWAY_S = 30
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid"]


class TokenValidator:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySource,
        algorithms: Iterable[str] = ALGORITHMS,
        leeway_s: int = 5,
        redis: RedisClient | None = None,
        redis_url: str | None = None,
        idle_timeout_s: int = 900,
        refetch_interval_s: float = 5.0,
        poll_interval_s: float = 1.0,
        cache_size: int = 20_000,
        keys_check_s: float = 60.0,
        revocation_feed: RevocationFeed | None = None,
    ) -> None:
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway must be 0..{MAX_LEEWAY_S} s")
        self.algorithms = frozenset(algorithms) & frozenset(ALGORITHMS)
        if not self.algorithms:
            raise ValueError(f"allow at least one of {', '.join(ALGORITHMS)}")
        self.issuer = issuer
        self.audience = audience
        self._source = keys
        self._leeway_s = leeway_s
        self._check = None if redis is None else SessionCheck(redis, idle_ms=idle_timeout_s * 1000)
        self._refetch_interval_s = refetch_interval_s
        # Keys also leave the set when their tokens have expired (or an operator withdraws one): looked at this
        # often even when nobody announces a change.
        self._keys_check_s = keys_check_s
        self._cache_size = cache_size
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._fetch_lock = asyncio.Lock()
        self._cache: dict[str, Principal] = {}
        self._listeners: list[Callable[[str], Awaitable[None]]] = []
        # With the feed, revocations come from it only: no journal poll, no channel (strict checks still use
        # ``redis`` when given).
        self.revocations = Revocations(
            None if revocation_feed else redis,
            None if revocation_feed else redis_url,
            poll_interval_s=poll_interval_s,
            on_change=self._changed,
            feed=revocation_feed,
        )
        # The same dicts as the revocations', looked up here without an attribute hop on every validation.
        self._ended_sessions = self.revocations.ended_sessions
        self._revoked_tokens = self.revocations.revoked_tokens
        self._changed_accounts = self.revocations.changed_accounts

    # -- lifecycle ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TokenValidator]:
        """Fetch the keys and, with Redis, follow revocations until the block ends."""
        try:
            await self.refresh_keys(force=True)
        except Exception as exc:  # the key source may come up later; unknown kids trigger a refetch
            log.warning("could not fetch the signing keys yet: %s", exc)
        checker = asyncio.create_task(self._check_keys_forever(), name="sso-keys")
        try:
            async with self.revocations.following():
                yield self
        finally:
            await cancel_loops([checker])

    async def _check_keys_forever(self) -> None:
        while True:
            await asyncio.sleep(self._keys_check_s)
            try:
                await self.refresh_keys(force=True)
            except Exception as exc:  # the last keys stay in use
                log.warning("could not fetch the signing keys: %s", exc)

    def on_change(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call ``listener("k")`` when the signing keys change and ``listener("c")`` when clients do."""
        self._listeners.append(listener)

    async def _changed(self, what: str) -> None:
        if what == "gap":  # the feed cannot say what was revoked meanwhile: verify every token again
            self._cache.clear()
            return
        if what == "k":
            await self.refresh_keys(force=True)
        for listener in self._listeners:
            await listener(what)

    # -- validation --------------------------------------------------------------------------------

    async def validate(self, token: str, *, strict: bool = False, account_changes: bool = True) -> Principal:
        """The principal of a valid access token, or Unauthorized. Strict also checks and slides the session.

        ``account_changes=False`` is for a caller that checks the session in Redis itself, in its own script,
        as the strict check does (GET /sso/session): the announced account changes are not applied (Redis
        answers the roles now), and what Redis refuses is reported with ``refused``."""
        principal = self._cache.get(token)
        now = time.time()
        if principal is None or principal.expires_at + self._leeway_s <= now:
            principal = await self._verify_and_cache(token, now)
        if principal.session_id in self._ended_sessions or principal.token_id in self._revoked_tokens:
            raise Unauthorized("the session of this token has ended")
        if strict:
            return await self._check_session(principal, now)
        changed = self._changed_accounts
        if (
            account_changes
            and changed
            and principal.user_id in changed
            and principal.version < changed[principal.user_id][0]
        ):
            raise Unauthorized("the account changed after this token was issued; refresh it")
        return principal

    def cached(self, token: str) -> Principal | None:
        """The principal this process verified ``token`` as, unchecked (expiry, revocation): ``validate`` decides."""
        return self._cache.get(token)

    def refused(self, principal: Principal, error: Exception) -> None:
        """Redis said the session of ``principal`` ended (SessionEnded) or its token was revoked
        (TokenRevoked): this process refuses it from now on without asking again."""
        if isinstance(error, SessionEnded):
            self._ended_sessions[principal.session_id] = principal.expires_at + self._leeway_s
        elif isinstance(error, TokenRevoked):
            self._revoked_tokens[principal.token_id] = principal.expires_at + self._leeway_s

    async def _verify_and_cache(self, token: str, now: float) -> Principal:
        principal = await self._verify(token)
        if len(self._cache) >= self._cache_size:
            self._shrink_cache(now)
        self._cache[token] = principal
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the access token is malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms or not isinstance(kid, str):
            raise Unauthorized("the access token's algorithm or key id is not accepted")
        if str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
            raise Unauthorized("the token is not an access token (typ at+jwt)")
        key = self._keys.get(kid)
        if key is None:
            try:
                await self.refresh_keys()
            except Exception as exc:  # the key source is down: the token cannot be checked now
                log.warning("could not fetch the signing keys: %s", exc)
            key = self._keys.get(kid)
            if key is None:
                raise Unauthorized("the access token was signed by an unknown key")
        # The key's own algorithm, never the header's: no HMAC with a public key, no key-type confusion.
        if key.algorithm_name != alg:
            raise Unauthorized("the access token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway_s,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("the access token is not valid") from None
        roles = claims.get("roles", [])
        sid, username, version = claims["sid"], claims.get("username"), claims.get("ver", 0)
        if not (isinstance(sid, str) and sid and isinstance(username, str) and isinstance(roles, list)):
            raise Unauthorized("the access token lacks its session, username or roles")
        if type(version) is not int or version < 0:
            raise Unauthorized("the access token's account version is not valid")
        return Principal(
            user_id=str(claims["sub"]),
            username=username,
            roles=frozenset(str(r) for r in roles),
            session_id=sid,
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
            issued_at=int(claims["iat"]),
            client_id=str(claims.get("client_id", "")),
            key_id=kid,
            version=version,
            scope=scope if isinstance(scope := claims.get("scope"), str) else None,
        )

    async def _check_session(self, principal: Principal, now: float) -> Principal:
        """The principal with its account's roles now; SessionEnded, TokenRevoked, or ServiceUnavailable when
        Redis cannot be reached."""
        if self._check is None:
            raise RuntimeError("strict validation needs Redis: give the validator a redis client")
        # Remembered, so that this process refuses the token without asking Redis again.
        try:
            roles = scripts.check_token_touch(await self._check(principal, int(now * 1000)))
        except SessionEnded:
            self._ended_sessions[principal.session_id] = principal.expires_at + self._leeway_s
            raise
        except TokenRevoked:
            self._revoked_tokens[principal.token_id] = principal.expires_at + self._leeway_s
            raise
        except (RedisConnectionError, RedisTimeoutError):
            raise ServiceUnavailable("the session store cannot be reached; try again shortly") from None
        if roles is None or roles == principal.roles:
            return principal
        return dataclasses.replace(principal, roles=roles)

    def _shrink_cache(self, now: float) -> None:
        for token in [t for t, p in self._cache.items() if p.expires_at + self._leeway_s <= now]:
            del self._cache[token]
        # Still full of live tokens: drop the oldest tenth; they are verified again when seen.
        for token in list(self._cache)[: max(0, len(self._cache) - self._cache_size * 9 // 10)]:
            del self._cache[token]

    # -- keys --------------------------------------------------------------------------------------

    async def refresh_keys(self, *, force: bool = False) -> None:
        """Fetch the JWK set; without ``force`` at most once per refetch interval (unknown kids are untrusted)."""
        async with self._fetch_lock:
            if not force and time.monotonic() - self._fetched_at < self._refetch_interval_s:
                return
            self._fetched_at = time.monotonic()
            jwks = await self._source()
            entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
            if not isinstance(entries, list):
                raise ValueError("the key source answered no JWK set (no 'keys' list)")
            found: dict[str, jwt.PyJWK] = {}
            for entry in entries:
                if not (isinstance(entry, dict) and entry.get("alg") in self.algorithms):
                    continue
                kid = entry.get("kid")
                if not isinstance(kid, str):
                    continue
                try:
                    found[kid] = jwt.PyJWK(entry)
                except (jwt.PyJWTError, ValueError, TypeError) as exc:
                    log.warning("ignoring signing key %r of the key set: %s", kid, exc)
            gone = self._keys.keys() - found.keys()
            self._keys = found
            if gone:
                # Tokens those keys signed must be checked again, and fail: the key is no longer trusted.
                for token in [t for t, p in self._cache.items() if p.key_id in gone]:
                    del self._cache[token]

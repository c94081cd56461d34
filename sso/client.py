"""What other subsystems use of SSO: verify access tokens locally and know who is calling.

``TokenValidator`` checks signature and claims against keys from a JWKS URL (or given directly), caches what it
has verified, learns of logouts from a Redis channel (with a polled journal as a safety net) and, in strict mode,
checks and slides the session in one Redis round trip. ``authenticate``/``require_admin`` and
``BearerAuthBackend`` put it in front of a route.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import Response

from kit.context import context_of
from kit.errors import Forbidden, Unauthorized, error_body
from kit.lua import Scripts
from kit.redis import RedisClient, create_pubsub_client
from kit.responses import JSONResponse
from kit.routing import raw_header
from sso import keys
from sso.batching import ScriptBatcher
from sso.errors import raise_for_touch

__all__ = [
    "ADMIN_TOKEN_USER",
    "BearerAuthBackend",
    "KeySource",
    "Principal",
    "TokenValidator",
    "authenticate",
    "bearer_token",
    "jwks_from_url",
    "require_admin",
]

log = logging.getLogger("peak.sso")

ADMIN_TOKEN_USER = "admin-token"  # noqa: S105 - a username, not a secret
ALGORITHMS = ("RS256", "ES256", "EdDSA")
MAX_LEEWAY_S = 30
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid"]

# Returns a JWK set ({"keys": [...]}).
KeySource = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Principal(BaseUser):
    user_id: str
    username: str
    roles: frozenset[str]
    session_id: str
    token_id: str
    expires_at: int
    issued_at: int = 0
    # RFC 9068 `client_id`: the client the token was issued to.
    client_id: str = ""

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.username

    @property
    def identity(self) -> str:
        return self.user_id


def _admin_principal() -> Principal:
    return Principal(ADMIN_TOKEN_USER, ADMIN_TOKEN_USER, frozenset({"admin"}), "", "", 0)


def jwks_from_url(url: str, *, timeout_s: float = 5.0) -> KeySource:
    async def fetch() -> Mapping[str, Any]:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(url)
            response.raise_for_status()
            body: Mapping[str, Any] = response.json()
            return body

    return fetch


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
        scripts: Scripts | None = None,
        idle_timeout_s: int = 900,
        refetch_interval_s: float = 5.0,
        poll_interval_s: float = 1.0,
        cache_size: int = 20_000,
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
        self._redis = redis
        self._redis_url = redis_url
        self._touch: ScriptBatcher | None = None
        if redis is not None:
            script = (scripts or Scripts.from_package())["sso_session_touch"]
            self._touch = ScriptBatcher(redis, script, same_keys_same_answer=True)
        self._idle_timeout_ms = idle_timeout_s * 1000
        self._refetch_interval_s = refetch_interval_s
        self._poll_interval_s = poll_interval_s
        self._cache_size = cache_size
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._fetch_lock = asyncio.Lock()
        self._cache: dict[str, Principal] = {}
        # Ended session ids and revoked token ids, with when they can be forgotten (no token outlives that).
        self._ended_sessions: dict[str, float] = {}
        self._revoked_tokens: dict[str, float] = {}
        self._journal_seen_ms = 0.0
        self._listeners: list[Callable[[str], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._subscribed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TokenValidator]:
        """Fetch the keys and, with Redis, follow revocations until the block ends."""
        try:
            await self.refresh_keys(force=True)
        except Exception as exc:  # the key source may come up later; unknown kids trigger a refetch
            log.warning("could not fetch the signing keys yet: %s", exc)
        if self._redis is not None:
            self._journal_seen_ms = (time.time() - keys.REVOKED_JOURNAL_KEEP_S) * 1000
            await self._poll_journal()
            self._tasks.append(asyncio.create_task(self._poll_forever(), name="sso-journal"))
            if self._redis_url is not None:
                self._tasks.append(asyncio.create_task(self._listen_forever(), name="sso-changes"))
                # Messages published before the subscription is in place would be lost to this process.
                try:
                    await asyncio.wait_for(self._subscribed.wait(), 5)
                except TimeoutError:
                    log.warning("not yet subscribed to %s; going on", keys.CHANGES_CHANNEL)
        try:
            yield self
        finally:
            # redis-py's get_message can swallow a cancellation; the listener also checks this flag.
            self._stopping = True
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5)
            self._tasks.clear()
            self._stopping = False

    def on_change(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call ``listener("k")`` when the signing keys change and ``listener("c")`` when clients do."""
        self._listeners.append(listener)

    # -- validation --------------------------------------------------------------------------------

    async def validate(self, token: str, *, strict: bool = False) -> Principal:
        """The principal of a valid access token, or Unauthorized. Strict also checks and slides the session."""
        principal = self._cache.get(token)
        now = time.time()
        if principal is None or principal.expires_at + self._leeway_s <= now:
            principal = await self._verify(token)
            if len(self._cache) >= self._cache_size:
                self._shrink_cache(now)
            self._cache[token] = principal
        if principal.session_id in self._ended_sessions or principal.token_id in self._revoked_tokens:
            raise Unauthorized("the session of this token has ended")
        if strict:
            await self._check_session(principal, now)
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
        sid, username = claims["sid"], claims.get("username")
        if not (isinstance(sid, str) and sid and isinstance(username, str) and isinstance(roles, list)):
            raise Unauthorized("the access token lacks its session, username or roles")
        return Principal(
            user_id=str(claims["sub"]),
            username=username,
            roles=frozenset(str(r) for r in roles),
            session_id=sid,
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
            issued_at=int(claims["iat"]),
            client_id=str(claims.get("client_id", "")),
        )

    async def _check_session(self, principal: Principal, now: float) -> None:
        if self._redis is None or self._touch is None:
            raise RuntimeError("strict validation needs Redis: give the validator a redis client")
        code = await self._touch(
            [
                keys.session(principal.user_id, principal.session_id),
                keys.revoked_token(principal.user_id, principal.token_id),
            ],
            [int(now * 1000), self._idle_timeout_ms, ""],
        )
        if code == 0:
            self._ended_sessions[principal.session_id] = principal.expires_at + self._leeway_s
        elif code == -1:
            self._revoked_tokens[principal.token_id] = principal.expires_at + self._leeway_s
        raise_for_touch(int(code))

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
            found: dict[str, jwt.PyJWK] = {}
            for entry in jwks.get("keys", []):
                if entry.get("alg") in self.algorithms and isinstance(entry.get("kid"), str):
                    found[entry["kid"]] = jwt.PyJWK(entry)
            self._keys = found

    # -- revocations -------------------------------------------------------------------------------

    def forget(self, message: str) -> None:
        """Apply a revocation message: ``s:<session id>`` or ``j:<token id>``."""
        kind, _, value = message.partition(":")
        until = time.time() + keys.REVOKED_JOURNAL_KEEP_S
        if kind == "s" and value:
            self._ended_sessions[value] = until
        elif kind == "j" and value:
            self._revoked_tokens[value] = until

    async def _handle(self, message: str) -> None:
        if message in ("k", "c"):
            if message == "k":
                await self.refresh_keys(force=True)
            for listener in self._listeners:
                await listener(message)
        else:
            self.forget(message)

    async def _listen_forever(self) -> None:
        assert self._redis_url is not None
        while not self._stopping:
            client = create_pubsub_client(self._redis_url)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.CHANGES_CHANNEL)
                    if self._subscribed.is_set():  # back after a loss: catch up on keys and clients
                        await self._handle("k")
                        await self._handle("c")
                    self._subscribed.set()
                    while not self._stopping:
                        message = await pubsub.get_message(timeout=0.2)
                        if message is not None and message["type"] == "message":
                            await self._handle(str(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The journal poll covers what was missed while disconnected.
                log.warning("revocation channel lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)
            finally:
                await client.aclose()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self._poll_journal()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not read the revocation journal: %s", exc)

    async def _poll_journal(self) -> None:
        assert self._redis is not None
        entries: Any = await self._redis.zrangebyscore(
            keys.REVOKED_JOURNAL, f"({self._journal_seen_ms}", "+inf", withscores=True
        )
        for member, score in entries:
            self._journal_seen_ms = max(self._journal_seen_ms, float(score))
            self.forget(str(member))
        now = time.time()
        for table in (self._ended_sessions, self._revoked_tokens):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]


# -- request helpers -------------------------------------------------------------------------------


def bearer_token(conn: HTTPConnection) -> str | None:
    # The raw header list rather than conn.headers: this runs on every authenticated request.
    value = raw_header(conn.scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(request: HTTPConnection, *, strict: bool = False) -> Principal:
    """The caller of a request with an SSO bearer token, or 401 ``unauthenticated``."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("send an SSO access token: Authorization: Bearer <token>")
    return await context_of(request).get(TokenValidator).validate(token, strict=strict)


def _is_admin_token(request: HTTPConnection, token: str) -> bool:
    expected = context_of(request).settings.admin_token
    return bool(expected) and hmac.compare_digest(token.encode(), str(expected).encode())


async def require_admin(request: HTTPConnection) -> Principal:
    """An SSO token with the admin role (checked strictly) or PEAK_ADMIN_TOKEN; 401 without, 403 otherwise."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("send an admin credential: Authorization: Bearer <token>")
    if _is_admin_token(request, token):
        return _admin_principal()
    principal = await context_of(request).get(TokenValidator).validate(token, strict=True)
    if not principal.has_role("admin"):
        raise Forbidden("this needs the admin role")
    return principal


class BearerAuthBackend(AuthenticationBackend):
    """For Starlette's AuthenticationMiddleware: ``request.user`` becomes the Principal, scopes its roles.

    No Authorization header leaves the request anonymous (``requires("authenticated")`` answers it); an invalid
    token is refused with a 401 when used with ``on_error=BearerAuthBackend.on_error``.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = bearer_token(conn)
        if token is None:
            return None
        if _is_admin_token(conn, token):
            principal = _admin_principal()
        else:
            try:
                principal = await context_of(conn).get(TokenValidator).validate(token, strict=self.strict)
            except Unauthorized as exc:
                raise AuthenticationError(exc.message) from None
        return AuthCredentials(["authenticated", *sorted(principal.roles)]), principal

    @staticmethod
    def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
        return JSONResponse(
            error_body("unauthenticated", str(exc) or "a valid bearer token is required"),
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="peak"'},
        )

"""Access tokens (JWT, signed with the current key of PEAK_SSO_ALGORITHM) and the opaque secrets: refresh tokens and cookies.

An opaque secret reads ``<user id>.<session id>.<random>``: the ids find the session in one Redis slot, the
random part (256 bits) is what proves possession and only its SHA-256 digest is stored.

A refresh token's successor is not random but derived from it with a key of PEAK_SECRET_KEY's (HMAC-SHA256),
and so is the id of the access token issued with it: a refresh presented again (a retry whose answer was
lost) is answered with the very same pair, although Redis keeps no secret of either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sso.keystore import KeyRing, KeyStore

__all__ = [
    "CANONICAL_UUID",
    "CLIENT_ID",
    "Grant",
    "OpaqueToken",
    "Signer",
    "digest",
    "new_session_id",
    "rotation_key",
]

# str(uuid.UUID(x)) == x exactly when x reads so (0.3 µs, against 2.6 by uuid.UUID).
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# RFC 9068 `client_id` of the tokens /sso/login and /sso/token issue: the first-party login client.
CLIENT_ID = "peak"


def new_session_id() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def rotation_key(secret_key: str) -> bytes:
    """The key refresh token successors are derived with, from PEAK_SECRET_KEY."""
    return hmac.new(secret_key.encode(), b"peak sso: refresh token successors", hashlib.sha256).digest()


def _derive(key: bytes, purpose: bytes, secret: str, size: int) -> str:
    mac = hmac.new(key, purpose + secret.encode(), hashlib.sha256).digest()[:size]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@dataclass(frozen=True)
class OpaqueToken:
    user_id: str
    session_id: str
    secret: str

    @classmethod
    def new(cls, user_id: str, session_id: str) -> OpaqueToken:
        return cls(user_id, session_id, secrets.token_urlsafe(32))

    @classmethod
    def parse(cls, value: str) -> OpaqueToken | None:
        parts = value.split(".")
        if len(parts) != 3 or not all(parts) or len(value) > 200:
            return None
        if not CANONICAL_UUID.fullmatch(parts[0]):  # the user id picks a Redis key: only its one spelling
            return None
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.user_id}.{self.session_id}.{self.secret}"

    def __repr__(self) -> str:
        return f"OpaqueToken(user_id={self.user_id!r}, session_id={self.session_id!r})"

    @property
    def digest(self) -> str:
        return digest(self.secret)

    def successor(self, key: bytes) -> OpaqueToken:
        """The refresh token that replaces this one (the same every time: 256 bits derived from its secret)."""
        return OpaqueToken(self.user_id, self.session_id, _derive(key, b"next:", self.secret, 32))

    def access_token_id(self, key: bytes) -> str:
        """The ``jti`` of the access token issued with this refresh token (128 bits, the same every time)."""
        return _derive(key, b"jti:", self.secret, 16)


@dataclass(frozen=True)
class Grant:
    """What an access token says of its session. ``not_after`` is the session's absolute end (s), which
    ``exp`` never passes; ``version`` the account version the roles belong to (the ``ver`` claim)."""

    user_id: str
    username: str
    roles: tuple[str, ...]
    session_id: str
    not_after: int
    version: int = 0
    # A replayed refresh gets the first answer's: its time and its token id. Else now and a random id.
    issued_at: int | None = None
    token_id: str | None = None
    # An OpenID Connect client's token: the client (RFC 9068 ``client_id``) and the scope granted (``scope``).
    client_id: str = CLIENT_ID
    scope: str | None = None


class Signer:
    """Signs access tokens with the current key of PEAK_SSO_ALGORITHM and ID tokens with that of their
    client's algorithm; reloaded when `peak sso rotate-keys` announces new keys."""

    def __init__(self, store: KeyStore, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._keys = KeyRing(store)
        # The access tokens' algorithm (PEAK_SSO_ALGORITHM).
        self.algorithm = store.algorithm
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    async def load(self) -> None:
        """Read the access tokens' key and every other one signed with so far (again after a rotation)."""
        await self._keys.load(self.algorithm)

    async def ready(self, algorithm: str) -> None:
        """Make sure ``sign`` has the key of ``algorithm`` (an ID token's), reading it on first use."""
        await self._keys.key(algorithm)

    async def stale(self) -> bool:
        """Whether a loaded key is no longer its algorithm's current one (a rotation this process missed)."""
        return await self._keys.stale()

    @property
    def kids(self) -> dict[str, str]:
        return self._keys.kids

    def access_token(self, grant: Grant) -> tuple[str, int]:
        """The signed token and its ``expires_in``: the lifetime, or less where the session ends sooner."""
        now = int(time.time()) if grant.issued_at is None else grant.issued_at
        expires_at = min(now + self.ttl_s, grant.not_after)
        claims = {
            "iss": self.issuer,
            "sub": grant.user_id,
            "aud": self.audience,
            "exp": expires_at,
            "iat": now,
            "nbf": now,
            "jti": grant.token_id or secrets.token_urlsafe(16),
            "sid": grant.session_id,
            "client_id": grant.client_id,
            "username": grant.username,
            "roles": sorted(set(grant.roles)),
            "ver": grant.version,
        }
        if grant.scope is not None:
            claims["scope"] = grant.scope
        return self.sign(claims, typ="at+jwt"), max(0, expires_at - now)

    def sign(self, claims: dict[str, object], *, typ: str, algorithm: str | None = None) -> str:
        """``claims`` signed with the current key of ``algorithm`` (default the access tokens'; any other must
        be ``ready`` first), header ``kid`` and ``typ``."""
        return self._keys.sign(claims, typ=typ, algorithm=algorithm or self.algorithm)

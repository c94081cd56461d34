"""Access tokens (JWT, signed with the current key) and the opaque secrets: refresh tokens and cookies.

An opaque secret reads ``<user id>.<session id>.<random>``: the ids find the session in one Redis slot, the
random part (256 bits) is what proves possession and only its SHA-256 digest is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from sso.keystore import KeyStore, SigningKey

__all__ = ["CLIENT_ID", "OpaqueToken", "Signer", "digest", "new_session_id"]

# RFC 9068 `client_id` of the tokens /sso/login and /sso/token issue: the first-party login client.
CLIENT_ID = "peak"


def new_session_id() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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
        try:
            canonical = str(uuid.UUID(parts[0]))
        except ValueError:
            return None
        if canonical != parts[0]:  # the user id picks a Redis key: only its one spelling
            return None
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.user_id}.{self.session_id}.{self.secret}"

    def __repr__(self) -> str:
        return f"OpaqueToken(user_id={self.user_id!r}, session_id={self.session_id!r})"

    @property
    def digest(self) -> str:
        return digest(self.secret)


class Signer:
    """Signs access tokens with the current key; reloaded when `peak sso rotate-keys` announces a new one."""

    def __init__(self, store: KeyStore, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._store = store
        self._key: SigningKey | None = None
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    async def load(self) -> None:
        self._key = await self._store.signing_key()

    @property
    def kid(self) -> str:
        assert self._key is not None, "Signer.load() first"
        return self._key.kid

    def access_token(self, *, user_id: str, username: str, roles: Iterable[str], session_id: str) -> str:
        assert self._key is not None, "Signer.load() first"
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user_id,
            "aud": self.audience,
            "exp": now + self.ttl_s,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "sid": session_id,
            "client_id": CLIENT_ID,
            "username": username,
            "roles": sorted(set(roles)),
        }
        return jwt.encode(
            claims,
            self._key.private_key,  # type: ignore[arg-type]
            algorithm=self._key.algorithm,
            headers={"kid": self._key.kid, "typ": "at+jwt"},
        )

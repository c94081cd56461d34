"""Subsystem clients allowed to introspect tokens, checked from memory so introspection never waits on SQL.

Secrets are 256 random bits, so their SHA-256 digest is a sufficient store and a constant-time compare of
digests is cheap enough for every call. The table is reloaded when `peak sso add-client` announces a change,
and at most once a second when an unknown name shows up.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time

from kit.db import Pool
from sso.errors import InvalidClient
from sso.tokens import digest

__all__ = ["Clients"]

_RELOAD_INTERVAL_S = 1.0
_VERIFIED_MAX = 1000


class Clients:
    def __init__(self, db: Pool) -> None:
        self._db = db
        self._digests: dict[str, str] = {}
        self._loaded_at = 0.0
        # Authorization headers already verified, so introspection skips the digest for a known caller.
        self._verified: dict[str, str] = {}

    async def reload(self) -> None:
        self._loaded_at = time.monotonic()
        rows = await self._db.fetch("SELECT name, secret_sha256 FROM sso_clients")
        self._digests = {r["name"]: r["secret_sha256"] for r in rows}
        self._verified = {}

    async def add(self, name: str) -> str:
        """Register (or re-key) a client and return its secret, which is not stored anywhere."""
        secret = secrets.token_urlsafe(32)
        await self._db.execute(
            "INSERT INTO sso_clients (name, secret_sha256) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET secret_sha256 = excluded.secret_sha256",
            name,
            digest(secret),
        )
        return secret

    async def authenticate(self, authorization: str) -> str:
        """The client name from an ``Authorization: Basic`` header, or InvalidClient."""
        known = self._verified.get(authorization)
        if known is not None:
            return known
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise InvalidClient()
        try:
            name, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidClient() from None
        if not sep:
            raise InvalidClient()
        expected = self._digests.get(name)
        if expected is None and time.monotonic() - self._loaded_at >= _RELOAD_INTERVAL_S:
            await self.reload()
            expected = self._digests.get(name)
        # Compared even for unknown names so the timing does not tell which names exist.
        if not hmac.compare_digest(digest(secret), expected or "0" * 64) or expected is None:
            raise InvalidClient()
        if len(self._verified) < _VERIFIED_MAX:
            self._verified[authorization] = name
        return name

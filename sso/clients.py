"""Registered clients, checked from memory so that neither introspection nor the single sign-on hop waits on
SQL: introspection clients (a name and a secret) and OpenID Connect clients (the same, with redirect URIs).

Secrets are 256 random bits, so their SHA-256 digest is a sufficient store and a constant-time compare of
digests is cheap enough for every call. The table is reloaded when `peak sso add-client` announces a change,
and at most once a second when an unknown name shows up.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kit.db import Pool
from kit.errors import POSTGRES_OUTAGES
from sso.errors import InvalidClient
from sso.keystore import DEFAULT_OIDC_ALGORITHM
from sso.tokens import digest

__all__ = ["Clients", "OidcClient"]

log = logging.getLogger("peak.sso")

_RELOAD_INTERVAL_S = 1.0
_VERIFIED_MAX = 1000
# Compared against when a name is unknown or public, so the timing does not tell which names exist.
_NO_DIGEST = "0" * 64


@dataclass(frozen=True, slots=True)
class OidcClient:
    """An OpenID Connect client: one with at least one redirect URI (matched by string equality)."""

    name: str
    public: bool
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str | None
    allow_no_pkce: bool
    # What its ID and logout tokens are signed with: RS256 unless registered otherwise.
    id_token_signed_response_alg: str = DEFAULT_OIDC_ALGORITHM


class Clients:
    def __init__(self, db: Pool) -> None:
        self._db = db
        self._digests: dict[str, str] = {}
        self._oidc: dict[str, OidcClient] = {}
        self._loaded_at = 0.0
        # Authorization headers already verified, so introspection skips the digest for a known caller.
        self._verified: dict[str, str] = {}

    async def reload(self) -> None:
        self._loaded_at = time.monotonic()
        rows = await self._db.fetch(
            "SELECT name, secret_sha256, redirect_uris, post_logout_redirect_uris, backchannel_logout_uri,"
            " public, allow_no_pkce, id_token_signed_response_alg FROM sso_clients"
        )
        self._digests = {
            r["name"]: r["secret_sha256"] for r in rows if not r["public"] and r["secret_sha256"]
        }
        self._oidc = {
            r["name"]: OidcClient(
                name=r["name"],
                public=r["public"],
                redirect_uris=tuple(r["redirect_uris"]),
                post_logout_redirect_uris=tuple(r["post_logout_redirect_uris"]),
                backchannel_logout_uri=r["backchannel_logout_uri"],
                allow_no_pkce=r["allow_no_pkce"],
                id_token_signed_response_alg=r["id_token_signed_response_alg"],
            )
            for r in rows
            if r["redirect_uris"]
        }
        self._verified = {}

    async def add(
        self,
        name: str,
        *,
        redirect_uris: Sequence[str] = (),
        public: bool = False,
        post_logout_redirect_uris: Sequence[str] = (),
        backchannel_logout_uri: str | None = None,
        allow_no_pkce: bool = False,
        id_token_signed_response_alg: str = DEFAULT_OIDC_ALGORITHM,
    ) -> str | None:
        """Register (or re-register: every field and the secret replaced) a client; its secret, which is
        stored nowhere, or None for a public client (it has none)."""
        secret = None if public else secrets.token_urlsafe(32)
        await self._db.execute(
            "INSERT INTO sso_clients (name, secret_sha256, redirect_uris, post_logout_redirect_uris,"
            " backchannel_logout_uri, public, allow_no_pkce, id_token_signed_response_alg)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (name) DO UPDATE SET secret_sha256 = excluded.secret_sha256,"
            " redirect_uris = excluded.redirect_uris,"
            " post_logout_redirect_uris = excluded.post_logout_redirect_uris,"
            " backchannel_logout_uri = excluded.backchannel_logout_uri, public = excluded.public,"
            " allow_no_pkce = excluded.allow_no_pkce,"
            " id_token_signed_response_alg = excluded.id_token_signed_response_alg",
            name,
            "" if secret is None else digest(secret),
            list(redirect_uris),
            list(post_logout_redirect_uris),
            backchannel_logout_uri,
            public,
            allow_no_pkce,
            id_token_signed_response_alg,
        )
        return secret

    async def listed(self) -> list[dict[str, Any]]:
        """Every registered client as `peak sso clients` shows it (never a secret nor its digest)."""
        rows = await self._db.fetch(
            "SELECT name, redirect_uris, post_logout_redirect_uris, backchannel_logout_uri, public,"
            " allow_no_pkce, id_token_signed_response_alg, created_at FROM sso_clients ORDER BY name"
        )
        return [dict(r) for r in rows]

    def get(self, client_id: str) -> OidcClient | None:
        """The OpenID Connect client of that id, from memory (None: unknown, or an introspection client)."""
        return self._oidc.get(client_id)

    async def find(self, client_id: str) -> OidcClient | None:
        """``get``, reloading the table first (at most once a second) when the id is unknown: a client
        registered while its "c" message was lost is found all the same."""
        found = self._oidc.get(client_id)
        if found is None and time.monotonic() - self._loaded_at >= _RELOAD_INTERVAL_S:
            try:
                await self.reload()
            except POSTGRES_OUTAGES as exc:
                # The clients in memory still answer; an unknown one stays unknown until PostgreSQL is back.
                log.warning("could not reload the SSO clients: %s", type(exc).__name__)
                self._loaded_at = time.monotonic()
            found = self._oidc.get(client_id)
        return found

    def verify(self, client_id: str, secret: str) -> bool:
        """Whether ``secret`` is the confidential client's, in constant time whatever the name."""
        expected = self._digests.get(client_id)
        matches = hmac.compare_digest(digest(secret), expected or _NO_DIGEST)
        return matches and expected is not None

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
        if name not in self._digests and time.monotonic() - self._loaded_at >= _RELOAD_INTERVAL_S:
            await self.reload()
        if not self.verify(name, secret):
            raise InvalidClient()
        if len(self._verified) < _VERIFIED_MAX:
            self._verified[authorization] = name
        return name

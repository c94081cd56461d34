"""Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0, section 2.4), signed in the workers.

The workers sign no access tokens and have no ``Signer``: this loads the current signing key itself and checks
every ``_KEY_CHECK_S`` whether `peak sso rotate-keys` made another current (a token signed by a withdrawn key
would be refused by every client). While PostgreSQL is out of reach it goes on with the key it has.
"""

from __future__ import annotations

import logging
import secrets
import time

import jwt

from sso.keystore import KeyStore, SigningKey

__all__ = ["BACKCHANNEL_EVENT", "LOGOUT_TOKEN_TTL_S", "LogoutTokens"]

log = logging.getLogger("peak.sso")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Long enough for a receiver's clock skew, short enough that a token caught on the way is soon worthless.
LOGOUT_TOKEN_TTL_S = 120
_KEY_CHECK_S = 10.0


class LogoutTokens:
    def __init__(self, store: KeyStore, *, issuer: str) -> None:
        self._store = store
        self._key: SigningKey | None = None
        self._checked_at = 0.0
        self.issuer = issuer

    async def current_key(self) -> SigningKey:
        """The signing key, loaded on first use and checked against the store's current one now and then."""
        if self._key is None:
            self._key = await self._store.signing_key()
            self._checked_at = time.monotonic()
        elif time.monotonic() - self._checked_at >= _KEY_CHECK_S:
            self._checked_at = time.monotonic()
            try:
                if await self._store.current_kid() != self._key.kid:
                    self._key = await self._store.signing_key()
            except Exception as exc:  # PostgreSQL away: keep signing with the key we have
                log.warning("back-channel logout: could not check the signing key (%s)", type(exc).__name__)
        return self._key

    def forget(self) -> None:
        """Check the key at the next token (the "k" message: the keys changed)."""
        self._checked_at = 0.0

    async def token(self, *, client_id: str, sub: str, sid: str) -> str:
        """A fresh logout token for one client: its own ``jti`` and ``iat`` every attempt."""
        key = await self.current_key()
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_TTL_S,
            "jti": secrets.token_urlsafe(16),
            "sub": sub,
            "sid": sid,
            "events": {BACKCHANNEL_EVENT: {}},
        }
        return jwt.encode(
            claims,
            key.private_key,  # type: ignore[arg-type]
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": "logout+jwt"},
        )

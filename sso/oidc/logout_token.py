"""Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0, section 2.4), signed in the workers.

A logout token is signed with its client's ``id_token_signed_response_alg`` (RS256 unless registered
otherwise): the key its ID tokens are verified with. The workers sign no access tokens and have no ``Signer``:
this keeps the current keys itself and checks every ``_KEY_CHECK_S`` whether `peak sso rotate-keys` made
others current (a token signed by a withdrawn key would be refused by every client). While PostgreSQL is out
of reach it goes on with the keys it has.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from sso.keystore import DEFAULT_OIDC_ALGORITHM, KeyRing, KeyStore

__all__ = ["BACKCHANNEL_EVENT", "LOGOUT_TOKEN_TTL_S", "LogoutTokens"]

log = logging.getLogger("peak.sso")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Long enough for a receiver's clock skew, short enough that a token caught on the way is soon worthless.
LOGOUT_TOKEN_TTL_S = 120
_KEY_CHECK_S = 10.0


class LogoutTokens:
    """``algorithm_of`` gives a client's ``id_token_signed_response_alg``."""

    def __init__(self, store: KeyStore, *, issuer: str, algorithm_of: Callable[[str], str]) -> None:
        self._keys = KeyRing(store)
        self._algorithm_of = algorithm_of
        self._checked_at = 0.0
        self.issuer = issuer

    async def check(self) -> None:
        """Load the default algorithm's key on first use; then now and then read the keys again if
        another is current."""
        if not self._keys.loaded:
            await self._keys.load(DEFAULT_OIDC_ALGORITHM)
            self._checked_at = time.monotonic()
        elif time.monotonic() - self._checked_at >= _KEY_CHECK_S:
            self._checked_at = time.monotonic()
            try:
                if await self._keys.stale():
                    await self._keys.load()
            except Exception as exc:  # PostgreSQL away: keep signing with the keys we have
                log.warning("back-channel logout: could not check the signing keys (%s)", type(exc).__name__)

    def forget(self) -> None:
        """Check the keys at the next token (the "k" message: the keys changed)."""
        self._checked_at = 0.0

    async def token(self, *, client_id: str, sub: str, sid: str) -> str:
        """A fresh logout token for one client: its own ``jti`` and ``iat`` every attempt."""
        await self.check()
        algorithm = self._algorithm_of(client_id)
        await self._keys.key(algorithm)
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
        return self._keys.sign(claims, typ="logout+jwt", algorithm=algorithm)

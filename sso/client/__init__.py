"""What other subsystems use of SSO: verify access tokens locally and know who is calling.

``TokenValidator`` checks signature and claims against keys from a JWKS URL (or given directly), caches what it
has verified, learns of logouts from a Redis channel (with a polled journal as a safety net) and, in strict mode,
checks and slides the session in one Redis round trip. ``authenticate``/``require_admin`` and
``BearerAuthBackend`` put it in front of a route.
"""

from __future__ import annotations

from sso.client.guards import BearerAuthBackend, authenticate, bearer_token, require_admin
from sso.client.jwks import KeySource, jwks_from_url
from sso.client.principal import ADMIN_TOKEN_USER, Principal
from sso.client.validator import TokenValidator

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

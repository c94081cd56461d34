"""``/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 section 3): every field it requires,
and those of the features peak has: PKCE (RFC 7636), RP-initiated and back-channel logout, introspection
(RFC 7662) and revocation (RFC 7009)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sso.oidc.request import SCOPES

__all__ = ["CLAIMS", "document"]

# What the access token (``ver``: the account version its roles were issued at, ``roles``), the ID token and
# userinfo carry.
CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "auth_time", "nonce", "at_hash", "username",
          "preferred_username", "name", "roles", "ver")  # fmt: skip


def document(*, issuer: str, base: str, algorithms: Sequence[str]) -> dict[str, Any]:
    """The discovery document; ``base`` is the public URL every endpoint hangs from, ``algorithms`` those a
    client may register for its ID tokens, RS256 (every client's default, Discovery 1.0 section 3) first."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/sso/authorize",
        "token_endpoint": f"{base}/sso/token",
        "userinfo_endpoint": f"{base}/sso/userinfo",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "end_session_endpoint": f"{base}/sso/end_session",
        "introspection_endpoint": f"{base}/sso/introspect",
        "revocation_endpoint": f"{base}/sso/revoke",
        "scopes_supported": [*SCOPES],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(algorithms),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [*CLAIMS],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }

"""``GET /sso/userinfo`` for an OpenID Connect client's access token (OpenID Connect Core 5.3): the claims of
the scopes the token was granted (its ``scope`` claim)."""

from __future__ import annotations

from typing import Any

from sso.client import Principal

__all__ = ["oidc_userinfo"]


def oidc_userinfo(principal: Principal) -> dict[str, Any]:
    """``sub`` always; ``preferred_username`` and ``name`` (the username) with ``profile``; the roles and the
    session id as peak's own claims."""
    body: dict[str, Any] = {
        "sub": principal.user_id,
        "roles": sorted(principal.roles),
        "sid": principal.session_id,
    }
    if "profile" in (principal.scope or "").split():
        body["preferred_username"] = principal.username
        body["name"] = principal.username
        body["username"] = principal.username
    return body

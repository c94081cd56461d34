"""The token endpoint's grants for OpenID Connect clients: ``authorization_code`` (with PKCE, RFC 7636: S256
only) and ``refresh_token`` (the client's own refresh token in the session, rotated as the login's is).

A code redemption is one Redis script (``sso/lua/code_redeem.lua``) and two signatures (the access token,
the same JWT the rest of peak validates, with PEAK_SSO_ALGORITHM, and the ID token, with the client's
algorithm); PostgreSQL is asked only at a process's first use of an algorithm (its key).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from typing import Any

from sso.clients import OidcClient
from sso.errors import CodeRefused, OAuthInvalidRequest
from sso.oidc.idtoken import id_token
from sso.service import Sso
from sso.tokens import Grant, OpaqueToken

__all__ = ["exchange_code", "refresh_for_client", "s256"]

# RFC 7636 4.1: 43 to 128 characters of the unreserved set.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def s256(verifier: str) -> str:
    """The S256 code challenge of a verifier: BASE64URL(SHA256(ASCII(verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _challenge(client: OidcClient, verifier: str | None) -> str:
    """The challenge the code must carry: that of the verifier sent, or "" (no PKCE) where the client may."""
    if verifier is not None:
        if not _VERIFIER.fullmatch(verifier):
            raise OAuthInvalidRequest("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")
        return s256(verifier)
    if client.public:
        raise OAuthInvalidRequest("a public client must use PKCE: send code_verifier")
    if not client.allow_no_pkce:
        raise OAuthInvalidRequest("this client must use PKCE: send code_verifier")
    return ""


async def exchange_code(
    sso: Sso, client: OidcClient, *, code: str | None, redirect_uri: str | None, verifier: str | None
) -> dict[str, Any]:
    """The token response (OpenID Connect Core 3.1.3.3) for an authorization code of ``client``."""
    if not code:
        raise OAuthInvalidRequest("field 'code' is required")
    if redirect_uri is None:
        raise OAuthInvalidRequest("field 'redirect_uri' is required (the one sent to /sso/authorize)")
    challenge = _challenge(client, verifier)
    opened = sso.codes.open(code, now_ms=int(time.time() * 1000))
    if opened is not None:
        user_id, session_id, code_digest, sealed = opened
    elif (stored := OpaqueToken.parse(code)) is not None:  # a code of the release before, recorded in Redis
        user_id, session_id, code_digest, sealed = stored.user_id, stored.session_id, stored.digest, None
    else:
        raise CodeRefused()
    # The ID token's key before the code is spent: a first use that cannot read it leaves the code unspent.
    algorithm = client.id_token_signed_response_alg
    await sso.signer.ready(algorithm)
    redemption = await sso.sessions.redeem_code(
        user_id=user_id,
        session_id=session_id,
        code_digest=code_digest,
        sealed=sealed,
        client_id=client.name,
        redirect_uri=redirect_uri,
        challenge=challenge,
    )
    r = redemption.redeemed
    now = int(time.time())
    grant = Grant(user_id, r.username, r.roles, session_id,
                  not_after=r.absolute_expires_at_ms // 1000, version=r.version, issued_at=now,
                  token_id=redemption.token_id, client_id=client.name, scope=r.scope)  # fmt: skip
    access, expires_in = sso.signer.access_token(grant)
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": str(redemption.refresh_token),
        "scope": r.scope,
    }
    scopes = frozenset(r.scope.split())
    if "openid" in scopes:
        body["id_token"] = id_token(
            sso.signer, user_id=user_id, username=r.username, client_id=client.name,
            session_id=session_id, issued_at=now, expires_at=now + expires_in, auth_time=r.auth_time,
            nonce=r.nonce, scopes=scopes, access_token=access, algorithm=algorithm,
        )  # fmt: skip
    return body


async def refresh_for_client(sso: Sso, client: OidcClient, refresh_token: str | None) -> dict[str, Any]:
    """The token response for the client's refresh token: rotated (or the same answer again for a retry
    within the grace), as the login's is; another client's or the login's own token is unknown here."""
    if not refresh_token:
        raise OAuthInvalidRequest("field 'refresh_token' is required")
    pair = await sso.refresh(refresh_token, client_id=client.name)
    return {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "scope": pair.scope or "",
    }

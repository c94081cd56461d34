"""ID tokens (OpenID Connect Core 1.0, 2 and 3.1.3.6), signed with the client's ``id_token_signed_response_alg``
(RS256 unless registered otherwise) by a key of the same JWKS as access tokens."""

from __future__ import annotations

import base64
import hashlib

from sso.tokens import Signer

__all__ = ["at_hash", "id_token"]

# The hash whose left half is ``at_hash``: the one of the signature algorithm (Core 3.1.3.6); Ed25519 signs
# with SHA-512 inside (the OpenID errata for EdDSA).
_HASHES = {"RS256": hashlib.sha256, "ES256": hashlib.sha256, "EdDSA": hashlib.sha512}


def at_hash(access_token: str, algorithm: str) -> str:
    """BASE64URL of the left half of the hash of the access token's ASCII octets."""
    digest = _HASHES[algorithm](access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def id_token(
    signer: Signer,
    *,
    user_id: str,
    username: str,
    client_id: str,
    session_id: str,
    issued_at: int,
    expires_at: int,
    auth_time: int,
    nonce: str,
    scopes: frozenset[str],
    access_token: str,
    algorithm: str,
) -> str:
    """The ID token of a code redemption: ``nonce`` as the authorization request sent it ("" for none), the
    profile claims when the ``profile`` scope was granted; ``algorithm``'s key must be ``signer.ready``."""
    claims: dict[str, object] = {
        "iss": signer.issuer,
        "sub": user_id,
        "aud": client_id,
        "exp": expires_at,
        "iat": issued_at,
        "auth_time": auth_time,
        "sid": session_id,
        "at_hash": at_hash(access_token, algorithm),
    }
    if nonce:
        claims["nonce"] = nonce
    if "profile" in scopes:
        claims["preferred_username"] = username
        claims["name"] = username
    return signer.sign(claims, typ="JWT", algorithm=algorithm)

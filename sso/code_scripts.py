"""The authorization code's redemption (``sso/lua/code_redeem.lua``, bound in ``sso/scripts.py``): the KEYS
and ARGV it takes, and what its reply means (``sso/sessions.py`` calls it, ``sso/oidc/grant.py`` decides when)."""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import NamedTuple

from kit.redis import RedisClient
from sso import keys
from sso.errors import CodeRefused, CodeReused
from sso.scripts import CODE_REDEEM

__all__ = ["Code", "CodeRecord", "Redeemed", "redeem_code", "redirect_digest"]

# What every announcing script is told (as in sso/scripts.py): how long journal entries stay (ms), the channel.
_ANNOUNCE = (keys.REVOKED_JOURNAL_KEEP_S * 1000, keys.CHANGES_CHANNEL)


class Code(NamedTuple):
    """What a sealed code carries (``sso/oidc/codes.py`` seals it), in the order code_redeem.lua takes it. The
    redirect URI only by its digest (``redirect_digest``): the token endpoint compares the one presented with
    it, and the code stays short whatever the URI's length."""

    client_id: str
    redirect_digest: str
    code_challenge: str
    code_challenge_method: str
    scope: str
    nonce: str
    issued_at: int  # ms


@functools.lru_cache(maxsize=1024)  # the registered URIs, which every hop sends
def redirect_digest(redirect_uri: str) -> str:
    """The redirect URI as a sealed code carries it: BASE64URL of the first 128 bits of its SHA-256."""
    raw = hashlib.sha256(redirect_uri.encode("utf-8", "surrogatepass")).digest()[:16]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class CodeRecord(NamedTuple):
    """A code of the release before 2026-12-05, whose record the hop wrote to Redis (the hash field `r`, a
    JSON array of these fields' values): code_redeem.lua still redeems it, by position in this order."""

    client_id: str
    redirect_uri: str
    scope: str
    nonce: str
    code_challenge: str
    code_challenge_method: str
    sid: str
    user_id: str
    issued_at: int  # ms


class Redeemed(NamedTuple):
    """An authorization code just redeemed: its session as it is now and what the code recorded."""

    username: str
    roles: tuple[str, ...]
    version: int
    absolute_expires_at_ms: int
    scope: str
    nonce: str
    auth_time: int


# CODE_REDEEM's refusals; -1 (a reuse) is CodeReused.
_CODE_REFUSED = {
    0: "the authorization code is invalid or has expired",
    -2: "the authorization code was issued to another client",
    -3: "redirect_uri is not the one the authorization code was issued for",
    -4: "the PKCE code_verifier does not match the code's code_challenge",
    -5: "the session the authorization code belongs to has ended",
}


async def redeem_code(
    redis: RedisClient,
    *,
    user_id: str,
    session_id: str,
    code_digest: str,
    client_id: str,
    redirect_uri: str,
    challenge: str,
    sealed: Code | None,
    code_ttl_ms: int,
    refresh_digest: str,
    token_id: str,
    now_ms: int,
    idle_ms: int,
    used_keep_ms: int,
    revoked_ttl_ms: int,
    oidc_keep_ms: int,
) -> Redeemed:
    """Mark the code used and put the client's refresh token (``refresh_digest``) and grant (the access token
    ``token_id``) in its session, recording the client there for the back-channel logout, in one call.
    CodeReused when it was redeemed before (what that issued is now revoked and announced); CodeRefused for an
    unknown or expired code, another client's, another redirect_uri, a PKCE mismatch or an ended session.
    ``sealed``: the record of a sealed code, or None for a code of the release before, whose record is in
    Redis."""
    record: tuple[str | int, ...]
    if sealed is None:
        presented, record = redirect_uri, ("",) * 7
    else:
        presented, record = redirect_digest(redirect_uri), (*sealed[:-1], sealed.issued_at + code_ttl_ms)
    reply = await CODE_REDEEM(
        redis,
        [keys.auth_code(user_id, code_digest), keys.session(user_id, session_id),
         keys.oidc_session(user_id, session_id), keys.oidc_expiries(keys.shard_of(user_id)),
         keys.journal(user_id)],
        [now_ms, idle_ms, client_id, presented, challenge, session_id, refresh_digest, token_id, used_keep_ms,
         keys.revoked_token(user_id, ""), revoked_ttl_ms, *_ANNOUNCE, oidc_keep_ms, user_id, *record],
    )  # fmt: skip
    if not isinstance(reply, list):
        code = int(reply)
        if code == -1:
            raise CodeReused()
        raise CodeRefused(_CODE_REFUSED.get(code, _CODE_REFUSED[0]))
    _, username, roles, version, absolute_ms, scope, nonce, auth_time = reply
    return Redeemed(
        str(username), tuple(str(roles).split()), int(version), int(absolute_ms), str(scope), str(nonce),
        int(auth_time or 0),
    )  # fmt: skip

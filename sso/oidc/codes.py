"""Authorization codes, sealed: the code carries its own record, so the single sign-on hop writes nothing.

A code reads ``<user id>.<session id>.<sealed>``: the ids find the session in one Redis slot, as a refresh
token's do, and ``<sealed>`` is BASE64URL(version, hour, nonce, AES-256-GCM of the record
``sso.code_scripts.Code``), with the ids as associated data. Its key is derived (HKDF-SHA256) from
PEAK_SECRET_KEY and the UTC hour it was sealed in, so that no key seals more than an hour of codes (a random
96-bit nonce per code: NIST SP 800-38D's 2^32 codes a key would take five days at 10,000 hops a second). A code
opens in its hour and the ones next to it; its life (``issued_at`` + PEAK_SSO_CODE_TTL_S) is the script's.

Single use is the token endpoint's (``sso/lua/code_redeem.lua``): the first redemption marks the code's digest
(``sso.keys.auth_code``) in the user's slot, a second one finds the mark and revokes what the first issued.
Nothing of the code is stored before it is redeemed: a code never redeemed leaves nothing behind. A code of
the release before (``OpaqueToken``, its record in Redis) is the caller's to try when ``open`` answers None.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import NamedTuple

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sso.code_scripts import Code
from sso.tokens import CANONICAL_UUID

__all__ = ["MAX_LENGTH", "CodeSeal", "SealedCode"]

_VERSION = b"\x01"
_HOUR_S = 3600
_NONCE = 12
# version, hour (4 bytes), nonce, then the ciphertext and its 16-byte tag
_HEAD = 1 + 4 + _NONCE
# Longer than any code sealed: the longest record /sso/authorize can make (a nonce of 512 four-byte
# characters, sso.oidc.request.PARAMETERS) seals to about 3,000 characters, 512 ASCII ones to 966, a usual
# nonce (22 to 43 characters) to 313 to 341.
MAX_LENGTH = 4096


class SealedCode(NamedTuple):
    """A code opened: its ids, the digest its single use is marked by (of its sealed bytes), and its record."""

    user_id: str
    session_id: str
    digest: str
    code: Code


class CodeSeal:
    """Seals and opens codes with keys derived from PEAK_SECRET_KEY (the same on every instance)."""

    def __init__(self, secret_key: str) -> None:
        self._secret = secret_key.encode()
        self._keys: dict[int, AESGCM] = {}

    def _key(self, hour: int) -> AESGCM:
        found = self._keys.get(hour)
        if found is None:
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"peak sso authorization codes, hour " + hour.to_bytes(4, "big"),
            ).derive(self._secret)  # fmt: skip
            if len(self._keys) >= 4:  # the three hours a code may be of: older ones open nothing
                self._keys.clear()
            found = self._keys[hour] = AESGCM(derived)
        return found

    def seal(self, user_id: str, session_id: str, code: Code) -> str:
        hour = code.issued_at // 1000 // _HOUR_S
        head = _VERSION + hour.to_bytes(4, "big") + os.urandom(_NONCE)
        sealed = self._key(hour).encrypt(
            head[5:], orjson.dumps(code, default=tuple), _associated(user_id, session_id, head)
        )
        payload = base64.urlsafe_b64encode(head + sealed).rstrip(b"=").decode()
        return f"{user_id}.{session_id}.{payload}"

    def open(self, value: str, *, now_ms: int) -> SealedCode | None:
        """The code of ``value`` when this seal made it within the last hour or so; None for anything else
        (a forged, altered or truncated code, another key's, one of the release before)."""
        if len(value) > MAX_LENGTH or value.count(".") != 2:
            return None
        user_id, session_id, payload = value.split(".")
        if not CANONICAL_UUID.fullmatch(user_id) or not session_id or len(payload) < 44:
            return None
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return None
        # Only the one spelling of those bytes (base64 decoding skips stray characters and ignores a last
        # character's unused bits): no other string is the same code.
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != payload.encode():
            return None
        head = raw[:_HEAD]
        hour = int.from_bytes(head[1:5], "big")
        # Its hour, the one after, or (another instance's clock a little ahead at the turn of the hour) before.
        if head[:1] != _VERSION or abs(now_ms // 1000 // _HOUR_S - hour) > 1:
            return None
        try:
            plain = self._key(hour).decrypt(head[5:], raw[_HEAD:], _associated(user_id, session_id, head))
            code = Code(*orjson.loads(plain))
        except (InvalidTag, ValueError, TypeError):
            return None
        return SealedCode(user_id, session_id, hashlib.sha256(raw).hexdigest(), code)


def _associated(user_id: str, session_id: str, head: bytes) -> bytes:
    return head + f"{user_id}.{session_id}".encode()

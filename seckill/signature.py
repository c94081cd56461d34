"""The payment provider's signature of a callback, as providers make it (Stripe's scheme).

Header ``X-Payment-Signature: t=<unix seconds>,v1=<hex>``, where the hex is HMAC-SHA256 with a shared secret
over ``"<t>." + the raw body``. A provider rotating its secret may send several ``v1=`` values; any one made
with any of our secrets verifies. Unknown fields are ignored. The timestamp is covered by the signature, and
it must be within the tolerance of our clock (either side): an old notification cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from seckill.errors import SignatureInvalid, SignatureStale

__all__ = ["HEADER", "sign", "verify"]

HEADER = "X-Payment-Signature"
_MAX_HEADER = 2048
_MAX_SIGNATURES = 8
_HEX = frozenset("0123456789abcdef")


def _mac(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` signed with ``secret`` at ``timestamp`` (default now)."""
    t = str(int(time.time()) if timestamp is None else timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def _parse(header: str) -> tuple[str, list[str]]:
    if len(header) > _MAX_HEADER:
        raise SignatureInvalid(f"the {HEADER} header is too long")
    timestamp, signatures = "", []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1" and len(value) == 64 and set(value) <= _HEX:
            signatures.append(value)
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SignatureInvalid(f"the {HEADER} header must be t=<unix seconds>,v1=<hex HMAC-SHA256>")
    if not signatures:
        raise SignatureInvalid(f"the {HEADER} header carries no v1=<hex HMAC-SHA256> signature")
    return timestamp, signatures[:_MAX_SIGNATURES]


def verify(
    header: str | None, body: bytes, secrets: Sequence[bytes], *, tolerance_s: int, now: float | None = None
) -> int:
    """The signed timestamp of a genuine, fresh callback; SignatureInvalid or SignatureStale otherwise.

    The signature is checked before the timestamp, so an unsigned request learns nothing about the window."""
    if not header:
        raise SignatureInvalid(f"a payment callback must carry the {HEADER} header")
    timestamp, signatures = _parse(header)
    expected = [_mac(secret, timestamp, body) for secret in secrets]
    # Every pair compared, in constant time each: no early exit tells which secret or signature was close.
    matched = False
    for mine in expected:
        for theirs in signatures:
            matched |= hmac.compare_digest(mine, theirs)
    if not matched:
        raise SignatureInvalid("the payment callback's signature does not match")
    signed_at = int(timestamp)
    if abs((time.time() if now is None else now) - signed_at) > tolerance_s:
        raise SignatureStale(
            f"the payment callback was signed at {signed_at}, more than {tolerance_s} s from the server clock"
        )
    return signed_at

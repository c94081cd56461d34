"""Device cookies (OWASP "Slow down online guessing attacks with device cookies").

A client that logged in successfully gets a random 128-bit device token for that account, in the
``peak_device`` cookie. Redis keeps only its SHA-256 digest, in the account's known-device hash
(``sso.keys.devices``), with the time of its last success and its failures since: a token is a device of the
accounts whose hash holds it and of no other, so a guessed or copied-from-another-account token is just an
unknown device. One cookie carries the tokens of the last few accounts used on the browser.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence

from starlette.responses import Response

__all__ = ["COOKIE", "MAX_TOKENS", "cookie_value", "digest", "new_token", "set_cookie", "tokens_of"]

COOKIE = "peak_device"
# Accounts remembered per browser: the cookie stays small and the throttle script reads a fixed few keys.
MAX_TOKENS = 4
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")
_PATH = "/sso"


def new_token() -> str:
    return secrets.token_urlsafe(16)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def tokens_of(cookie: str | None) -> list[str]:
    """The well-formed device tokens of a cookie value, at most MAX_TOKENS; anything else is ignored."""
    if not cookie or len(cookie) > 200:
        return []
    found = [t for t in cookie.split(".") if _TOKEN.fullmatch(t)]
    return list(dict.fromkeys(found))[:MAX_TOKENS]


def cookie_value(first: str, others: Sequence[str]) -> str:
    """``first`` (the token just used or issued) and the others the browser already had."""
    return ".".join([first, *[t for t in others if t != first]][:MAX_TOKENS])


def set_cookie(response: Response, value: str, *, max_age_s: int, secure: bool) -> None:
    response.set_cookie(
        COOKIE, value, max_age=max_age_s, path=_PATH, httponly=True, samesite="lax", secure=secure
    )

"""The sign-in page's CSRF protection: a signed double submit bound to the pending authorization.

The page sets a random cookie (``peak_signin``: HttpOnly, SameSite=Strict, Path=/sso) and puts in the form
``<issued at>.<HMAC(key, cookie, issued at, the authorization request)>``. A post needs both: another site can
neither read the cookie nor make the HMAC, and a form made for one authorization request cannot carry
another. The key is derived from PEAK_SECRET_KEY, so every API process checks every other's forms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

__all__ = ["COOKIE", "SigninForms"]

COOKIE = "peak_signin"
_NONCE = re.compile(r"^[A-Za-z0-9_-]{22}$")
# A form from a clock a little ahead (another process) is still good.
_SKEW_S = 60


class SigninForms:
    def __init__(self, secret_key: str, *, ttl_s: int) -> None:
        self._key = hmac.new(secret_key.encode(), b"peak sso: sign-in forms", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    @staticmethod
    def nonce(cookie: str | None) -> str:
        """The browser's sign-in cookie when it has a well-formed one (several tabs share it), else a new one."""
        if cookie is not None and _NONCE.match(cookie):
            return cookie
        return secrets.token_urlsafe(16)

    def _mac(self, nonce: str, issued_at: int, request: str) -> str:
        message = f"{nonce}\n{issued_at}\n{request}".encode("utf-8", "surrogatepass")
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def token(self, nonce: str, request: str, now_s: int) -> str:
        return f"{now_s}.{self._mac(nonce, now_s, request)}"

    def valid(self, cookie: str | None, token: str, request: str, now_s: int) -> bool:
        """Whether ``token`` was made by a process of ours for this cookie and request, within the TTL."""
        if cookie is None or not _NONCE.match(cookie):
            return False
        issued, _, mac = token.partition(".")
        if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
            return False
        issued_at = int(issued)
        if not now_s - self.ttl_s <= issued_at <= now_s + _SKEW_S:
            return False
        return hmac.compare_digest(
            mac.encode("utf-8", "replace"), self._mac(cookie, issued_at, request).encode()
        )

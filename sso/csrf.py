"""Cross-site request forgery: where a browser request comes from, and how the session cookie is set.

The session cookie is sent by the browser whatever page makes the request, so a state change it authenticates
(logout, ending sessions, a password change) must come from the site itself: its ``Origin`` (or, failing
that, its ``Referer``) must be the public URL's origin (OWASP's "verifying origin with standard headers").
Browsers send ``Origin`` on every POST and DELETE, cross-site or not, and ``null`` where they will not say, so a
cookie-authenticated change without either header is refused too. A bearer token is never sent by the
browser on its own, so calls carrying one are not affected.

A login sets the cookie: one from another site is refused (login CSRF, which would sign the victim in to the
attacker's account). A login without either header is no browser's, and goes on as before.

The cookie is Secure whenever the public URL is https (or PEAK_COOKIE_SECURE forces it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from sso.errors import CrossSiteRequest

__all__ = ["CsrfGuard", "origin_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, lower-cased, the default port left out; None for anything
    else (``null``, another scheme, garbage)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


class CsrfGuard:
    """Built once per process from the public URL (PEAK_PUBLIC_URL, or http://HOST:PORT)."""

    def __init__(self, public_url: str, *, force_secure: bool = False) -> None:
        origin = origin_of(public_url)
        if origin is None:
            raise ValueError(f"the public URL {public_url!r} is not an http(s) URL")
        self.origin = origin
        self.secure_cookie = force_secure or origin.startswith("https://")

    def _claimed(self, request: Request) -> str | None:
        """The origin the request says it comes from ("" when it says nothing)."""
        origin = request.headers.get("origin")
        if origin is not None:
            return origin_of(origin)
        referer = request.headers.get("referer")
        if referer is not None:
            return origin_of(referer)
        return ""

    def check(self, request: Request) -> None:
        """For a state change the session cookie authenticates: CrossSiteRequest unless it comes from here."""
        if self._claimed(request) != self.origin:
            raise CrossSiteRequest()

    def check_login(self, request: Request) -> None:
        """For a login (it sets the cookie): CrossSiteRequest when it says it comes from elsewhere."""
        claimed = self._claimed(request)
        if claimed != "" and claimed != self.origin:
            raise CrossSiteRequest()

"""What a registered URI may be: an absolute http(s) URL with a host, no fragment, no user info, no space or
control character. Requests name one by string equality, so nothing here is ever normalised."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["MAX_URI_LENGTH", "uri_problem"]

MAX_URI_LENGTH = 2000
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\\u0080-\U0010ffff]")


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be registered as a redirect (or logout) URI; None when it can."""
    if len(uri) > MAX_URI_LENGTH:
        return f"at most {MAX_URI_LENGTH} characters"
    if _FORBIDDEN.search(uri):
        return "no spaces, backslashes, control or non-ASCII characters (percent-encode them)"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an absolute http:// or https:// URL with a host"
    if "#" in uri:
        return "no fragment (#...)"
    if "@" in parts.netloc:
        return "no user info (user@host)"
    return None

"""The sign-in page and the authorization error page: server-rendered HTML, every value escaped, no script.

Every answer of the authorization endpoint carries ``SECURITY_HEADERS``: no framing (clickjacking), a CSP
with no script source at all and the one inline style by its hash, no caching, no referrer. The CSP's
``form-action`` names the client's origin too: browsers hold the redirect after a form post to it.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

from starlette.responses import Response

__all__ = ["SECURITY_HEADERS", "error_page", "signin_page"]

_STYLE = (
    "body{font:16px/1.4 system-ui,sans-serif;background:#f4f5f7;margin:0}"
    "main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.5rem;"
    "box-shadow:0 1px 4px #0002}h1{font-size:1.3rem;margin:0 0 1rem}label{display:block;margin:.8rem 0 .2rem}"
    "input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font:inherit}"
    "button{margin-top:1.2rem;width:100%;padding:.6rem;font:inherit}.error{color:#a00}.client{color:#555}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


def _csp(form_target: str | None) -> str:
    action = "'self'" if form_target is None else f"'self' {form_target}"
    return (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action {action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def _html(title: str, body: str, status: int, *, form_target: str | None = None,
          headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body><main>{body}</main></body></html>"
    )
    return Response(
        page,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Security-Policy": _csp(form_target), **(headers or {})},
    )


def error_page(message: str, *, status: int = 400, headers: dict[str, str] | None = None) -> Response:
    """A refusal that is not sent back to any client: the browser stays here."""
    body = f'<h1>This sign-in request cannot go on</h1><p class="error">{escape(message)}</p>'
    return _html("Sign-in refused", body, status, headers=headers)


def signin_page(
    *,
    client: str,
    request: str,
    csrf: str,
    username: str,
    error: str | None,
    client_origin: str | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The form: the pending authorization request (signed by ``csrf``) posted back with the credentials."""
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        f'<h1>Sign in</h1><p class="client">to continue to {escape(client)}</p>{problem}'
        '<form method="post" action="/sso/signin">'
        f'<input type="hidden" name="request" value="{escape(request)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<label for="username">Username</label>'
        f'<input type="text" id="username" name="username" value="{escape(username)}" maxlength="64" '
        'autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" maxlength="1024" autocomplete="current-password" '
        'required><button type="submit">Sign in</button></form>'
    )
    return _html("Sign in", body, status, form_target=client_origin, headers=headers)

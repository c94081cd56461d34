"""The pages of RP-initiated logout: the confirmation (a form with a CSRF token), "signed out", and the error
page. Server-rendered, every value escaped, no script and no style, the headers of ``sso.oidc.page``."""

from __future__ import annotations

from html import escape

from starlette.responses import Response

from sso.oidc.page import SECURITY_HEADERS

__all__ = ["confirm_page", "logout_error_page", "signed_out_page"]


def _csp(form_target: str | None) -> str:
    # Browsers hold a redirect after a form post to an origin form-action does not name: the client's is named.
    action = "'self'" if form_target is None else f"'self' {form_target}"
    return f"default-src 'none'; form-action {action}; frame-ancestors 'none'; base-uri 'none'"


def _html(title: str, body: str, status: int, *, form_target: str | None = None) -> Response:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title></head><body><main>{body}</main></body></html>"
    )
    return Response(
        page,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Security-Policy": _csp(form_target)},
    )


def logout_error_page(message: str) -> Response:
    """A logout request that is not sent back anywhere (no open redirect): nothing was ended."""
    body = f"<h1>This sign-out request cannot go on</h1><p>{escape(message)}</p>"
    return _html("Sign-out refused", body, 400)


def signed_out_page() -> Response:
    return _html("Signed out", "<h1>You are signed out</h1><p>You may close this window.</p>", 200)


def confirm_page(*, csrf: str, hidden: dict[str, str], redirect_origin: str | None) -> Response:
    """Ask before ending the cookie's session: a GET alone (a link, an image) never signs anyone out."""
    fields = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in hidden.items()
    )
    body = (
        "<h1>Sign out?</h1><p>Do you want to sign out of every site you signed in to here?</p>"
        '<form method="post" action="/sso/end_session">'
        f'<input type="hidden" name="confirm" value="{escape(csrf)}">{fields}'
        '<button type="submit">Sign out</button></form>'
    )
    return _html("Sign out?", body, 200, form_target=redirect_origin)

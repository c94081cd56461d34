"""``GET /sso/authorize`` (and POST, OpenID Connect Core 3.1.2.1): the single sign-on hop.

With a live ``peak_sid`` cookie the browser goes straight back to the client with a code: one Redis round trip
that checks and slides the session (``sso/oidc/cookie_check.py``), a code sealed in memory
(``sso/oidc/codes.py``: nothing is written), the client from memory, no page and no PostgreSQL. Without one
(or with ``prompt=login``, or a sign-in older than ``max_age``) it gets the sign-in page; with ``prompt=none``
instead the client gets ``error=login_required``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kit.errors import Unauthorized
from sso.oidc.errors import AuthorizationRefused, NotRedirectable
from sso.oidc.hop import grouped_query, session_cookie
from sso.oidc.page import error_page
from sso.oidc.provider import (
    SESSION_COOKIE,
    FormError,
    back_to_client,
    form_pairs,
    provider_of,
    refusal,
    signin,
)
from sso.oidc.request import PARAMETERS, grouped
from sso.tokens import OpaqueToken

__all__ = ["authorize"]

_MAX_FIELDS = 64


async def authorize(request: Request) -> Response:
    p = provider_of(request)
    if request.method == "POST":
        try:
            pairs = await form_pairs(request)
        except FormError as exc:
            return error_page(exc.message, status=exc.status)
        found = grouped(pairs)
    else:
        try:
            query = request.scope["query_string"].decode("latin-1")
            found = grouped_query(query, PARAMETERS, _MAX_FIELDS)
        except ValueError:
            return error_page("the request has too many parameters")
    try:
        pending = await p.read_grouped(found)
    except (NotRedirectable, AuthorizationRefused) as exc:
        return refusal(exc)
    cookie = OpaqueToken.parse(session_cookie(request.scope, SESSION_COOKIE))
    if cookie is not None and not pending.fresh_login:
        try:
            code = await p.issue(pending, cookie, max_age_s=pending.max_age)
        except Unauthorized:  # ended, expired, a forged cookie, or a sign-in older than max_age
            pass
        else:
            return back_to_client(pending.redirect_uri, {"code": code, "state": pending.state})
    if pending.no_prompt:
        return back_to_client(
            pending.redirect_uri,
            {"error": "login_required", "error_description": "no live sign-in", "state": pending.state},
        )
    return signin(request, p, pending, username=pending.login_hint)

"""``POST /sso/signin``: the sign-in page's form. It signs in exactly as ``POST /sso/login`` does (the same
throttling, the same answer for unknown users, the same cookies) and sends the browser back to the client
with a code.

Refused unless the post comes from the site itself (``Origin``/``Referer``, as the login) and carries the
form's CSRF token for the browser's sign-in cookie and the very authorization request it was made for
(``sso.oidc.forms``).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from kit.errors import ApiError, ServiceUnavailable, Unauthorized
from sso import devices
from sso.errors import CrossSiteRequest
from sso.oidc import forms
from sso.oidc.errors import AuthorizationRefused, NotRedirectable
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
from sso.tokens import OpaqueToken

__all__ = ["sign_in"]

_FIELDS = ("request", "csrf", "username", "password")
_FORGED = (
    "this sign-in form has expired or was not made by this site: go back to the application and start again"
)


async def sign_in(request: Request) -> Response:
    p = provider_of(request)
    try:
        pairs = await form_pairs(request)
    except FormError as exc:
        return error_page(exc.message, status=exc.status)
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in _FIELDS:
            if name in form:
                return error_page(f"the form field '{name}' is given more than once")
            form[name] = value
    try:
        p.csrf.check_login(request)
    except CrossSiteRequest as exc:
        return error_page(exc.message, status=403)
    signed = form.get("request", "")
    if not p.forms.valid(request.cookies.get(forms.COOKIE), form.get("csrf", ""), signed, int(time.time())):
        return error_page(_FORGED, status=403)
    try:
        pending = await p.read(parse_qsl(signed, keep_blank_values=True))
    except (NotRedirectable, AuthorizationRefused) as exc:
        return refusal(exc, status=303)
    username, password = form.get("username", ""), form.get("password", "")
    if not (0 < len(username) <= 64 and 0 < len(password) <= 1024):
        return signin(request, p, pending, username=username[:64], error="enter your username and password",
                      status=422)  # fmt: skip
    try:
        pair, device = await p.sso.login(
            username, password, ip=request.client.host if request.client else "unknown",
            user_agent=request.headers.get("user-agent", ""),
            devices=devices.tokens_of(request.cookies.get(devices.COOKIE)),
        )  # fmt: skip
    except ServiceUnavailable:
        raise  # busy or a store out of reach: the kit's 503, as for POST /sso/login
    except ApiError as exc:  # the login's own answers: 401, 403 account_disabled, 422, 429 with Retry-After
        retry_after = exc.headers.get("Retry-After")
        return signin(request, p, pending, username=username, error=exc.message, status=exc.status_code,
                      headers={"Retry-After": retry_after} if retry_after else None)  # fmt: skip
    cookie = OpaqueToken.parse(pair.cookie)
    assert cookie is not None, "a login's cookie is an opaque token"
    try:
        code = await p.issue(pending, cookie, max_age_s=None)
    except Unauthorized:  # the new session ended at once (logout everywhere, an admin disabling the account)
        return signin(request, p, pending, username=username, error="the sign-in ended at once; sign in again",
                      status=401)  # fmt: skip
    response = back_to_client(pending.redirect_uri, {"code": code, "state": pending.state}, status=303)
    response.set_cookie(SESSION_COOKIE, pair.cookie, max_age=p.sso.settings.absolute_timeout_s, httponly=True,
                        samesite="lax", secure=p.secure_cookie)  # fmt: skip
    if device:
        devices.set_cookie(response, device, max_age_s=p.sso.throttle.device_ttl_s, secure=p.secure_cookie)
    response.delete_cookie(
        forms.COOKIE, path="/sso", httponly=True, samesite="strict", secure=p.secure_cookie
    )
    return response

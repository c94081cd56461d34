"""What the authorization endpoint and the sign-in form share: the codes they issue, the redirects that carry
them (or a refusal) back to the client, the sign-in page and the form reader.

A code is sealed (``sso/oidc/codes.py``): it carries its record (client, redirect URI's digest, PKCE challenge,
scope, nonce, when it was issued), so the hop's one round trip only checks and slides the session
(``sso/oidc/cookie_check.py``) and writes nothing; the token endpoint marks its single use.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from kit.context import Context, context_of
from sso.code_scripts import Code, redirect_digest
from sso.csrf import CsrfGuard, origin_of
from sso.errors import ReauthenticationRequired
from sso.oidc import forms
from sso.oidc.cookie_check import CookieCheck
from sso.oidc.errors import AuthorizationRefused, NotRedirectable
from sso.oidc.forms import SigninForms
from sso.oidc.hop import Redirect, location
from sso.oidc.page import error_page, signin_page
from sso.oidc.request import AuthorizationRequest, client_id_in, grouped, read_request
from sso.service import Sso
from sso.tokens import OpaqueToken

__all__ = [
    "SESSION_COOKIE",
    "FormError",
    "Provider",
    "back_to_client",
    "form_pairs",
    "provider",
    "provider_of",
    "refusal",
    "signin",
]

# sso.routes.COOKIE (not imported: sso.routes imports these modules' routes).
SESSION_COOKIE = "peak_sid"
_FORM = "application/x-www-form-urlencoded"
_MAX_FIELDS = 64
# What an origin may hold to be named in the page's CSP (a registered URI's host could hold ';').
_CSP_SOURCE = re.compile(r"^https?://[A-Za-z0-9.\[\]:-]+$")


@dataclass(frozen=True, slots=True)
class Provider:
    """What the authorization endpoint needs, made once per process (``sso.oidc.authorize.provider``)."""

    sso: Sso
    forms: SigninForms
    csrf: CsrfGuard
    secure_cookie: bool
    # The hop's check of its session (concurrent hops in one write).
    cookies: CookieCheck

    async def read(self, pairs: Sequence[tuple[str, str]]) -> AuthorizationRequest:
        """The authorization request of ``pairs`` with its client (from memory); NotRedirectable or
        AuthorizationRefused (``refusal`` renders either)."""
        return await self.read_grouped(grouped(pairs))

    async def read_grouped(self, found: dict[str, list[str]]) -> AuthorizationRequest:
        """``read`` of the parameters as ``sso.oidc.request.grouped`` gives them."""
        client_id = client_id_in(found)
        client = await self.sso.clients.find(client_id) if client_id else None
        return read_request(found, client)

    async def issue(
        self, request: AuthorizationRequest, cookie: OpaqueToken, *, max_age_s: int | None
    ) -> str:
        """A new code for the live session of ``cookie`` (one round trip, which also slides the session);
        SessionEnded, InvalidCookie or ReauthenticationRequired (its sign-in is older than ``max_age_s``)."""
        now_ms = int(time.time() * 1000)
        auth_time = await self.cookies.auth_time(cookie, now_ms)
        if max_age_s is not None and now_ms // 1000 - auth_time > max_age_s:
            raise ReauthenticationRequired()
        return self.sso.codes.seal(cookie.user_id, cookie.session_id, Code(
            client_id=request.client.name, redirect_digest=redirect_digest(request.redirect_uri),
            code_challenge=request.code_challenge, code_challenge_method=request.code_challenge_method,
            scope=request.scope, nonce=request.nonce, issued_at=now_ms,
        ))  # fmt: skip


def refusal(exc: NotRedirectable | AuthorizationRefused, *, status: int = 302) -> Response:
    """RFC 6749 4.1.2.1: a request that cannot be trusted is a page, never a redirect; any other refusal goes
    back to the client with ``error`` and the ``state``."""
    if isinstance(exc, NotRedirectable):
        return error_page(exc.message)
    return back_to_client(
        exc.redirect_uri,
        {"error": exc.code, "error_description": exc.message, "state": exc.state},
        status=status,
    )


def back_to_client(redirect_uri: str, params: Mapping[str, str | None], *, status: int = 302) -> Response:
    """A redirect to a registered redirect URI (its own query kept, RFC 6749 3.1.2) with ``params``."""
    return Redirect(location(redirect_uri, params), status)


def provider(ctx: Context) -> Provider:
    """The process's Provider, made from the settings on first use."""
    found = ctx.find(Provider)
    if found is None:
        sso, csrf = ctx.get(Sso), ctx.get(CsrfGuard)
        secret_key = ctx.settings.require("secret_key")
        found = Provider(
            sso=sso, forms=SigninForms(secret_key, ttl_s=sso.settings.signin_form_ttl_s),
            csrf=csrf, secure_cookie=csrf.secure_cookie,
            cookies=CookieCheck(ctx.redis, idle_ms=sso.settings.idle_timeout_s * 1000),
        )  # fmt: skip
        ctx.put(found)
    return found


class FormError(Exception):
    """A body that is no sane urlencoded form: the status and what to tell the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The fields of an urlencoded body (its size is bounded by the request middleware); FormError else."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != _FORM:
        raise FormError(415, f"send the form as {_FORM}")
    text = (await request.body()).decode("utf-8", errors="replace")
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError:
        raise FormError(400, "the form has too many fields") from None


def signin(
    request: Request, p: Provider, pending: AuthorizationRequest, *, username: str, error: str | None = None,
    status: int = 200, headers: Mapping[str, str] | None = None,
) -> Response:  # fmt: skip
    """The sign-in page for ``pending``, with a CSRF token bound to it and to the browser's sign-in cookie."""
    nonce = p.forms.nonce(request.cookies.get(forms.COOKIE))
    signed = pending.pending()
    origin = origin_of(pending.redirect_uri)
    response = signin_page(
        client=pending.client.name, request=signed, csrf=p.forms.token(nonce, signed, int(time.time())),
        username=username, error=error, client_origin=origin if origin and _CSP_SOURCE.match(origin) else None,
        status=status, headers=dict(headers or {}),
    )  # fmt: skip
    response.set_cookie(forms.COOKIE, nonce, max_age=p.forms.ttl_s, path="/sso", httponly=True,
                        samesite="strict", secure=p.secure_cookie)  # fmt: skip
    return response


def provider_of(request: Request) -> Provider:
    return provider(context_of(request))

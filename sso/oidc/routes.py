"""The authorization endpoint's routes, for ``sso.routes.routes()`` to list."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.routing import BaseRoute

from kit.routing import route
from kit.schema import rule
from sso.oidc.authorize import authorize
from sso.oidc.signin import sign_in

__all__ = ["AuthorizeForm", "SigninForm", "routes"]

_HTML = {"type": "string"}
_QUERY = {
    "response_type": "code", "client_id": "a registered client", "redirect_uri": "one of its redirect URIs, exactly",
    "scope": "must contain openid (openid, profile)", "state": "sent back as it came",
    "nonce": "put in the ID token", "code_challenge": "PKCE, RFC 7636", "code_challenge_method": "S256",
    "prompt": "none, login, consent or select_account", "max_age": "seconds since the password sign-in",
    "login_hint": "pre-fills the username",
}  # fmt: skip


@dataclass
class AuthorizeForm:
    """The authorization request as a form (the same parameters as the query of GET)."""

    client_id: str | None = None
    redirect_uri: str | None = None
    response_type: str | None = None
    scope: str | None = None
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    prompt: str | None = None
    max_age: str | None = None
    login_hint: str | None = None


@dataclass
class SigninForm:
    request: str = field(metadata=rule(description="the pending authorization request, as the page gave it"))
    csrf: str = field(metadata=rule(description="the page's CSRF token"))
    username: str = field(metadata=rule(max_length=64))
    password: str = field(metadata=rule(max_length=1024))


def routes() -> list[BaseRoute]:
    page = {200: _HTML, 302: None, 400: _HTML}
    html = {200: "text/html", 400: "text/html"}
    form_page = {**page, 415: _HTML}
    return [
        route("/sso/authorize", authorize, summary="OpenID Connect authorization: a code by redirect (the SSO "
              "hop, with a live session cookie) or the sign-in page; unknown clients and redirect URIs get a "
              "400 page", query=_QUERY, responses=page, media_types=html, auth=["cookie"]),
        route("/sso/authorize", authorize, methods=["POST"], summary="the authorization request as a form",
              body=AuthorizeForm, form=True, responses=form_page, media_types={**html, 415: "text/html"},
              auth=["cookie"]),
        route("/sso/signin", sign_in, methods=["POST"], summary="the sign-in page's form: signs in (as POST "
              "/sso/login) and redirects back to the client with a code", body=SigninForm, form=True,
              responses={303: None, 200: _HTML, 400: _HTML, 401: _HTML, 403: _HTML, 415: _HTML, 422: _HTML,
                         429: _HTML},
              media_types={s: "text/html" for s in (200, 400, 401, 403, 415, 422, 429)},
              errors={503: ["busy", "unavailable"]}),
    ]  # fmt: skip

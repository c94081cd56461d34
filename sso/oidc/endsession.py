"""``GET|POST /sso/end_session``: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

A client sends the browser here with ``id_token_hint`` (an ID token peak issued: its signature is checked,
its expiry is not, as the specification allows), ``post_logout_redirect_uri``, ``state`` and ``client_id``.

- The redirect goes only to a URI registered for the client (``--post-logout-redirect-uri``), the client named
  by the hint's ``azp``/``aud`` or by ``client_id`` (both given: they must agree); anything else is the error
  page, never a redirect, and nothing is ended.
- With a valid hint the hint's session ends (``sid``), and the cookie's too when it is the same user's:
  the client holds the ID token, so this is no forgery. The ID token of another user ends nothing of the
  cookie's.
- Without a hint a cookie session ends only after the person confirms it: a GET (a link, an image on another
  site) shows a page whose form POSTs back a token bound to the cookie (HMAC with a key from PEAK_SECRET_KEY,
  valid ``_CONFIRM_TTL_S``).
- Then the cookie is cleared and the browser goes to the redirect with ``state``, or sees "signed out".
  Ending a session announces it (``sso/lua/session_end.lua``): the workers tell every client with a
  back-channel logout URI (``sso.oidc.backchannel``).

Parameters appear at most once, bounded in length, without control characters; the POST takes a form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from kit.context import context_of
from kit.errors import STORE_OUTAGES, ServiceUnavailable, Unauthorized
from kit.outage import store_outage
from kit.routing import route
from sso.clients import OidcClient
from sso.csrf import CsrfGuard, origin_of
from sso.oidc.logout_pages import confirm_page, logout_error_page, signed_out_page
from sso.oidc.page import SECURITY_HEADERS
from sso.oidc.uris import MAX_URI_LENGTH
from sso.service import Sso

__all__ = ["Hint", "end_session_routes", "verify_hint"]

# sso.routes.COOKIE (not imported: sso.routes imports this module's routes).
_SESSION_COOKIE = "peak_sid"
_CONFIRM_TTL_S = 600
_SKEW_S = 60
_PARAMETERS = {
    "id_token_hint": 8192, "post_logout_redirect_uri": MAX_URI_LENGTH, "state": 1024, "client_id": 64,
    "logout_hint": 256, "ui_locales": 64, "confirm": 128,
}  # fmt: skip
_NOT_HINTS = frozenset({"at+jwt", "logout+jwt"})
_FORM = "application/x-www-form-urlencoded"


class _Refused(Exception):
    """A request shown the error page."""


@dataclass(frozen=True, slots=True)
class Hint:
    """What a verified ``id_token_hint`` says."""

    sub: str
    sid: str | None
    audiences: tuple[str, ...]
    client_id: str | None  # azp, or the one audience


def verify_hint(token: str, jwks: dict[str, Any], issuer: str) -> Hint | None:
    """The hint's claims when one of our keys signed it for our issuer (expired is fine); None otherwise."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") in _NOT_HINTS:
            return None
        jwk = next((k for k in jwks.get("keys", ()) if k.get("kid") == header.get("kid")), None)
        if jwk is None:
            return None
        key = jwt.PyJWK(jwk)
        claims = jwt.decode(
            token, key.key, algorithms=[key.algorithm_name], issuer=issuer,
            options={"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False,
                     "require": ["iss", "sub", "aud"]},
        )  # fmt: skip
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    aud, sub, sid, azp = claims.get("aud"), claims.get("sub"), claims.get("sid"), claims.get("azp")
    if isinstance(aud, str):
        audiences: tuple[str, ...] = (aud,)
    else:
        audiences = tuple(a for a in aud if isinstance(a, str)) if isinstance(aud, list) else ()
    if not isinstance(sub, str) or not sub or not audiences:
        return None
    if isinstance(azp, str) and azp in audiences:
        client_id: str | None = azp
    else:
        client_id = audiences[0] if len(audiences) == 1 else None
    return Hint(sub, sid if isinstance(sid, str) and sid else None, audiences, client_id)


def _confirm_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"peak sso: end_session confirmations", hashlib.sha256).digest()


def _confirm_mac(key: bytes, cookie: str, issued_at: int) -> str:
    mac = hmac.new(key, f"{cookie}\n{issued_at}".encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _confirmation(key: bytes, cookie: str, now_s: int) -> str:
    return f"{now_s}.{_confirm_mac(key, cookie, now_s)}"


def _confirmed(key: bytes, cookie: str, token: str, now_s: int) -> bool:
    issued, _, mac = token.partition(".")
    if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
        return False
    issued_at = int(issued)
    if not now_s - _CONFIRM_TTL_S <= issued_at <= now_s + _SKEW_S:
        return False
    return hmac.compare_digest(mac.encode("utf-8", "replace"), _confirm_mac(key, cookie, issued_at).encode())


def _read(pairs: list[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in pairs:
        limit = _PARAMETERS.get(name)
        if limit is None:
            continue  # unknown parameters are ignored (OpenID Connect Core 3.1.2.1)
        if name in found:
            raise _Refused(f"the parameter {name} is given more than once")
        if len(value) > limit:
            raise _Refused(f"the parameter {name} is longer than {limit} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise _Refused(f"the parameter {name} holds a control character")
        if value:
            found[name] = value
    return found


async def _parameters(request: Request) -> dict[str, str]:
    if request.method != "POST":
        return _read(request.query_params.multi_items())
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != _FORM:
        raise _Refused(f"send the parameters as a form ({_FORM})")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise _Refused("the form cannot be read") from None
    return _read(pairs)


def _with_state(uri: str, state: str | None) -> str:
    if state is None:
        return uri
    parts = urlsplit(uri)
    query = f"{parts.query}&{urlencode({'state': state})}" if parts.query else urlencode({"state": state})
    return urlunsplit(parts._replace(query=query))


async def _client(sso: Sso, params: dict[str, str], hint: Hint | None) -> OidcClient | None:
    named = params.get("client_id")
    if hint is not None and named is not None and named not in hint.audiences:
        raise _Refused("client_id is not the client the id_token_hint was issued to")
    client_id = named or (hint.client_id if hint is not None else None)
    return None if client_id is None else await sso.clients.find(client_id)


async def _cookie_session(sso: Sso, cookie: str | None) -> tuple[str, str] | None:
    """(user id, session id) of the cookie's live session, if any."""
    if not cookie:
        return None
    try:
        user_id, sid, _, _ = await sso.sessions.by_cookie(cookie)
    except Unauthorized:
        return None
    return user_id, sid


async def end_session(request: Request) -> Response:
    ctx = context_of(request)
    sso = ctx.get(Sso)
    try:
        return await _end_session(request, ctx.settings.require("secret_key"), sso, ctx.get(CsrfGuard))
    except STORE_OUTAGES as exc:
        if not store_outage(exc):
            raise
        raise ServiceUnavailable("the session store cannot be reached; try again shortly") from None


async def _end_session(request: Request, secret_key: str, sso: Sso, csrf: CsrfGuard) -> Response:
    try:
        params = await _parameters(request)
        hint = None
        if "id_token_hint" in params:
            hint = verify_hint(params["id_token_hint"], await sso.jwks(), sso.signer.issuer)
            if hint is None:
                raise _Refused("the id_token_hint is not an ID token this provider issued")
        client = await _client(sso, params, hint)
        redirect = params.get("post_logout_redirect_uri")
        if redirect is not None and (client is None or redirect not in client.post_logout_redirect_uris):
            raise _Refused("post_logout_redirect_uri is not registered for this client")
    except _Refused as refused:
        return logout_error_page(str(refused))
    cookie = request.cookies.get(_SESSION_COOKIE)
    live = await _cookie_session(sso, cookie)
    if hint is None and live is not None and cookie is not None:
        key = _confirm_key(secret_key)
        now_s = int(time.time())
        if request.method != "POST" or not _confirmed(key, cookie, params.get("confirm", ""), now_s):
            hidden = {
                k: v for k, v in params.items() if k in ("post_logout_redirect_uri", "state", "client_id")
            }
            return confirm_page(
                csrf=_confirmation(key, cookie, now_s), hidden=hidden,
                redirect_origin=origin_of(redirect) if redirect else None,
            )  # fmt: skip
    if hint is not None and hint.sid is not None:
        await sso.sessions.end(hint.sub, "one", hint.sid)
    if live is not None and (hint is None or hint.sub == live[0]) and (hint is None or hint.sid != live[1]):
        await sso.sessions.end(live[0], "one", live[1])
    response: Response
    if redirect is not None:
        response = RedirectResponse(_with_state(redirect, params.get("state")), status_code=302,
                                    headers=SECURITY_HEADERS)  # fmt: skip
    else:
        response = signed_out_page()
    if cookie is not None and (live is None or hint is None or hint.sub == live[0]):
        response.delete_cookie(_SESSION_COOKIE, httponly=True, samesite="lax", secure=csrf.secure_cookie)
    return response


_HTML = {"type": "string"}
_QUERY = {
    "id_token_hint": "an ID token this provider issued (expired is accepted)",
    "post_logout_redirect_uri": "where to go after, registered for the client",
    "state": "given back in the redirect",
    "client_id": "the client, when there is no id_token_hint",
}


def end_session_routes() -> list[BaseRoute]:
    docs: dict[str, Any] = {
        "responses": {200: _HTML, 302: None, 400: _HTML},
        "media_types": {200: "text/html", 400: "text/html"},
        "errors": {503: ["unavailable"]},
    }
    return [
        route("/sso/end_session", end_session, summary="RP-initiated logout: end the session, then redirect",
              query=_QUERY, **docs),
        route("/sso/end_session", end_session, methods=["POST"],
              summary="RP-initiated logout (the parameters as a form; the confirmation posts here)", **docs),
    ]  # fmt: skip

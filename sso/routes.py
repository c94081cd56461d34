"""The SSO HTTP endpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from kit.admins import AdminTokens
from kit.context import Context, context_of
from kit.errors import NotFound
from kit.responses import JSONBytes, JSONResponse, dumps
from kit.routing import route
from kit.schema import read_body, rule
from sso import devices, feed_routes
from sso.client import authenticate, bearer_token
from sso.csrf import CsrfGuard
from sso.keystore import ALGORITHMS
from sso.oidc import discovery, token_endpoint
from sso.oidc import routes as oidc_routes
from sso.oidc.endsession import end_session_routes
from sso.oidc.userinfo import oidc_userinfo
from sso.service import Caller, Sso, TokenPair
from sso.sessions import SessionInfo

__all__ = ["COOKIE", "routes"]

COOKIE = "peak_sid"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class Credentials:
    username: str = field(metadata=rule(min_length=1, max_length=64))
    password: str = field(metadata=rule(min_length=1, max_length=1024))


@dataclass
class PasswordChange:
    old_password: str = field(metadata=rule(max_length=1024))
    new_password: str = field(metadata=rule(max_length=1024))


@dataclass
class TokenForm:
    token: str = field(metadata=rule(max_length=8192))
    token_type_hint: str | None = None


@dataclass
class UserOut:
    id: str
    username: str


@dataclass
class TokensOut:
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    session_id: str


@dataclass(frozen=True)
class SessionOut(SessionInfo):
    current: bool


_SESSIONS_OUT = {"type": "object", "properties": {"sessions": {"type": "array"}}}
_INTROSPECTION_OUT = {"type": "object", "required": ["active"], "properties": {"active": {"type": "boolean"}}}
_USERINFO_OUT = {
    "type": "object",
    "properties": {"sub": {"type": "string"}, "username": {"type": "string"}, "roles": {"type": "array"},
                   "sid": {"type": "string"}, "preferred_username": {"type": "string"},
                   "name": {"type": "string"}},
}  # fmt: skip
_JWKS_OUT = {"type": "object", "properties": {"keys": {"type": "array"}}}


def _sso(request: Request) -> Sso:
    return context_of(request).get(Sso)


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _csrf(request: Request) -> CsrfGuard:
    return context_of(request).get(CsrfGuard)


async def _caller(request: Request, *, changes: bool = False) -> Caller:
    """The caller; for a state change (``changes``) authenticated by the session cookie, only from the site
    itself (``sso.csrf``): a bearer token is never sent by a browser on its own."""
    bearer, cookie = bearer_token(request), request.cookies.get(COOKIE)
    if changes and bearer is None and cookie:
        _csrf(request).check(request)
    return await _sso(request).caller(bearer, cookie)


def _tokens(pair: TokenPair, request: Request) -> Response:
    response = JSONResponse(pair.body(), headers=_NO_STORE)
    if pair.cookie:
        response.set_cookie(
            COOKIE,
            pair.cookie,
            max_age=_sso(request).settings.absolute_timeout_s,
            httponly=True,
            samesite="lax",
            secure=_csrf(request).secure_cookie,
        )
    return response


def _forget_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=_csrf(request).secure_cookie)


def _session(info: SessionInfo, caller: Caller) -> dict[str, object]:
    return {**dataclasses.asdict(info), "current": info.id == caller.session_id}


def _admin_names(ctx: Context) -> frozenset[str]:
    """The admin tokens' names, parsed once per process (shared with whoever else put them in the context)."""
    return AdminTokens.of(ctx).names


def _device_tokens(request: Request) -> list[str]:
    return devices.tokens_of(request.cookies.get(devices.COOKIE))


def _remember_device(response: Response, value: str | None, request: Request) -> None:
    """The device cookie (``sso.devices``): HttpOnly, SameSite=Lax, Path=/sso, Secure like the session cookie."""
    if value:
        sso = _sso(request)
        devices.set_cookie(
            response, value, max_age_s=sso.throttle.device_ttl_s, secure=_csrf(request).secure_cookie
        )


async def register(request: Request) -> Response:
    body = await read_body(request, Credentials)
    ctx = context_of(request)
    account = await ctx.get(Sso).register(
        body.username, body.password, ip=_ip(request), reserved=_admin_names(ctx)
    )
    return JSONResponse({"id": account.id, "username": account.username}, status_code=201)


async def login(request: Request) -> Response:
    _csrf(request).check_login(request)  # it sets the session cookie: never for another site's page
    body = await read_body(request, Credentials, allow_form=True)
    pair, device = await _sso(request).login(
        body.username, body.password, ip=_ip(request), user_agent=request.headers.get("user-agent", ""),
        devices=_device_tokens(request),
    )  # fmt: skip
    response = _tokens(pair, request)
    _remember_device(response, device, request)
    return response


async def logout(request: Request) -> Response:
    caller = await _caller(request, changes=True)
    await _sso(request).sessions.end(caller.user_id, "one", caller.session_id)
    response = Response(status_code=204)
    _forget_cookie(response, request)
    return response


async def current_session(request: Request) -> Response:
    # One coalesced round trip checks, slides and reads the session (bearer token or cookie).
    bearer = bearer_token(request)
    cookie = request.cookies.get(COOKIE) if bearer is None else None
    roles, s = await _sso(request).current_session(bearer, cookie)
    # Field by field: dataclasses.asdict took a third of the endpoint's CPU.
    body = {
        "id": s.id, "created_at": s.created_at, "last_seen_at": s.last_seen_at,
        "idle_expires_at": s.idle_expires_at, "absolute_expires_at": s.absolute_expires_at, "ip": s.ip,
        "user_agent": s.user_agent, "current": True, "user_id": s.user_id, "username": s.username,
        "roles": sorted(roles),
    }  # fmt: skip
    # JSONBytes: two headers made directly (Starlette's init_headers cost this hot read 3 us of its ~30).
    return JSONBytes(dumps(body))


async def list_sessions(request: Request) -> Response:
    caller = await _caller(request)
    sessions = await _sso(request).sessions.of_user(caller.user_id)
    return JSONResponse({"sessions": [_session(s, caller) for s in sessions]})


async def end_session(request: Request) -> Response:
    caller = await _caller(request, changes=True)
    ended = await _sso(request).sessions.end(caller.user_id, "one", request.path_params["sid"])
    if not ended:
        raise NotFound("you have no such session")
    return Response(status_code=204)


async def end_all_sessions(request: Request) -> Response:
    caller = await _caller(request, changes=True)
    await _sso(request).end_everything(caller.user_id)
    response = Response(status_code=204)
    _forget_cookie(response, request)
    return response


async def change_password(request: Request) -> Response:
    caller = await _caller(request, changes=True)
    body = await read_body(request, PasswordChange)
    device = await _sso(request).change_password(
        caller, body.old_password, body.new_password, ip=_ip(request), devices=_device_tokens(request)
    )
    response = Response(status_code=204)
    _remember_device(response, device, request)
    return response


async def userinfo(request: Request) -> Response:
    principal = await authenticate(request, strict=True)
    if principal.scope is not None:  # an OpenID Connect client's token: the claims of its scopes
        return JSONBytes(dumps(oidc_userinfo(principal)))
    body = {
        "sub": principal.user_id,
        "username": principal.username,
        "roles": sorted(principal.roles),
        "sid": principal.session_id,
    }
    return JSONBytes(dumps(body))


async def introspect(request: Request) -> Response:
    sso = _sso(request)
    await sso.clients.authenticate(request.headers.get("authorization", ""))
    body = await read_body(request, TokenForm, allow_form=True)
    return JSONResponse(await sso.introspect(body.token), headers=_NO_STORE)


async def revoke(request: Request) -> Response:
    sso = _sso(request)
    # Confidential clients authenticate; a token's holder may also revoke it without client credentials.
    if "authorization" in request.headers:
        await sso.clients.authenticate(request.headers["authorization"])
    body = await read_body(request, TokenForm, allow_form=True)
    await sso.revoke(body.token)
    return Response(status_code=200, headers=_NO_STORE)


async def jwks(request: Request) -> Response:
    return JSONResponse(await _sso(request).jwks(), headers={"Cache-Control": "public, max-age=60"})


async def openid_configuration(request: Request) -> Response:
    sso = _sso(request)
    base = context_of(request).settings.public_base_url()
    body = discovery.document(issuer=sso.signer.issuer, base=base, algorithms=ALGORITHMS)
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=60"})


# Every route that checks a bearer token strictly answers 503 when Redis cannot be reached.
_AUTH_ERRORS = {401: ["unauthenticated"], 503: ["unavailable"]}
# A state change by cookie from another site (sso.csrf).
_CHANGE_ERRORS = {**_AUTH_ERRORS, 403: ["csrf"]}


def routes() -> list[BaseRoute]:
    either = ["bearer", "cookie"]
    # Starlette tries routes in order: the hot paths (strict validation, the session read, introspection) first.
    return [
        route("/sso/userinfo", userinfo, summary="who the bearer token belongs to (strict check, slides the session)",
              responses={200: _USERINFO_OUT}, errors=_AUTH_ERRORS, auth=["bearer"]),
        route("/sso/session", current_session, summary="the current session and when it expires (one round trip)",
              responses={200: SessionOut}, errors=_AUTH_ERRORS, auth=either),
        route("/sso/introspect", introspect, methods=["POST"], summary="RFC 7662 token introspection",
              body=TokenForm, form=True, responses={200: _INTROSPECTION_OUT},
              errors={401: ["invalid_client"], 503: ["unavailable"]}, auth=["basic"]),
        route("/sso/users", register, methods=["POST"], summary="create an account", body=Credentials,
              responses={201: UserOut},
              errors={409: ["username_taken"], 422: ["weak_password", "invalid_username", "invalid_request"],
                      429: ["too_many_signups"], 503: ["busy", "unavailable"]}),
        route("/sso/login", login, methods=["POST"],
              summary="log in: tokens, the peak_sid cookie and the peak_device cookie", body=Credentials,
              form=True, responses={200: TokensOut},
              errors={401: ["invalid_credentials"], 403: ["account_disabled", "csrf"],
                      422: ["invalid_username", "invalid_request"], 429: ["too_many_attempts"],
                      503: ["busy", "unavailable"]}),
        route("/sso/token", token_endpoint.token, methods=["POST"],
              summary="tokens: an OpenID Connect client's code or refresh (RFC 6749), the login's refresh",
              body=token_endpoint.TokenRequest, form=True, responses=token_endpoint.RESPONSES,
              errors=token_endpoint.ERRORS),
        route("/sso/logout", logout, methods=["POST"], summary="end the current session",
              responses={204: None}, errors=_CHANGE_ERRORS, auth=either),
        route("/sso/sessions", list_sessions, summary="the caller's sessions",
              responses={200: _SESSIONS_OUT}, errors=_AUTH_ERRORS, auth=either),
        route("/sso/sessions", end_all_sessions, methods=["DELETE"], summary="log out everywhere",
              responses={204: None}, errors=_CHANGE_ERRORS, auth=either),
        route("/sso/sessions/{sid}", end_session, methods=["DELETE"], summary="end one of the caller's sessions",
              responses={204: None}, errors={**_CHANGE_ERRORS, 404: ["not_found"]}, auth=either),
        route("/sso/password", change_password, methods=["POST"],
              summary="change the password; every other session ends", body=PasswordChange,
              responses={204: None}, errors={401: ["unauthenticated", "invalid_credentials"], 403: ["csrf"],
                                             422: ["weak_password", "invalid_request"],
                                             429: ["too_many_attempts"], 503: ["busy", "unavailable"]},
              auth=either),
        route("/sso/revoke", revoke, methods=["POST"], summary="RFC 7009 token revocation",
              body=TokenForm, form=True, responses={200: None}, errors={401: ["invalid_client"]}),
        route("/.well-known/jwks.json", jwks, summary="the public signing keys (JWK set)",
              responses={200: _JWKS_OUT}),
        route("/.well-known/openid-configuration", openid_configuration,
              summary="issuer and endpoints (discovery)", responses={200: {"type": "object"}}),
        *feed_routes.routes(),
        *oidc_routes.routes(),
        *end_session_routes(),
    ]  # fmt: skip

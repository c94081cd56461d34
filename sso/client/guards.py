"""SSO in front of a Starlette route: the bearer token of a request, ``authenticate``, ``require_admin`` and
``BearerAuthBackend`` for Starlette's AuthenticationMiddleware, all asking the process's ``TokenValidator``.

Admin tokens (PEAK_ADMIN_TOKENS, PEAK_ADMIN_TOKEN) are read once per process into the context's
``AdminTokens``; their principal names the token, so an audit records who acted."""

from __future__ import annotations

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import Response

from kit.admins import AdminTokens
from kit.context import context_of
from kit.errors import Forbidden, Unauthorized, error_body
from kit.responses import JSONResponse
from kit.routing import raw_header
from sso.client.principal import Principal, admin_principal
from sso.client.validator import TokenValidator

__all__ = ["BearerAuthBackend", "authenticate", "bearer_token", "require_admin"]


def bearer_token(conn: HTTPConnection) -> str | None:
    # The raw header list rather than conn.headers: this runs on every authenticated request.
    value = raw_header(conn.scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(request: HTTPConnection, *, strict: bool = False) -> Principal:
    """The caller of a request with an SSO bearer token, or 401 ``unauthenticated``."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("send an SSO access token: Authorization: Bearer <token>")
    return await context_of(request).get(TokenValidator).validate(token, strict=strict)


def _admin_token_name(conn: HTTPConnection, token: str) -> str | None:
    return AdminTokens.of(context_of(conn)).name_for(token)


async def require_admin(request: HTTPConnection) -> Principal:
    """An SSO token with the admin role now (checked strictly: a role taken away counts at once) or an admin
    token, whose principal is named by the token's name; 401 without, 403 otherwise."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("send an admin credential: Authorization: Bearer <token>")
    name = _admin_token_name(request, token)
    if name is not None:
        return admin_principal(name)
    principal = await context_of(request).get(TokenValidator).validate(token, strict=True)
    if not principal.has_role("admin"):
        raise Forbidden("this needs the admin role")
    return principal


class BearerAuthBackend(AuthenticationBackend):
    """For Starlette's AuthenticationMiddleware: ``request.user`` becomes the Principal, scopes its roles.

    No Authorization header leaves the request anonymous (``requires("authenticated")`` answers it); an invalid
    token is refused with a 401 when used with ``on_error=BearerAuthBackend.on_error``.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = bearer_token(conn)
        if token is None:
            return None
        name = _admin_token_name(conn, token)
        if name is not None:
            principal = admin_principal(name)
        else:
            try:
                principal = await context_of(conn).get(TokenValidator).validate(token, strict=self.strict)
            except Unauthorized as exc:
                raise AuthenticationError(exc.message) from None
        return AuthCredentials(["authenticated", *sorted(principal.roles)]), principal

    @staticmethod
    def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
        return JSONResponse(
            error_body("unauthenticated", str(exc) or "a valid bearer token is required"),
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="peak"'},
        )

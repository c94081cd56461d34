"""An admin by bearer credential or by session cookie: the guard of pages a browser uses (the ops console).

A browser's EventSource cannot send an Authorization header, so the console signs in once (``POST /sso/login``
sets the HttpOnly ``peak_sid`` cookie) and from then on relies on the cookie. A bearer credential goes through
``sso.client.require_admin`` unchanged. A cookie must name a live session (looking it up slides it, as every
cookie use does) whose account holds the ``admin`` role as Redis has it now (a role taken away counts at once).
A state change the cookie authenticates must come from the site itself (``sso.csrf``).
"""

from __future__ import annotations

from starlette.requests import Request

from kit.context import context_of
from kit.errors import REDIS_OUTAGES, Forbidden, ServiceUnavailable, Unauthorized
from sso.client import bearer_token, require_admin
from sso.client.principal import Principal
from sso.csrf import CsrfGuard
from sso.routes import COOKIE
from sso.service import Caller, Sso

__all__ = ["SessionAdmin", "require_admin_or_session"]

# Methods that change state: by cookie, only from the site itself.
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_COOKIE = 512

SessionAdmin = Principal | Caller


async def require_admin_or_session(request: Request) -> SessionAdmin:
    """The admin calling: 401 ``unauthenticated`` without a credential or with a dead session, 403
    ``forbidden`` for a non-admin, 403 ``csrf`` for a cookie-authenticated change from another site, 503
    ``unavailable`` when the session store is unreachable."""
    if bearer_token(request) is not None:
        return await require_admin(request)
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise Unauthorized(
            "sign in (POST /sso/login) or send an admin credential: Authorization: Bearer <token>"
        )
    ctx = context_of(request)
    if request.scope.get("method") in _CHANGES:
        ctx.get(CsrfGuard).check(request)
    if len(cookie) > _MAX_COOKIE or not cookie.isascii():
        raise Unauthorized("the session cookie is not valid; sign in again")
    try:
        user_id, session_id, username, roles = await ctx.get(Sso).sessions.by_cookie(cookie)
    except REDIS_OUTAGES:
        raise ServiceUnavailable("the session store cannot be reached; try again shortly") from None
    if "admin" not in roles:
        raise Forbidden("this account lacks the admin role")
    return Caller(user_id, session_id, username, roles)

"""``POST /sso/token``: the first-party refresh (as before issue 19) and the OAuth 2.0 client grants.

A request is an OAuth client's when it is ``grant_type=authorization_code`` or carries client credentials
(HTTP Basic, ``client_id`` or ``client_secret``); its errors are then RFC 6749 5.2 bodies
(``{"error", "error_description"}``, 400, or 401 ``invalid_client``), which off-the-shelf client libraries
read. The first-party refresh keeps peak's own error bodies, as its clients expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kit.context import context_of
from kit.errors import ApiError, InvalidRequest
from kit.openapi import ERROR_SCHEMA
from kit.responses import JSONResponse
from kit.schema import read_body, rule
from sso.errors import UnsupportedGrantType
from sso.oidc import codes
from sso.oidc.client_auth import authenticate_client, basic_credentials
from sso.oidc.grant import exchange_code, refresh_for_client
from sso.service import Sso

__all__ = ["ERRORS", "RESPONSES", "TokenRequest", "token"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 5.2's codes; an error with another code of the kit's 400, 415 or 422 is `invalid_request`.
_OAUTH_CODES = frozenset(
    {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
     "invalid_scope"}
)  # fmt: skip
_AS_INVALID_REQUEST = frozenset({400, 415, 422})


@dataclass
class TokenRequest:
    grant_type: str = field(metadata=rule(max_length=64))
    refresh_token: str | None = None
    code: str | None = field(default=None, metadata=rule(max_length=codes.MAX_LENGTH))
    redirect_uri: str | None = field(default=None, metadata=rule(max_length=2048))
    code_verifier: str | None = field(default=None, metadata=rule(max_length=256))
    client_id: str | None = field(default=None, metadata=rule(max_length=256))
    client_secret: str | None = field(default=None, metadata=rule(max_length=512))
    # Accepted and ignored on a refresh: the answer names the scope granted, which never grows.
    scope: str | None = field(default=None, metadata=rule(max_length=1024))


_TOKEN_OUT = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in", "refresh_token"],
    "properties": {
        "access_token": {"type": "string"}, "token_type": {"type": "string"},
        "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"},
        "session_id": {"type": "string"}, "id_token": {"type": "string"}, "scope": {"type": "string"},
    },
}  # fmt: skip
_OAUTH_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}


def _either(codes: str) -> dict[str, Any]:
    return {"description": codes, "anyOf": [_OAUTH_ERROR, ERROR_SCHEMA]}


RESPONSES: dict[int, dict[str, Any]] = {
    200: _TOKEN_OUT,
    400: _either(
        "RFC 6749 5.2 for OAuth clients: invalid_request, invalid_grant, unauthorized_client,"
        " unsupported_grant_type; first-party refresh: unsupported_grant_type, invalid_form, invalid_json"
    ),
    401: _either("invalid_client (OAuth clients); invalid_grant (first-party refresh)"),
    429: _either("too_many_refreshes"),
}
# Those the kit renders itself: 408, 413, 415 and 422 (first-party), 503.
ERRORS: dict[int, list[str]] = {}


def _description(message: str) -> str:
    """RFC 6749 5.2 allows printable ASCII but for the double quote and the backslash."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in message)


def _oauth_error(exc: ApiError) -> Response:
    """The RFC 6749 5.2 answer for ``exc``; errors of other statuses keep peak's body (re-raised)."""
    code, status = exc.code, exc.status_code
    if code in _OAUTH_CODES:
        status = 401 if code == "invalid_client" else 400
    elif status in _AS_INVALID_REQUEST:
        code, status = "invalid_request", 400
    elif status != 429:
        raise exc
    headers = dict(_NO_STORE)
    for name in ("WWW-Authenticate", "Retry-After"):
        if name in exc.headers and (name != "WWW-Authenticate" or status == 401):
            headers[name] = exc.headers[name]
    return JSONResponse(
        {"error": code, "error_description": _description(exc.message)}, status_code=status, headers=headers
    )


async def token(request: Request) -> Response:
    authorization = request.headers.get("authorization", "")
    try:
        body = await read_body(request, TokenRequest, allow_form=True)
        basic = basic_credentials(authorization) if authorization else None
    except ApiError as exc:
        if authorization.lower().startswith("basic "):
            return _oauth_error(exc)
        raise
    sso = context_of(request).get(Sso)
    if (
        body.grant_type != "authorization_code"
        and basic is None
        and body.client_id is None
        and body.client_secret is None
    ):
        if body.grant_type != "refresh_token":
            raise UnsupportedGrantType(
                "only grant_type=refresh_token is supported here; log in at /sso/login"
            )
        if not body.refresh_token:
            raise InvalidRequest("field 'refresh_token' is required")
        return JSONResponse((await sso.refresh(body.refresh_token)).body(), headers=_NO_STORE)
    try:
        client = await authenticate_client(
            sso.clients, basic=basic, client_id=body.client_id, client_secret=body.client_secret
        )
        if body.grant_type == "authorization_code":
            answer = await exchange_code(
                sso, client, code=body.code, redirect_uri=body.redirect_uri, verifier=body.code_verifier
            )
        elif body.grant_type == "refresh_token":
            answer = await refresh_for_client(sso, client, body.refresh_token)
        else:
            raise UnsupportedGrantType("grant_type must be authorization_code or refresh_token")
    except ApiError as exc:
        return _oauth_error(exc)
    return JSONResponse(answer, headers=_NO_STORE)

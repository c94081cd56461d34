"""The exception hierarchy every package raises, and the one place it becomes an error response.

Every error body is ``{"error": {"code": "<snake_case>", "message": "<text for a person>"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

import asyncpg
from redis.exceptions import ClusterDownError, MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from kit.redis_private import WritesRefused
from kit.responses import JSONResponse

__all__ = [
    "POSTGRES_OUTAGES",
    "REDIS_OUTAGES",
    "STORE_OUTAGES",
    "ApiError",
    "BodyTooLarge",
    "Conflict",
    "Forbidden",
    "InvalidForm",
    "InvalidJSON",
    "InvalidRequest",
    "NotFound",
    "RequestTimeout",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_body",
    "error_response",
]


class ApiError(Exception):
    """An answer for the client. Subclasses fix ``status_code`` and ``code``; instances carry the message."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers or {})


class InvalidJSON(ApiError):
    status_code = 400
    code = "invalid_json"


class InvalidForm(ApiError):
    status_code = 400
    code = "invalid_form"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthenticated"

    def __init__(self, message: str = "a valid bearer token is required", **kwargs: object) -> None:
        headers = {"WWW-Authenticate": 'Bearer realm="peak"'}
        super().__init__(message, headers=headers, **kwargs)  # type: ignore[arg-type]


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class RequestTimeout(ApiError):
    """The body did not arrive in time (a slow client); the connection is closed after the answer."""

    status_code = 408
    code = "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class BodyTooLarge(ApiError):
    """The body is over ``PEAK_MAX_BODY_BYTES``; the rest of it is never read, so the connection closes."""

    status_code = 413
    code = "body_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class UnsupportedMediaType(ApiError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidRequest(ApiError):
    status_code = 422
    code = "invalid_request"


class TooManyRequests(ApiError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = retry_after_s


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after_s))})


# PostgreSQL out of reach, refusing connections for now (starting, shutting down, too many clients, its pool
# exhausted) or a connection broken mid-statement: no request or message is to blame.
POSTGRES_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# Redis out of reach, loading its data, in a failover (a replica that does not take writes yet, a cluster
# without a primary for a slot), or refusing writes (maxmemory reached with noeviction, a failing disk).
REDIS_OUTAGES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    MasterDownError,
    OutOfMemoryError,
    WritesRefused,
)
# Either: the client may retry; it is no bug of ours, so a 503, not a 500 (which the degradation controller
# would also count against the route, while the store's own health is what /readyz reports).
STORE_OUTAGES = POSTGRES_OUTAGES + REDIS_OUTAGES


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    if not message.isascii():
        # A message may quote the client's input; a lone surrogate in it would make orjson fail the answer.
        message = message.encode("utf-8", "replace").decode("utf-8")
    return {"error": {"code": code, "message": message}}


_HTTP_CODES = {
    400: ("bad_request", "the request could not be read"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "this method is not allowed on this path"),
    413: ("body_too_large", "the request body is too large"),
}


@overload
def error_response(exc: ApiError | HTTPException) -> Response: ...
@overload
def error_response(exc: Exception) -> Response | None: ...
def error_response(exc: Exception) -> Response | None:
    """The answer for an ApiError, a Starlette HTTPException (404, 405, ...) or a store outage (503); None for
    anything else."""
    if isinstance(exc, STORE_OUTAGES):
        exc = ServiceUnavailable("a data store is briefly unreachable; try again")
    if isinstance(exc, ApiError):
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status_code, headers=exc.headers
        )
    if isinstance(exc, HTTPException):
        code, message = _HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail)))
        if exc.status_code == 404 and exc.detail not in ("Not Found", None):
            message = str(exc.detail)
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)
    return None

"""Path and query parameters read as the types their routes mean, with the errors a client can act on.

``str.isdigit()`` is true for ``"²"`` and ``"٣"``, which ``int()`` refuses or reads as another number: an
identifier in a path is ASCII digits of bounded length, or there is no such resource.
"""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request

from kit.errors import InvalidRequest, NotFound
from kit.schema import has_control, instant

__all__ = ["ID_SCHEMA", "ascii_int", "path_int", "query_instant", "query_int", "query_str"]

# The OpenAPI schema of an identifier ``path_int`` reads (``route(..., params={"event_id": ID_SCHEMA})``).
ID_SCHEMA = {"type": "string", "pattern": "^[0-9]{1,18}$"}


def ascii_int(raw: str, *, max_digits: int = 18) -> int | None:
    """The number ``raw`` spells in ASCII digits (at most ``max_digits``: 18 stay inside bigint), else None."""
    if raw.isascii() and raw.isdigit() and len(raw) <= max_digits:
        return int(raw)
    return None


def path_int(request: Request, name: str, *, max_digits: int = 18) -> int:
    """A path parameter of ASCII digits (at most ``max_digits``); 404 otherwise."""
    value = ascii_int(str(request.path_params[name]), max_digits=max_digits)
    if value is None:
        raise NotFound(f"no such {name.removesuffix('_id')}")
    return value


def query_str(request: Request, name: str, *, max_length: int = 256) -> str | None:
    """A query parameter as text without control characters, at most ``max_length``; None when absent or
    empty; 422 naming it otherwise."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    if has_control(raw):
        raise InvalidRequest(f"query parameter '{name}' must not contain control characters")
    if len(raw) > max_length:
        raise InvalidRequest(f"query parameter '{name}' must be at most {max_length} characters")
    return raw


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """A query parameter of ASCII digits from ``low`` to ``high`` (``default`` when absent); 422 otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = ascii_int(raw)
    if value is None or not low <= value <= high:
        raise InvalidRequest(f"query parameter '{name}' must be a whole number from {low} to {high}")
    return value


def query_instant(request: Request, name: str) -> dt.datetime | None:
    """A query parameter as an ISO 8601 time with its zone (see ``kit.schema.instant``); None when absent."""
    raw = query_str(request, name)
    return None if raw is None else instant(name, raw, kind="query parameter")

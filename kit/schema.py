"""Request bodies as dataclasses: one reader that validates them and one JSON Schema for the OpenAPI document.

A field's rules live in its metadata (``rule(min=1, max=5)``); a failure is a 422 ``invalid_request`` naming
the field. Rules every field gets without asking, because no client input may reach PostgreSQL or Redis in a
shape they refuse (a 500, which also counts against the core for the degradation controller):

- strings hold no C0 control character but tab, newline and carriage return, and no lone surrogate
  (PostgreSQL refuses NUL in text);
- whole numbers lie in PostgreSQL's bigint range unless the field names tighter bounds; a boolean is no number;
- ``datetime.datetime`` fields take ISO 8601 with a time zone, from 1970 to 9998 (UTC), and arrive in UTC.

The body itself: JSON (``application/json``, UTF-8) or, where a route allows it, a form; any other content
type is 415 ``unsupported_media_type``, so a cross-site ``text/plain`` form cannot carry JSON. Its size and the
time it may take to arrive are bounded by the request middleware (``kit/body.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin
from urllib.parse import parse_qsl

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request

from kit.errors import InvalidForm, InvalidJSON, InvalidRequest, UnsupportedMediaType

__all__ = [
    "BIGINT_MAX",
    "BIGINT_MIN",
    "INSTANT_MAX",
    "INSTANT_MIN",
    "body_required",
    "form_fields",
    "has_control",
    "instant",
    "json_schema",
    "read_body",
    "rule",
    "validate",
]

T = TypeVar("T")

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
INSTANT_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
INSTANT_MAX = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)

_URLENCODED = "application/x-www-form-urlencoded"
_FORM_TYPES = (_URLENCODED, "multipart/form-data")
# A form field's values are short; no file is ever taken (Starlette would spool it to a temporary file).
_FORM_MAX_FIELDS = 64
# The body cap (PEAK_MAX_BODY_BYTES) bounds the whole form first; this is Starlette's default.
_FORM_MAX_PART_BYTES = 1 << 20
# C0 controls but tab, newline and carriage return, and lone surrogates (JSON escapes can make none here:
# orjson refuses them, but a form's charset can).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
# How deep free-form JSON (an ``Any`` or ``dict`` field) may nest.
_MAX_DEPTH = 32
# The same rule for the OpenAPI document (ECMA-262 syntax, which Python's re reads too).
_NO_CONTROL_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f]*$"


def rule(
    *,
    min: float | None = None,
    max: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    return {
        k: v
        for k, v in {
            "min": min,
            "max": max,
            "min_length": min_length,
            "max_length": max_length,
            "description": description,
        }.items()
        if v is not None
    }


def has_control(value: str) -> bool:
    """Whether a string holds a character no field accepts (see the module's rules)."""
    return _CONTROL.search(value) is not None


async def read_body(request: Request, cls: type[T], *, allow_form: bool = False) -> T:
    """The request body (JSON, or a form where allowed) validated into ``cls``."""
    content_type = request.headers.get("content-type")
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    if allow_form and media == _URLENCODED:
        return validate(cls, await form_fields(request))
    if allow_form and media in _FORM_TYPES:
        try:
            form = await request.form(
                max_files=0, max_fields=_FORM_MAX_FIELDS, max_part_size=_FORM_MAX_PART_BYTES
            )
        except HTTPException as exc:
            raise InvalidForm(f"the form cannot be read: {exc.detail}") from None
        data: Any = {k: v for k, v in form.items() if isinstance(v, str)}
        return validate(cls, data)
    if content_type is not None and not _is_json(media, params):
        accepted = "application/json (UTF-8)" + (" or a form" if allow_form else "")
        raise UnsupportedMediaType(f"the request body must be {accepted}")
    raw = await request.body()
    if not raw.strip():
        data = {}
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None
    return validate(cls, data)


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded body's fields, read with ``parse_qsl`` (python-multipart took 60 % of a token
    introspection's CPU). Refused with ``invalid_form`` (400): a body or an escape that is not UTF-8, more than
    64 fields, a field sent twice (RFC 6749 3.1 and 3.2: a parameter MUST NOT be sent more than once)."""
    try:
        text = (await request.body()).decode()
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_FORM_MAX_FIELDS, errors="strict")
    except UnicodeDecodeError:
        raise InvalidForm("the form is not UTF-8 (nor are its %-escapes)") from None
    except ValueError:
        raise InvalidForm(f"the form has more than {_FORM_MAX_FIELDS} fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise InvalidForm(f"the form sends field {name!r} more than once")
        fields[name] = value
    return fields


def _is_json(media: str, params: str) -> bool:
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        return False
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def validate(cls: type[T], data: Any) -> T:
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data or data[f.name] is None:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if _optional(hints[f.name]) and f.name in data:
                    values[f.name] = None
                    continue
                raise InvalidRequest(f"field '{f.name}' is required")
            continue
        values[f.name] = _check(f.name, hints[f.name], data[f.name], f.metadata)
    return cls(**values)


def instant(name: str, raw: str, *, kind: str = "field") -> dt.datetime:
    """An ISO 8601 date and time with its time zone, in UTC, from 1970 to 9998; 422 naming ``name`` otherwise.

    For query parameters too (``kind="query parameter"``); a dataclass field typed ``datetime`` gets it itself."""
    what = f"{kind} '{name}'"
    if has_control(raw):
        raise InvalidRequest(f"{what} must not contain control characters")
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{what} must be an ISO 8601 date and time") from None
    if value.tzinfo is None:
        raise InvalidRequest(f"{what} must name its time zone (for example 'Z' or '+08:00')")
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:
        value = INSTANT_MIN - dt.timedelta(days=1)
    if not INSTANT_MIN <= value < INSTANT_MAX:
        raise InvalidRequest(f"{what} must be from 1970-01-01T00:00:00Z to 9998-12-31T23:59:59Z")
    return value


def _hints(cls: type[Any]) -> dict[str, Any]:
    cached = _HINT_CACHE.get(cls)
    if cached is None:
        cached = typing.get_type_hints(cls)
        _HINT_CACHE[cls] = cached
    return cached


_HINT_CACHE: dict[type[Any], dict[str, Any]] = {}


def _optional(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType) and type(None) in get_args(hint)


def _check(name: str, hint: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _check(name, inner[0], value, meta)
    if origin is Literal:
        allowed = get_args(hint)
        if isinstance(value, list | dict) or value not in allowed:
            raise InvalidRequest(f"field '{name}' must be one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise InvalidRequest(f"field '{name}' must be a list")
        (item,) = get_args(hint)
        return [_check(f"{name}[{i}]", item, v, {}) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidRequest(f"field '{name}' must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"field '{name}' must be a whole number")
        _bounds(name, value, meta, BIGINT_MIN, BIGINT_MAX)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidRequest(f"field '{name}' must be a number")
        _bounds(name, value, meta, None, None)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InvalidRequest(f"field '{name}' must be a string")
        if has_control(value):
            raise InvalidRequest(f"field '{name}' must not contain control characters")
        if "min_length" in meta and len(value) < meta["min_length"]:
            raise InvalidRequest(f"field '{name}' must be at least {meta['min_length']} characters")
        if "max_length" in meta and len(value) > meta["max_length"]:
            raise InvalidRequest(f"field '{name}' must be at most {meta['max_length']} characters")
        return value
    if hint is dt.datetime:
        if not isinstance(value, str):
            raise InvalidRequest(f"field '{name}' must be an ISO 8601 date and time")
        return instant(name, value)
    if hint is Any or origin is dict:
        _check_nested(name, value)
        return value
    raise TypeError(f"unsupported field type {hint!r} for {name}")


def _check_nested(name: str, value: Any) -> None:
    """Free-form JSON (``Any``, ``dict``): every string in it, keys too, follows the string rule, and it nests
    at most ``_MAX_DEPTH`` deep. Iterative: orjson reads documents nested deeper than Python's recursion limit
    (and writes none deeper than 255), so a deep one would fail whatever handles it next."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if has_control(item):
                raise InvalidRequest(f"field '{name}' must not contain control characters")
        elif isinstance(item, dict | list):
            if depth >= _MAX_DEPTH:
                raise InvalidRequest(f"field '{name}' must nest at most {_MAX_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _bounds(name: str, value: float, meta: Mapping[str, Any], low: float | None, high: float | None) -> None:
    low, high = meta.get("min", low), meta.get("max", high)
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            raise InvalidRequest(f"field '{name}' must be from {low:g} to {high:g}")
        if low is not None:
            raise InvalidRequest(f"field '{name}' must be at least {low:g}")
        raise InvalidRequest(f"field '{name}' must be at most {high:g}")


def json_schema(cls: type[Any]) -> dict[str, Any]:
    """The JSON Schema (2020-12, as OpenAPI 3.1 uses) of a dataclass."""
    props: dict[str, Any] = {}
    required: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        props[f.name] = _type_schema(hints[f.name], f.metadata)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        schema["description"] = cls.__doc__.strip()
    return schema


def body_required(cls: type[Any]) -> bool:
    """Whether a body of ``cls`` must be sent: an empty body reads as ``{}``, enough when no field is required."""
    return any(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _type_schema(hint: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    origin = get_origin(hint)
    schema: dict[str, Any]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        schema = _type_schema(inner[0], meta)
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        else:
            schema["type"] = [schema.get("type", "object"), "null"]
        return schema
    if origin is Literal:
        schema = {"enum": list(get_args(hint))}
    elif origin is list:
        schema = {"type": "array", "items": _type_schema(get_args(hint)[0], {})}
    elif origin is dict or hint is Any:
        schema = {"type": "object"}
    elif hint is dt.datetime:
        schema = {"type": "string", "format": "date-time"}
    elif dataclasses.is_dataclass(hint):
        schema = json_schema(hint)  # type: ignore[arg-type]
    else:
        schema = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[hint]}
    if hint is int:
        schema.update(minimum=BIGINT_MIN, maximum=BIGINT_MAX)
    if hint is str:
        schema["pattern"] = _NO_CONTROL_PATTERN
    for key, out in (
        ("min", "minimum"),
        ("max", "maximum"),
        ("min_length", "minLength"),
        ("max_length", "maxLength"),
        ("description", "description"),
    ):
        if key in meta:
            schema[out] = meta[key]
    return schema

"""Request bodies as dataclasses: one reader that validates them and one JSON Schema for the OpenAPI document.

A field's rules live in its metadata (``rule(min=1, max=5)``); a failure is a 422 ``invalid_request`` naming
the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

import orjson
from starlette.requests import Request

from kit.errors import InvalidJSON, InvalidRequest

__all__ = ["json_schema", "read_body", "rule", "validate"]

T = TypeVar("T")

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


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


async def read_body(request: Request, cls: type[T], *, allow_form: bool = False) -> T:
    """The request body (JSON, or a form where allowed) validated into ``cls``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if allow_form and content_type in _FORM_TYPES:
        form = await request.form()
        data: Any = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        raw = await request.body()
        if not raw.strip():
            data = {}
        else:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None
    return validate(cls, data)


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
        if value not in allowed:
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
        _bounds(name, value, meta)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"field '{name}' must be a number")
        _bounds(name, value, meta)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InvalidRequest(f"field '{name}' must be a string")
        if "min_length" in meta and len(value) < meta["min_length"]:
            raise InvalidRequest(f"field '{name}' must be at least {meta['min_length']} characters")
        if "max_length" in meta and len(value) > meta["max_length"]:
            raise InvalidRequest(f"field '{name}' must be at most {meta['max_length']} characters")
        return value
    if hint is Any or origin is dict:
        return value
    raise TypeError(f"unsupported field type {hint!r} for {name}")


def _bounds(name: str, value: float, meta: Mapping[str, Any]) -> None:
    low, high = meta.get("min"), meta.get("max")
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


def _type_schema(hint: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    origin = get_origin(hint)
    schema: dict[str, Any]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        schema = _type_schema(inner[0], meta)
        schema["type"] = [schema.get("type", "object"), "null"]
        return schema
    if origin is Literal:
        schema = {"enum": list(get_args(hint))}
    elif origin is list:
        schema = {"type": "array", "items": _type_schema(get_args(hint)[0], {})}
    elif origin is dict or hint is Any:
        schema = {"type": "object"}
    elif dataclasses.is_dataclass(hint):
        schema = json_schema(hint)  # type: ignore[arg-type]
    else:
        schema = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[hint]}
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

"""The OpenAPI 3.1 document, built from the routes' own ``Doc``.

Besides what each route declares, every operation lists the answers the kit itself gives: 413
``body_too_large``, 500 ``internal_error`` and 503 ``unavailable`` (a store unreachable) anywhere; 400/408/415/422 where a body is read; 404 for a path
parameter no resource can have; 422 for a bad query parameter. A fuzzer (tests/test_fuzz.py) holds every
answer to this document.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute

from kit.routing import ApiRoute, Doc
from kit.schema import body_required, json_schema

__all__ = ["ERROR_SCHEMA", "openapi_document"]

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

_SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "basic": {"type": "http", "scheme": "basic"},
    "cookie": {"type": "apiKey", "in": "cookie", "name": "peak_sid"},
    "admin": {"type": "http", "scheme": "bearer", "description": "admin-role SSO token or PEAK_ADMIN_TOKEN"},
}


def _schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and isinstance(value, type):
        return json_schema(value)
    assert isinstance(value, dict)
    return value


def _param(doc: Doc, name: str) -> dict[str, Any]:
    return dict(doc.params.get(name, {"type": "string"}))


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _errors(r: ApiRoute) -> dict[int, list[str]]:
    """The route's own error codes by status, with those the kit answers for every route of its kind."""
    doc = r.doc
    found: dict[int, list[str]] = {status: list(codes) for status, codes in doc.errors.items()}

    def add(status: int, code: str) -> None:
        codes = found.setdefault(status, [])
        if code not in codes:
            codes.append(code)

    add(413, "body_too_large")
    add(500, "internal_error")
    add(503, "unavailable")
    if doc.body is not None:
        add(400, "invalid_json")
        if doc.form:
            add(400, "invalid_form")
        add(408, "request_timeout")
        add(415, "unsupported_media_type")
        add(422, "invalid_request")
    if r.param_convertors:
        add(404, "not_found")
    if doc.query:
        add(422, "invalid_request")
    return found


def openapi_document(routes: Iterable[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        if not isinstance(r, ApiRoute):
            continue
        doc = r.doc
        params = [
            {"name": name, "in": "path", "required": True, "schema": _param(doc, name)}
            for name in re.findall(r"{(\w+)(?::\w+)?}", r.path)
        ]
        for where, described in (("query", doc.query), ("header", doc.headers)):
            params += [
                {
                    "name": name,
                    "in": where,
                    "required": False,
                    "schema": _param(doc, name),
                    "description": text,
                }
                for name, text in described.items()
            ]
        responses: dict[str, Any] = {}
        for status, body in doc.responses.items():
            entry: dict[str, Any] = {"description": "success" if status < 300 else "answer"}
            schema = _schema(body)
            if schema is not None:
                entry["content"] = {doc.media_types.get(status, "application/json"): {"schema": schema}}
            responses[str(status)] = entry
        for status, codes in sorted(_errors(r).items()):
            if str(status) in responses:
                continue
            responses[str(status)] = {
                "description": "error codes: " + ", ".join(codes),
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            }
        operation: dict[str, Any] = {"summary": doc.summary, "tags": [doc.tag], "responses": responses}
        if params:
            operation["parameters"] = params
        if doc.auth:
            operation["security"] = [{name: []} for name in doc.auth]
        if doc.body is not None:
            content = {"application/json": {"schema": json_schema(doc.body)}}
            if doc.form:
                for media in _FORM_TYPES:
                    content[media] = {"schema": json_schema(doc.body)}
            operation["requestBody"] = {"required": body_required(doc.body), "content": content}
        path = re.sub(r"{(\w+):\w+}", r"{\1}", r.path)
        for method in sorted(r.methods or ()):
            if method == "HEAD":
                continue
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"securitySchemes": _SECURITY, "schemas": {"Error": ERROR_SCHEMA}},
    }

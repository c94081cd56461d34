"""The OpenAPI 3.1 document, built from the routes' own ``Doc``."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute

from kit.routing import ApiRoute
from kit.schema import json_schema

__all__ = ["openapi_document"]

_ERROR = {
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


def openapi_document(routes: Iterable[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        if not isinstance(r, ApiRoute):
            continue
        doc = r.doc
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)(?::\w+)?}", r.path)
        ]
        for where, described in (("query", doc.query), ("header", doc.headers)):
            params += [
                {
                    "name": name,
                    "in": where,
                    "required": False,
                    "schema": {"type": "string"},
                    "description": text,
                }
                for name, text in described.items()
            ]
        responses: dict[str, Any] = {}
        for status, body in doc.responses.items():
            entry: dict[str, Any] = {"description": "success" if status < 300 else "answer"}
            schema = _schema(body)
            if schema is not None:
                entry["content"] = {"application/json": {"schema": schema}}
            responses[str(status)] = entry
        for status, codes in doc.errors.items():
            responses[str(status)] = {
                "description": "error codes: " + ", ".join(codes),
                "content": {"application/json": {"schema": _ERROR}},
            }
        operation: dict[str, Any] = {"summary": doc.summary, "tags": [doc.tag], "responses": responses}
        if params:
            operation["parameters"] = params
        if doc.auth:
            operation["security"] = [{name: []} for name in doc.auth]
        if doc.body is not None:
            content = {"application/json": {"schema": json_schema(doc.body)}}
            if doc.form:
                content["application/x-www-form-urlencoded"] = {"schema": json_schema(doc.body)}
            operation["requestBody"] = {"required": True, "content": content}
        path = re.sub(r"{(\w+):\w+}", r"{\1}", r.path)
        for method in sorted(r.methods or ()):
            if method == "HEAD":
                continue
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"securitySchemes": _SECURITY, "schemas": {"Error": _ERROR}},
    }

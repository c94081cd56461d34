"""JSON Schema pieces of seckill's OpenAPI responses, shared by its route modules."""

from __future__ import annotations

from typing import Any

__all__ = ["DOWN", "INT", "STR", "obj"]

INT = {"type": "integer"}
STR = {"type": "string"}
DOWN = {503: ["unavailable"]}


def obj(*names: str, **typed: Any) -> dict[str, Any]:
    """An object whose every property is required (``names`` without a schema of their own)."""
    props: dict[str, Any] = {n: {} for n in names}
    props.update(typed)
    return {"type": "object", "properties": props, "required": list(props)}

"""Where a validator gets the public signing keys: any coroutine returning a JWK set, such as a JWKS URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

__all__ = ["KeySource", "jwks_from_url"]

# Returns a JWK set ({"keys": [...]}).
KeySource = Callable[[], Awaitable[Mapping[str, Any]]]


def jwks_from_url(url: str, *, timeout_s: float = 5.0) -> KeySource:
    async def fetch() -> Mapping[str, Any]:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(url)
            response.raise_for_status()
            body: Mapping[str, Any] = response.json()
            return body

    return fetch

from __future__ import annotations

import httpx

from tests.sso.conftest import bearer, login, register


async def test_register_login_session(client: httpx.AsyncClient) -> None:
    user = await register(client, "alice")
    tokens = await login(client, "ALICE")
    assert tokens["token_type"] == "Bearer"
    session = await client.get("/sso/session", headers=bearer(tokens))
    assert session.status_code == 200, session.text
    assert session.json()["user_id"] == user["id"]
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert len(jwks["keys"]) == 1

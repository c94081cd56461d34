"""The composed app: subsystems wired together (the layout's dependency rules: tests/test_layers.py)."""

from __future__ import annotations

import httpx

from tests.conftest import Servers
from tests.support import run_peak

PASSWORD = "correct horse battery"


async def _token(client: httpx.AsyncClient, username: str) -> str:
    created = await client.post("/sso/users", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = await client.post("/sso/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


async def test_an_sso_admin_runs_the_other_subsystems_admin_endpoints(
    client: httpx.AsyncClient, servers: Servers
) -> None:
    await _token(client, "opsadmin")
    granted = run_peak("sso", "grant", "opsadmin", "admin", env=servers.env())
    assert granted.returncode == 0, granted.stderr
    login = await client.post("/sso/login", json={"username": "opsadmin", "password": PASSWORD})
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    shopper = {"Authorization": f"Bearer {await _token(client, 'plainshopper')}"}
    # The login's session cookie authenticates admin routes too (sso.guard): these calls carry only what they say.
    client.cookies.clear()

    switch = {"mode": "shed", "reason": "composition test"}
    assert (await client.put("/degrade/switches/reviews", json=switch)).status_code == 401
    refused = await client.put("/degrade/switches/reviews", json=switch, headers=shopper)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    done = await client.put("/degrade/switches/reviews", json=switch, headers=admin)
    assert done.status_code == 200, done.text
    audit = (await client.get("/degrade/audit", headers=admin)).json()
    assert any(e["by"] == "opsadmin" and e["source"] == "ops" for e in audit["entries"]), audit

    event = {
        "sku": "composed-1", "title": "t", "price": 100, "stock": 3,
        "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2999-01-01T00:00:00Z", "ticket_required": False,
    }  # fmt: skip
    assert (await client.post("/seckill/events", json=event, headers=shopper)).status_code == 403
    created = await client.post("/seckill/events", json=event, headers=admin)
    assert created.status_code == 201, created.text
    bought = await client.post(f"/seckill/events/{created.json()['id']}/orders", headers=shopper)
    assert bought.status_code == 202, bought.text

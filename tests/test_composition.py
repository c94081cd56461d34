"""The composed app: subsystems wired together, and the dependency rules of the layout."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest

from tests.conftest import Servers
from tests.support import REPO, run_peak

PASSWORD = "correct horse battery"

# package -> packages it must never import (the README's dependency rules)
FORBIDDEN = {
    "peak": {"sso", "seckill", "degrade", "reviews", "customer_service", "loadtest"},
    "sso": {"seckill", "degrade", "reviews", "customer_service", "loadtest"},
    "seckill": {"degrade", "reviews", "customer_service", "loadtest"},
    "degrade": {"sso", "seckill", "reviews", "customer_service", "loadtest"},
    "reviews": {"customer_service", "loadtest"},
    "customer_service": {"reviews", "loadtest"},
}
# Only the composition and the CLI may know the subsystems.
KIT_COMPOSERS = {"peak/app.py", "peak/cli.py"}
SSO_PUBLIC = {"sso.client"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    for path in sorted((REPO / package).rglob("*.py")):
        relative = str(path.relative_to(REPO))
        if relative in KIT_COMPOSERS:
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN[package], f"{relative} imports {name}"
            if top == "sso" and package not in ("sso", "peak"):
                assert any(name == p or name.startswith(p + ".") for p in SSO_PUBLIC) or name == "sso", (
                    f"{relative} imports {name}: other subsystems use SSO only through sso.client"
                )


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
        "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2999-01-01T00:00:00Z",
    }  # fmt: skip
    assert (await client.post("/seckill/events", json=event, headers=shopper)).status_code == 403
    created = await client.post("/seckill/events", json=event, headers=admin)
    assert created.status_code == 201, created.text
    bought = await client.post(f"/seckill/events/{created.json()['id']}/orders", headers=shopper)
    assert bought.status_code == 202, bought.text

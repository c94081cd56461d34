"""The console's page: served by exact name from the package's static folder, with its security headers on
every answer; nothing else on the disk can be reached."""

from __future__ import annotations

import httpx

from console.assets import Assets
from console.routes import CSP
from tests.console.conftest import App, raw_get

_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _secured(response: httpx.Response) -> None:
    for name, value in _HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, response.headers)


async def test_page_and_files_with_types_etags_and_headers(app: App) -> None:
    c = app.http
    moved = await c.get("/console", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/console/"
    _secured(moved)
    page = await c.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
    _secured(page)
    # No inline script or style: the CSP forbids them, so the page must not need them.
    html = page.text.lower()
    assert "<script>" not in html and "<style" not in html and " style=" not in html and "onclick" not in html
    again = await c.get("/console/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and not again.content
    _secured(again)
    for name, asset in Assets().files.items():
        got = await c.get(f"/console/{name}")
        assert got.status_code == 200 and got.content == asset.body, name
        assert got.headers["content-type"] == asset.media_type
        _secured(got)
    types = {n.rsplit(".", 1)[-1]: a.media_type for n, a in Assets().files.items()}
    assert types.get("js", "text/javascript; charset=utf-8") == "text/javascript; charset=utf-8"
    assert types.get("css", "text/css; charset=utf-8") == "text/css; charset=utf-8"
    wrong_method = await c.post("/console/index.html")
    assert wrong_method.status_code == 405
    _secured(wrong_method)


_TRAVERSALS = [
    "/console/../pyproject.toml",
    "/console/..%2f..%2fpyproject.toml",
    "/console/%2e%2e/%2e%2e/pyproject.toml",
    "/console/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/console//etc/passwd",
    "/console/%2fetc%2fpasswd",
    "/console/static/index.html",
    "/console/index.html%00.css",
    "/console/index.html%00",
    "/console/./index.html",
    "/console/INDEX.HTML",
    "/console/__init__.py",
    "/console/routes.py",
    "/console/..\\..\\pyproject.toml",
    "/console/vendor/../index.html",
]


async def test_no_path_reaches_another_file(app: App) -> None:
    for path in _TRAVERSALS:
        # Sent as is, straight to the app: an HTTP client would resolve the dots before sending.
        got = await raw_get(app, path)
        assert got.status == 404, (path, got.status, got.raw[:200])
        body = bytes(got.raw)
        assert b"[project]" not in body and b"root:" not in body and b"import" not in body
        for name, value in _HEADERS.items():
            assert got.headers.get(name) == value, (path, name)

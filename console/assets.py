"""The console's static files: a fixed allow-list read once from the package's ``static/`` folder.

A request names a file by its exact relative path (``vendor/chart.min.js``); anything not in the list is a 404,
so no path (``..``, ``%2e%2e``, an absolute path, a NUL) can reach another file: nothing is ever joined to a
folder at request time. Hidden files and folders are left out.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["Asset", "Assets"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
_MAX_DEPTH = 4


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _media_type(name: str) -> str:
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > name.rfind("/") else ""
    if suffix in _TYPES:
        return _TYPES[suffix]
    if not suffix:  # LICENSE, NOTICE
        return "text/plain; charset=utf-8"
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def _walk(folder: Traversable, prefix: str, depth: int) -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            if depth < _MAX_DEPTH:
                yield from _walk(entry, f"{prefix}{entry.name}/", depth + 1)
        elif entry.is_file():
            yield f"{prefix}{entry.name}", entry


class Assets:
    """The files of ``<package>/<folder>/``, read on first use and kept for the life of the process."""

    def __init__(self, package: str = "console", folder: str = "static") -> None:
        self._package = package
        self._folder = folder
        self._files: Mapping[str, Asset] | None = None

    def _load(self) -> Mapping[str, Asset]:
        root = resources.files(self._package).joinpath(self._folder)
        found: dict[str, Asset] = {}
        if root.is_dir():
            for name, entry in _walk(root, "", 0):
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                found[name] = Asset(body, _media_type(name), etag)
        return found

    @property
    def files(self) -> Mapping[str, Asset]:
        if self._files is None:
            self._files = self._load()
        return self._files

    def get(self, name: str) -> Asset | None:
        return self.files.get(name)

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from kit import migrations
from kit.component import Component
from tests.conftest import Servers


@pytest.fixture
def demo_package(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"demo_migrations_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    (pkg / "migrations").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "migrations" / "0001_things.sql").write_text(f"CREATE TABLE {name}_things (id int PRIMARY KEY);")
    (pkg / "migrations" / "0002_more.sql").write_text(f"ALTER TABLE {name}_things ADD COLUMN label text;")
    sys.path.insert(0, str(tmp_path))
    yield name, pkg
    sys.path.remove(str(tmp_path))


async def _apply(url: str, parts: list[Component]) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [m.name for m in await migrations.apply(conn, migrations.discover(parts))]
    finally:
        await conn.close()


async def test_applied_once_in_order_then_nothing(servers: Servers, demo_package: tuple[str, Path]) -> None:
    name, _ = demo_package
    parts = [Component(name=name, migrations=name)]
    assert await _apply(servers.postgres.url, parts) == ["0001_things.sql", "0002_more.sql"]
    assert await _apply(servers.postgres.url, parts) == []
    conn = await asyncpg.connect(servers.postgres.url)
    try:
        await conn.execute(f"INSERT INTO {name}_things (id, label) VALUES (1, 'x')")
        rows = await conn.fetch("SELECT name FROM peak_migrations WHERE component = $1 ORDER BY name", name)
        assert [r["name"] for r in rows] == ["0001_things.sql", "0002_more.sql"]
    finally:
        await conn.close()


async def test_concurrent_processes_apply_each_file_once(
    servers: Servers, demo_package: tuple[str, Path]
) -> None:
    name, _ = demo_package
    parts = [Component(name=name, migrations=name)]
    results = await asyncio.gather(*(_apply(servers.postgres.url, parts) for _ in range(12)))
    applied = [n for r in results for n in r]
    assert sorted(applied) == ["0001_things.sql", "0002_more.sql"]


async def test_edited_migration_is_refused(servers: Servers, demo_package: tuple[str, Path]) -> None:
    name, pkg = demo_package
    parts = [Component(name=name, migrations=name)]
    await _apply(servers.postgres.url, parts)
    (pkg / "migrations" / "0001_things.sql").write_text("CREATE TABLE other (id int);")
    with pytest.raises(migrations.MigrationError, match="was changed after it was applied"):
        await _apply(servers.postgres.url, parts)

"""Ordered plain-SQL migrations, recorded in ``peak_migrations``, applied under an advisory lock.

Each component's ``migrations/`` folder holds files named ``NNNN_what.sql``; they run in name order, each in
its own transaction. Several processes may start at once: the advisory lock makes the others wait, and they
then find nothing left to apply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

from kit.component import Component
from kit.db import Connection

__all__ = ["Migration", "MigrationError", "applied", "apply", "discover", "pending"]

_LOCK_ID = 0x7065616B  # "peak"

_TABLE = """
CREATE TABLE IF NOT EXISTS peak_migrations (
    component text NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, name)
)
"""


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    component: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(components: Iterable[Component]) -> list[Migration]:
    found: list[Migration] = []
    for component in components:
        if component.migrations is None:
            continue
        folder = resources.files(component.migrations).joinpath("migrations")
        files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
        found.extend(Migration(component.name, f.name, f.read_text(encoding="utf-8")) for f in files)
    return found


async def applied(conn: Connection) -> dict[tuple[str, str], str]:
    exists = await conn.fetchval("SELECT to_regclass('peak_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT component, name, checksum FROM peak_migrations")
    return {(r["component"], r["name"]): r["checksum"] for r in rows}


async def pending(conn: Connection, migrations: Sequence[Migration]) -> list[Migration]:
    done = await applied(conn)
    return [m for m in migrations if (m.component, m.name) not in done]


async def apply(conn: Connection, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply what is missing and return it. Raises MigrationError if an applied file was edited since."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(_TABLE)
        done = await applied(conn)
        new: list[Migration] = []
        for m in migrations:
            checksum = done.get((m.component, m.name))
            if checksum is not None:
                if checksum != m.checksum:
                    raise MigrationError(
                        f"migration {m.component}/{m.name} was changed after it was applied; "
                        "add a new migration file instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO peak_migrations (component, name, checksum) VALUES ($1, $2, $3)",
                    m.component,
                    m.name,
                    m.checksum,
                )
            new.append(m)
        return new
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)

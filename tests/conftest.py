"""Real redis-server and PostgreSQL for the whole test session, on free ports in temporary folders.

Every test that asks for ``settings`` starts from a clean state: Redis flushed, every table emptied.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from peak import migrations
from peak.app import components, create_app
from peak.settings import Settings
from peak.stack import PostgresServer, RedisServer
from tests.support import lifespan_client

TEST_SECRET = "test-secret-key-0123456789abcdef"


@dataclass
class Servers:
    redis: RedisServer
    postgres: PostgresServer

    def env(self) -> dict[str, str]:
        return {
            "PEAK_REDIS_URL": self.redis.url,
            "PEAK_DATABASE_URL": self.postgres.url,
            "PEAK_SECRET_KEY": TEST_SECRET,
            # Cheap hashing keeps the suite fast; the default cost is tested on its own.
            "PEAK_SSO_ARGON2_MEMORY_KIB": "1024",
            "PEAK_SSO_ARGON2_TIME_COST": "1",
            "PEAK_ACCESS_LOG": "0",
        }


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("servers")
    redis_server = RedisServer(root / "redis")
    postgres = PostgresServer(root / "postgres", durable=False, say=lambda _: None)
    redis_server.start()
    try:
        postgres.start()
        asyncio.run(_migrate(postgres.url))
        yield Servers(redis_server, postgres)
    finally:
        postgres.stop()
        redis_server.stop()


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrations.apply(conn, migrations.discover(components()))
    finally:
        await conn.close()


def _clean(servers: Servers) -> None:
    client = redis.Redis.from_url(servers.redis.url)
    client.flushall()
    client.close()
    asyncio.run(_truncate(servers.postgres.url))


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'peak_migrations'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def make_settings(servers: Servers) -> Callable[..., Settings]:
    """Settings on the session's servers; keyword arguments are extra PEAK_* variables."""
    _clean(servers)

    def make(**env: str) -> Settings:
        return Settings.from_env({**servers.env(), **env})

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(settings)) as c:
        yield c


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: starts real processes (granian, peak up)")

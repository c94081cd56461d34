"""Real redis-server and PostgreSQL for the whole test session, on free ports in temporary folders.

Every test that asks for ``settings`` starts from a clean state: Redis flushed, every table emptied.
``PEAK_TEST_REDIS=cluster`` runs the session on a private three-master Redis Cluster instead of one
redis-server, so that any suite can be run on both: ``PEAK_TEST_REDIS=cluster pytest tests/sso``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from devstack.postgres import PostgresServer
from devstack.redis import RedisClusterServer, RedisServer
from kit import migrations
from kit.settings import Settings
from peak.app import components, create_app
from tests import hangs
from tests.support import lifespan_client

TEST_SECRET = "test-secret-key-0123456789abcdef"
TEST_REDIS = os.environ.get("PEAK_TEST_REDIS", "single")
if TEST_REDIS not in ("single", "cluster"):
    raise pytest.UsageError(f"PEAK_TEST_REDIS must be single or cluster, got {TEST_REDIS!r}")


@dataclass
class Servers:
    redis: RedisServer | RedisClusterServer
    postgres: PostgresServer

    @property
    def redis_nodes(self) -> list[str]:
        """A plain URL for each Redis primary now (one for a single server)."""
        if isinstance(self.redis, RedisClusterServer):
            return self.redis.node_urls
        return [self.redis.url]

    def env(self) -> dict[str, str]:
        return {
            "PEAK_REDIS_URL": self.redis.url,
            "PEAK_DATABASE_URL": self.postgres.url,
            "PEAK_SECRET_KEY": TEST_SECRET,
            # Cheap hashing keeps the suite fast; the default cost is tested on its own.
            "PEAK_SSO_ARGON2_MEMORY_KIB": "1024",
            "PEAK_SSO_ARGON2_TIME_COST": "1",
            "PEAK_ACCESS_LOG": "0",
            # Suites sign up hundreds of shoppers from one address; the sign-up limit has its own tests.
            "PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR": "0",
        }


def _outside_basetemp(prefix: str) -> Path:
    """A fresh folder for a PostgreSQL data directory, not under pytest's basetemp: another pytest run by the
    same user makes /tmp/pytest-of-<user> private again (mode 700), and the unprivileged user running
    PostgreSQL could no longer reach its data folder."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    """Where a test's own ``peak up`` keeps its private servers' data."""
    root = _outside_basetemp("peak-test-stack-")
    yield root / "stack"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    root = _outside_basetemp("peak-test-servers-")
    redis_server: RedisServer | RedisClusterServer
    if TEST_REDIS == "cluster":
        # One replica per primary, as in production: purchases wait for it (PEAK_SECKILL_DURABILITY=replica).
        redis_server = RedisClusterServer(root / "redis-cluster", 3, replicas=1, say=lambda _: None)
    else:
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
        shutil.rmtree(root, ignore_errors=True)


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrations.apply(conn, migrations.discover(components()))
    finally:
        await conn.close()


def clean(servers: Servers) -> None:
    """Every Redis node flushed, every table but the migrations' emptied."""
    for url in servers.redis_nodes:
        client = redis.Redis.from_url(url)
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
    clean(servers)

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
    hangs.install()


def pytest_report_header(config: Any) -> str:
    shown = "three-master Redis Cluster, one replica each" if TEST_REDIS == "cluster" else "one redis-server"
    return f"redis: {shown} (PEAK_TEST_REDIS)"

"""Scale-out fixtures: a three-master Redis Cluster (the session's own when PEAK_TEST_REDIS=cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from devstack.redis import RedisClusterServer
from kit.settings import Settings
from tests.conftest import Servers


@pytest.fixture(scope="session")
def cluster(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    if isinstance(servers.redis, RedisClusterServer):
        yield servers.redis
        return
    private = RedisClusterServer(tmp_path_factory.mktemp("scale") / "redis-cluster", 3, say=lambda _: None)
    private.start()
    try:
        yield private
    finally:
        private.stop()


def flush_cluster(cluster: RedisClusterServer) -> None:
    for url in cluster.node_urls:
        client = redis.Redis.from_url(url)
        client.flushall()
        client.script_flush()
        client.close()


@pytest.fixture
def cluster_settings(make_settings: Callable[..., Settings], cluster: RedisClusterServer) -> Settings:
    """Settings on the cluster (and the session's PostgreSQL), every node flushed and without scripts."""
    flush_cluster(cluster)
    return make_settings(PEAK_REDIS_URL=cluster.url)

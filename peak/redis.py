"""The Redis client: one pool per process, a single server or a Redis Cluster chosen by the URL."""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

__all__ = ["RedisClient", "create_pubsub_client", "create_redis", "is_cluster_url"]

RedisClient: TypeAlias = "Redis | RedisCluster"

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in _CLUSTER_SCHEMES


def _plain_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=_CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)))


def _retry() -> Retry:
    return Retry(
        ExponentialBackoff(cap=0.5, base=0.02), retries=3, supported_errors=(ConnectionError, TimeoutError)
    )


def create_redis(url: str, *, pool_size: int = 64, timeout_s: float = 5.0) -> RedisClient:
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
    }
    if is_cluster_url(url):
        return RedisCluster.from_url(_plain_url(url), max_connections=pool_size, retry=_retry(), **options)
    pool = BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=timeout_s, **options)
    return Redis(connection_pool=pool, retry=_retry())


def create_pubsub_client(url: str) -> Redis:
    """A plain connection for SUBSCRIBE. On a cluster any node hears every PUBLISH, so one node is enough."""
    return Redis.from_url(
        _plain_url(url), decode_responses=True, socket_connect_timeout=5.0, health_check_interval=10
    )

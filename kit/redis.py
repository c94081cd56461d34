"""The Redis client: one pool per process, a single server or a Redis Cluster chosen by the URL."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from kit.lane import RETRIES, Lane, retry_backoff
from kit.redis_private import needs_initialize, reset_safe, reset_safe_cluster

__all__ = [
    "LaneCluster",
    "LaneRedis",
    "PubSubSource",
    "RedisClient",
    "create_pubsub_client",
    "create_redis",
    "is_cluster_url",
    "online_replicas",
    "ping",
    "replicas",
    "replication_of",
]


class LaneRedis(Redis):
    """The single-server client: redis-py for commands, and a ``Lane`` beside it for Lua script calls."""

    def __init__(self, *, connection_pool: BlockingConnectionPool, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(connection_pool=connection_pool, **kwargs)
        self.lane = Lane(
            lambda: connection_pool.connection_class(**connection_pool.connection_kwargs),
            size=connection_pool.max_connections,
            timeout_s=timeout_s,
        )

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.lane.aclose()
        await super().aclose(close_connection_pool)


RedisClient: TypeAlias = "LaneRedis | LaneCluster"

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in _CLUSTER_SCHEMES


def _plain_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=_CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)))


def _retry() -> Retry:
    return Retry(retry_backoff(), retries=RETRIES, supported_errors=(ConnectionError, TimeoutError))


# Set while this task holds a permit, so that a call made inside another (a pipeline's redirected
# command) does not wait for a second one.
_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("peak_redis_permit", default=False)


class LaneCluster(RedisCluster):
    """The cluster client: redis-py's RedisCluster with a ``Lane`` per primary for Lua script calls, and
    callers that wait for a free connection, as the single server's BlockingConnectionPool.

    redis-py's cluster client raises MaxConnectionsError as soon as a node's pool is used up: a burst of
    requests would fail instead of queueing for a few milliseconds. Here at most ``pool_size`` commands (or
    pipelines, at most one connection per node each) are in flight per process, so no node's pool runs out,
    and a caller that finds no permit within ``timeout_s`` gets a ConnectionError, as on a single server.
    """

    def __init__(self, *args: Any, pool_size: int, wait_s: float, **kwargs: Any) -> None:
        # A few connections above the permits for what redis-py sends on its own (CLUSTER SLOTS on a refresh).
        kwargs["max_connections"] = pool_size + 8
        super().__init__(*args, **kwargs)
        self._permits = asyncio.Semaphore(pool_size)
        self._wait_s = wait_s
        self._pool_size = pool_size
        self._lanes: dict[str, Lane] = {}

    async def lanes_for(self, keys: Sequence[str]) -> list[Lane]:
        """The lane to the primary that owns each key's slot, as redis-py's slot map says."""
        if needs_initialize(self):
            await self.initialize()
        return [self._lane(self.nodes_manager.get_node_from_slot(self.keyslot(key))) for key in keys]

    def _lane(self, node: ClusterNode) -> Lane:
        lane = self._lanes.get(node.name)
        if lane is None:
            lane = self._lanes[node.name] = Lane(
                lambda: node.connection_class(**node.connection_kwargs),
                size=self._pool_size,
                timeout_s=self._wait_s,
            )
        return lane

    async def aclose(self) -> None:
        for lane in self._lanes.values():
            await lane.aclose()
        await super().aclose()

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        if _HOLDING.get():
            yield
            return
        try:
            async with asyncio.timeout(self._wait_s):
                await self._permits.acquire()
        except TimeoutError:
            raise ConnectionError(f"no free Redis connection within {self._wait_s:g} s") from None
        token = _HOLDING.set(True)
        try:
            yield
        finally:
            _HOLDING.reset(token)
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py's own error
        # mypy sees an abstract attribute that redis-py's own pipeline() leaves unset too.
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]


class _WaitingPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, LaneCluster)
        async with client.permit():
            return await super().execute(raise_on_error, allow_redirections)


def create_redis(url: str, *, pool_size: int = 64, timeout_s: float = 5.0) -> RedisClient:
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
    }
    if is_cluster_url(url):
        cluster = LaneCluster.from_url(
            _plain_url(url), pool_size=pool_size, wait_s=timeout_s, retry=_retry(), **options
        )
        assert isinstance(cluster, LaneCluster)
        reset_safe_cluster(cluster)
        return cluster
    pool = BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=timeout_s, **options)
    pool.connection_class = reset_safe(pool.connection_class)
    return LaneRedis(connection_pool=pool, timeout_s=timeout_s, retry=_retry())


def create_pubsub_client(url: str) -> Redis:
    """A plain connection for SUBSCRIBE; on a cluster, to the node the URL names.

    On a Redis Cluster a classic PUBLISH is forwarded over the cluster bus to every node, so a subscriber on
    any one node hears every message, whichever node it was published on (also from inside a Lua script).
    redis-py 8 also offers ``RedisCluster.pubsub()`` (a ``ClusterPubSub`` that picks a node by the
    channel's slot) and sharded pub/sub (SSUBSCRIBE/SPUBLISH, Redis 7), which keeps each message on its
    shard. Neither is needed: our channels carry a few control messages (revocations, switch flips, stock
    given back), where broadcasting costs nothing; and sharded publishing would have to be SPUBLISH
    everywhere, inside scripts on a channel in the script's slot. The plain connection is the same code on a
    single server and on a cluster. Listeners take their clients from a ``PubSubSource``, which moves to
    another node of the cluster after an error, so a node lost for good does not silence them.
    """
    return Redis.from_url(
        _plain_url(url), decode_responses=True, socket_connect_timeout=5.0, health_check_interval=10
    )


class PubSubSource:
    """Where a listener subscribes, kept across its reconnections.

    One server: its URL. A cluster: any node will do (a PUBLISH reaches every node, replicas included), the one
    the URL names first; on each subscription the source learns the cluster's nodes (CLUSTER NODES), and after a
    failure (``failed()``) the next client goes to the next of them. So a listener whose node is lost for good
    (a primary killed, its replica promoted) subscribes on another node at its next try instead of waiting for
    that one to come back."""

    def __init__(self, url: str) -> None:
        self._url = _plain_url(url)
        self._cluster = is_cluster_url(url)
        self._nodes: list[str] = []  # "host:port" of every node the cluster named, in its order
        self._at = 0

    @property
    def address(self) -> str:
        """The host:port the next client connects to."""
        if self._nodes:
            return self._nodes[self._at % len(self._nodes)]
        return urlsplit(self._url).netloc.rpartition("@")[2]

    def client(self) -> Redis:
        parts = urlsplit(self._url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{self.address}" if credentials else self.address
        return create_pubsub_client(urlunsplit(parts._replace(netloc=netloc)))

    async def learn(self, client: Redis) -> None:
        """Once subscribed through ``client``: remember the cluster's reachable nodes (nothing on one server)."""
        if not self._cluster:
            return
        with contextlib.suppress(RedisError):
            text = await client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
            nodes = _reachable_nodes(text)
            if nodes:
                current = self.address
                self._nodes = nodes
                self._at = nodes.index(current) if current in nodes else 0

    def failed(self) -> None:
        """The last client failed: the next one tries the next node."""
        self._at += 1


def _reachable_nodes(reply: Any) -> list[str]:
    """host:port of each node of a CLUSTER NODES reply (its text, or redis-py's parsed mapping) not marked failed."""
    if isinstance(reply, dict):
        entries = [(address, str(info.get("flags", ""))) for address, info in reply.items()]
    else:
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        entries = [(f[1], f[2]) for f in (line.split() for line in text.splitlines()) if len(f) > 2]
    return [
        address.partition("@")[0]
        for address, flags in entries
        if "fail" not in flags and "noaddr" not in flags and not address.startswith(":")
    ]


async def ping(client: RedisClient) -> None:
    """PING the server, or every primary of a cluster: one lost primary leaves part of the keyspace unserved."""
    if isinstance(client, RedisCluster):
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.ping()


async def replicas(client: RedisClient) -> int:
    """The replicas connected to the server, or the fewest any primary of a cluster has (INFO replication)."""
    if isinstance(client, RedisCluster):
        found = await client.info("replication", target_nodes=RedisCluster.PRIMARIES)
        infos = list(found.values()) if found and isinstance(next(iter(found.values())), dict) else [found]
        return min(int(info.get("connected_slaves", 0)) for info in infos)
    info = await client.info("replication")
    return int(info.get("connected_slaves", 0))


async def replication_of(client: RedisClient, key: str) -> dict[str, Any]:
    """INFO replication of the server (on a cluster: of the primary serving ``key``'s slot)."""
    if isinstance(client, LaneCluster):
        if needs_initialize(client):
            await client.initialize()
        node = client.get_node_from_key(key)
        found: dict[str, Any] = await client.info("replication", target_nodes=node)
        return found
    info: dict[str, Any] = await client.info("replication")
    return info


async def online_replicas(client: RedisClient, key: str) -> int:
    """Replicas in sync with the server (on a cluster: with the primary serving ``key``'s slot), by INFO
    replication: a replica that is merely slow still counts, a lost or resyncing one does not."""
    info = await replication_of(client, key)
    return sum(
        1 for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )  # fmt: skip

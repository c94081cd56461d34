"""The one place the kit touches redis-py's private attributes; supported: redis-py >=8.1,<9 (pyproject.toml).

The script lane (``kit/lane.py``) speaks on a connection's asyncio streams itself, which redis-py keeps in
``AbstractConnection._reader`` / ``._writer``; the cluster client's lanes (``kit/redis.py``) check
``RedisCluster._initialize`` before reading the slot map, as redis-py's own commands do. redis-py's table of
error replies (``BaseParser.EXCEPTION_CLASSES``) learns MISCONF, which it would raise as a bare ResponseError,
so that a server refusing writes for a failing disk is told apart from a bug (``WritesRefused``). A
connection's ``_send_packed_command`` is wrapped (``reset_safe``; a cluster's nodes get theirs through its
``NodesManager``) so that a write on a connection the server reset raises ConnectionError under uvloop too.
None of that is public API, so every name is checked when this module is imported: an upgrade that renames one
fails at start with the name, not with an AttributeError in the middle of a purchase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any, TypeVar, cast

from redis._parsers.base import BaseParser
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import NodesManager
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

__all__ = [
    "PRIVATE",
    "SUPPORTED",
    "UnsupportedRedis",
    "WritesRefused",
    "check",
    "needs_initialize",
    "reset_safe",
    "reset_safe_cluster",
    "streams",
]

SUPPORTED = "redis>=8.1,<9"

# (class, attribute) pairs this module reads.
PRIVATE: tuple[tuple[type, str], ...] = (
    (AbstractConnection, "_reader"),
    (AbstractConnection, "_writer"),
    (RedisCluster, "_initialize"),
    (BaseParser, "EXCEPTION_CLASSES"),
    (AbstractConnection, "_send_packed_command"),
    (NodesManager, "connection_kwargs"),
    (NodesManager, "startup_nodes"),
)


class UnsupportedRedis(ImportError):
    """The installed redis-py lacks a private attribute the kit relies on."""


def _defines(owner: type, attribute: str) -> bool:
    # A slot shows on the class; a plain instance attribute only as a name its __init__ stores.
    if hasattr(owner, attribute):
        return True
    init = getattr(getattr(owner, "__init__", None), "__code__", None)
    return init is not None and attribute in init.co_names


def check(pairs: Sequence[tuple[type, str]] = PRIVATE, *, version: str | None = None) -> None:
    """Raise UnsupportedRedis naming the first attribute of ``pairs`` the installed redis-py lacks."""
    for owner, attribute in pairs:
        if not _defines(owner, attribute):
            found = version or metadata.version("redis")
            raise UnsupportedRedis(
                f"redis-py {found} has no {owner.__module__}.{owner.__qualname__}.{attribute}, which "
                f"kit/redis_private.py relies on; supported: {SUPPORTED}. Install a supported redis-py or "
                "update kit/redis_private.py."
            )


check()


class WritesRefused(ResponseError):
    """MISCONF: Redis refuses writes because it cannot persist them (an AOF write or fsync failed, or the last
    RDB save did with stop-writes-on-bgsave-error); it takes them again by itself once its disk does."""


BaseParser.EXCEPTION_CLASSES.setdefault("MISCONF", WritesRefused)


def streams(conn: AbstractConnection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The streams of a connection redis-py has just connected; the caller owns the connection from here on
    and never hands it back to redis-py."""
    reader, writer = conn._reader, conn._writer
    assert reader is not None and writer is not None
    return reader, writer


def needs_initialize(cluster: RedisCluster) -> bool:
    """Whether the cluster client must (re)load its slot map before one is read from it."""
    return cluster._initialize


_RESET_SAFE: dict[type[AbstractConnection], type[AbstractConnection]] = {}
_C = TypeVar("_C", bound=AbstractConnection)


def reset_safe(cls: type[_C]) -> type[_C]:
    """``cls`` whose writes on a connection the server has reset raise ConnectionError, as on asyncio's loop.

    uvloop (granian's loop) raises RuntimeError ("unable to perform operation on <TCPTransport closed=True>;
    the handler is closed") for a write on a transport it closed after a reset, say in the middle of the
    handshake of a new connection; redis-py passes that on as it is: a 500 for the request instead of a retried
    call (found by `peak drill`'s slow_network scenario). As an OSError, redis-py disconnects and raises its
    ConnectionError, which its Retry and the lanes try again."""
    if cls in _RESET_SAFE.values():
        return cls
    known = _RESET_SAFE.get(cls)
    if known is None:

        async def _send_packed_command(self: AbstractConnection, command: Iterable[bytes]) -> None:
            try:
                await cls._send_packed_command(self, command)
            except RuntimeError as exc:
                writer: Any = self._writer
                if writer is not None and not writer.transport.is_closing():
                    raise
                raise ConnectionResetError(f"the connection was reset: {exc}") from exc

        known = _RESET_SAFE[cls] = type(
            f"ResetSafe{cls.__name__}", (cls,), {"_send_packed_command": _send_packed_command}
        )
    return cast("type[_C]", known)


def reset_safe_cluster(cluster: RedisCluster) -> None:
    """``reset_safe`` connections for every node of a cluster client, those it knows and those it finds later
    (each node is made from the nodes manager's connection arguments)."""
    manager = cluster.nodes_manager
    manager.connection_kwargs["connection_class"] = reset_safe(manager.connection_kwargs["connection_class"])
    for node in manager.startup_nodes.values():
        node.connection_class = reset_safe(node.connection_class)

"""The one place the kit touches redis-py's private attributes; supported: redis-py >=8.1,<9 (pyproject.toml).

The script lane (``kit/lane.py``) speaks on a connection's asyncio streams itself, which redis-py keeps in
``AbstractConnection._reader`` / ``._writer``; the cluster client's lanes (``kit/redis.py``) check
``RedisCluster._initialize`` before reading the slot map, as redis-py's own commands do. None of that is public
API, so every name is checked when this module is imported: an upgrade that renames one fails at start with
the name, not with an AttributeError in the middle of a purchase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import metadata

from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection

__all__ = ["PRIVATE", "SUPPORTED", "UnsupportedRedis", "check", "needs_initialize", "streams"]

SUPPORTED = "redis>=8.1,<9"

# (class, attribute) pairs this module reads.
PRIVATE: tuple[tuple[type, str], ...] = (
    (AbstractConnection, "_reader"),
    (AbstractConnection, "_writer"),
    (RedisCluster, "_initialize"),
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


def streams(conn: AbstractConnection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The streams of a connection redis-py has just connected; the caller owns the connection from here on
    and never hands it back to redis-py."""
    reader, writer = conn._reader, conn._writer
    assert reader is not None and writer is not None
    return reader, writer


def needs_initialize(cluster: RedisCluster) -> bool:
    """Whether the cluster client must (re)load its slot map before one is read from it."""
    return cluster._initialize

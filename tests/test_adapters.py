"""The adapters to private library API (``kit/redis_private.py``, ``kit/starlette_private.py``): every name they
rely on is still there in the installed library and does what they use it for, and a library without one is
refused at import with an error naming it and the supported range."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import pytest
import redis.asyncio
import redis.asyncio.connection
import starlette._utils

from kit import redis_private, starlette_private
from kit.redis import LaneCluster, create_redis, is_cluster_url
from kit.settings import Settings


def _import_afresh(name: str) -> ModuleType:
    """Run a module's code again in a new module object (``sys.modules`` keeps the one everyone uses)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("owner", "attribute"), redis_private.PRIVATE, ids=[f"{o.__name__}.{a}" for o, a in redis_private.PRIVATE]
)
def test_redis_py_still_has_each_private_attribute(owner: type, attribute: str) -> None:
    redis_private.check([(owner, attribute)])


@pytest.mark.parametrize(
    ("module", "attribute"), starlette_private.PRIVATE, ids=[f"{m}.{a}" for m, a in starlette_private.PRIVATE]
)
def test_starlette_still_has_each_private_name(module: str, attribute: str) -> None:
    assert callable(starlette_private.lookup(module, attribute))


async def test_the_streams_are_those_of_the_connected_connection(settings: Settings) -> None:
    url = settings.require("redis_url")
    plain = re.sub(r"^(rediss?)\+cluster://", r"\1://", url)
    pool = redis.asyncio.ConnectionPool.from_url(plain)
    # Made as the lane makes its connections (kit/redis.py).
    conn = pool.connection_class(**pool.connection_kwargs)
    await conn.connect()  # type: ignore[no-untyped-call]
    try:
        reader, writer = redis_private.streams(conn)
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        assert await reader.readline() == b"+PONG\r\n"
    finally:
        await conn.disconnect()


async def test_a_cluster_client_needs_initializing_until_it_has_read_the_slot_map(settings: Settings) -> None:
    url = settings.require("redis_url")
    if not is_cluster_url(url):
        # No cluster to read a slot map from: a client that never connected has not read one.
        unused = redis.asyncio.RedisCluster(host="127.0.0.1", port=1)
        assert redis_private.needs_initialize(unused)
        await unused.aclose()
        return
    client = create_redis(url)
    assert isinstance(client, LaneCluster)
    try:
        assert redis_private.needs_initialize(client)
        await client.lanes_for(["k"])
        assert not redis_private.needs_initialize(client)
    finally:
        await client.aclose()


def test_the_route_path_leaves_out_the_mount_prefix() -> None:
    # The segment router relies on this: a mounted app's routes match on the path below its root_path.
    get_route_path = starlette_private.get_route_path
    assert get_route_path({"path": "/api/seckill/events", "root_path": "/api"}) == "/seckill/events"
    assert get_route_path({"path": "/seckill/events", "root_path": ""}) == "/seckill/events"


def test_a_missing_redis_attribute_is_named_with_the_supported_range() -> None:
    class Connection:
        def __init__(self) -> None:
            self._reader = None

    redis_private.check([(Connection, "_reader")])
    with pytest.raises(
        redis_private.UnsupportedRedis, match=r"^redis-py 9\.0\.0 has no .*\.Connection\._writer, "
    ) as refused:
        redis_private.check([(Connection, "_reader"), (Connection, "_writer")], version="9.0.0")
    assert "supported: redis>=8.1,<9" in str(refused.value)


def test_redis_py_without_the_streams_is_refused_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    class AbstractConnection:
        def __init__(self) -> None:
            self._stream_reader = None

    monkeypatch.setattr(redis.asyncio.connection, "AbstractConnection", AbstractConnection)
    # Run afresh, the module defines its exception class afresh too: it is known by name.
    with pytest.raises(ImportError, match=r"AbstractConnection\._reader, which") as refused:
        _import_afresh("kit.redis_private")
    assert type(refused.value).__name__ == "UnsupportedRedis"


def test_redis_py_without_the_initialize_flag_is_refused_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    class RedisCluster:
        def __init__(self) -> None:
            self._initialized = False

    monkeypatch.setattr(redis.asyncio, "RedisCluster", RedisCluster)
    with pytest.raises(ImportError, match=r"RedisCluster\._initialize, which") as refused:
        _import_afresh("kit.redis_private")
    assert type(refused.value).__name__ == "UnsupportedRedis"
    assert "supported: redis>=8.1,<9" in str(refused.value)


def test_starlette_without_get_route_path_is_refused_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(starlette._utils, "get_route_path")
    with pytest.raises(ImportError) as refused:
        _import_afresh("kit.starlette_private")
    assert type(refused.value).__name__ == "UnsupportedStarlette"
    assert "has no starlette._utils.get_route_path, which" in str(refused.value)
    assert "supported: starlette>=1.0,<2" in str(refused.value)


def test_a_missing_starlette_module_is_named_with_the_supported_range() -> None:
    with pytest.raises(
        starlette_private.UnsupportedStarlette, match=r"Starlette 2\.0 has no starlette\._gone\.f, "
    ):
        starlette_private.lookup("starlette._gone", "f", version="2.0")

"""The kit on a three-master Redis Cluster: scripts, NOSCRIPT on one node, pub/sub across nodes, readiness."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from devstack.redis import RedisClusterServer
from kit.lua import Script, load_scripts
from kit.reads import read_many
from kit.redis import LaneCluster, create_pubsub_client, create_redis
from kit.settings import Settings
from peak.app import components, create_app
from tests.conftest import Servers
from tests.support import lifespan_client


@pytest.fixture
async def cluster_client(cluster_settings: Settings) -> AsyncIterator[LaneCluster]:
    client = create_redis(cluster_settings.require("redis_url"))
    assert isinstance(client, LaneCluster)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


def _tags_per_node(client: LaneCluster) -> dict[str, str]:
    """A hash tag owned by each primary (node name -> tag)."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < len(client.get_primaries()):
        tag = f"{{t{i}}}"
        node = client.get_node_from_key(tag)
        assert node is not None
        found.setdefault(node.name, tag)
        i += 1
    return found


async def test_packaged_scripts_load_on_every_primary(
    cluster_client: LaneCluster, cluster: RedisClusterServer
) -> None:
    scripts = [script for part in components() for script in part.scripts]
    await load_scripts(cluster_client, scripts)
    shas = [script.sha for script in scripts]
    for url in cluster.node_urls:
        node = redis.Redis.from_url(url)
        assert node.script_exists(*shas) == [True] * len(shas), url
        node.close()


async def test_noscript_on_one_node_is_recovered_under_concurrency(
    cluster_client: LaneCluster, cluster: RedisClusterServer
) -> None:
    script = Script("incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await load_scripts(cluster_client, [script])
    tags = _tags_per_node(cluster_client)
    victim_name = next(iter(tags))
    host, port = victim_name.rsplit(":", 1)
    victim = redis.Redis(host=host, port=int(port))
    victim.script_flush()  # that node lost its scripts (a restart without persistence of the cache)
    assert victim.script_exists(script.sha) == [False]

    async def flusher() -> None:
        for _ in range(5):
            await asyncio.sleep(0.005)
            victim.script_flush()

    calls = [script(cluster_client, [f"{tag}n"], [1]) for tag in tags.values() for _ in range(100)]
    results, _ = await asyncio.gather(asyncio.gather(*calls), flusher())
    assert sorted(results) == sorted(list(range(1, 101)) * len(tags))  # every call ran exactly once
    for tag in tags.values():
        assert await cluster_client.get(f"{tag}n") == "100"
    victim.close()
    for url in cluster.node_urls:
        if f":{port}/" not in url:
            other = redis.Redis.from_url(url)
            assert other.script_exists(script.sha) == [True], (
                "a NOSCRIPT on one node must not touch the others"
            )
            other.close()


async def test_publish_through_the_cluster_is_heard_on_another_node(cluster_client: LaneCluster) -> None:
    channel = "peak:scale:probe"
    owner = cluster_client.get_node_from_key(channel)
    assert owner is not None
    others = [n for n in cluster_client.get_primaries() if n.name != owner.name]
    listener = create_pubsub_client(f"redis+cluster://{others[0].host}:{others[0].port}")
    try:
        async with listener.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(channel)
            await pubsub.get_message(timeout=0.5)
            # A plain PUBLISH goes to the channel's slot owner; a PUBLISH inside a script to the keys' node.
            await cluster_client.publish(channel, "direct")
            far_tag = next(
                tag for name, tag in _tags_per_node(cluster_client).items() if name != others[0].name
            )
            await cluster_client.eval(
                "return redis.call('PUBLISH', ARGV[1], 'from-lua')", 1, f"{far_tag}k", channel
            )
            heard = []
            for _ in range(40):
                message = await pubsub.get_message(timeout=0.1)
                if message is not None:
                    heard.append(message["data"])
                if len(heard) == 2:
                    break
            assert heard == ["direct", "from-lua"]
    finally:
        await listener.aclose()


async def test_readiness_pings_every_primary(
    servers: Servers, cluster_settings: Settings, tmp_path: Path
) -> None:
    async with lifespan_client(create_app(cluster_settings)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"] == "ok"
    # A private cluster that loses one primary: part of the keyspace is gone, so not ready; back when it is.
    private = RedisClusterServer(tmp_path / "cluster", 3, say=lambda _: None)
    private.start()
    try:
        settings = Settings.from_env({**servers.env(), "PEAK_REDIS_URL": private.url})
        async with lifespan_client(create_app(settings)) as client:
            assert (await client.get("/readyz")).status_code == 200
            lost = private.nodes[-1]
            assert lost.proc is not None
            lost.proc.send_signal(signal.SIGKILL)
            lost.proc.wait(10)
            lost.proc = None
            answer = await client.get("/readyz")
            assert answer.status_code == 503, answer.text
            assert answer.json()["checks"]["redis"] != "ok"
            lost.start()
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        private.stop()


async def test_a_call_sent_to_the_wrong_node_follows_the_redirection(cluster_client: LaneCluster) -> None:
    """A stale slot map (a resharding the client has not heard of) sends the lane to a node that answers
    MOVED: the call is run where the slot lives, once, and the map is put right for the next calls."""
    script = Script("incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    tags = _tags_per_node(cluster_client)
    (owner_name, tag), (stranger_name, _) = list(tags.items())[:2]
    slot = cluster_client.keyslot(f"{tag}n")
    manager = cluster_client.nodes_manager
    stranger = manager.get_node(node_name=stranger_name)
    assert stranger is not None
    manager.slots_cache[slot] = [stranger]
    first = await script.run_many(cluster_client, [([f"{tag}n"], [1]), ([f"{tag}n"], [10])])
    assert first == [1, 11]
    assert await script(cluster_client, [f"{tag}n"], [100]) == 111
    assert manager.get_node_from_slot(slot).name == owner_name
    assert await cluster_client.get(f"{tag}n") == "111"


async def test_plain_reads_sent_to_the_wrong_node_follow_the_redirection(cluster_client: LaneCluster) -> None:
    """kit.reads, as the strict check uses it between touches: a stale slot map sends the reads to a node that
    answers MOVED; they are asked again through redis-py where the slot lives, with the others of the batch
    answered by their own nodes."""
    tags = _tags_per_node(cluster_client)
    (_, tag), (stranger_name, other_tag) = list(tags.items())[:2]
    await cluster_client.hset(f"{tag}h", mapping={"a": "1", "b": "2"})
    await cluster_client.set(f"{other_tag}k", "v")
    manager = cluster_client.nodes_manager
    stranger = manager.get_node(node_name=stranger_name)
    assert stranger is not None
    manager.slots_cache[cluster_client.keyslot(f"{tag}h")] = [stranger]
    answers = await read_many(
        cluster_client,
        [(("EXISTS", f"{tag}none"), ("HMGET", f"{tag}h", "a", "b", "c")), (("GET", f"{other_tag}k"),)],
    )
    assert answers == [[0, ["1", "2", None]], ["v"]]

"""A pub/sub listener on a Redis Cluster survives the loss of its node for good (kit.redis.PubSubSource)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pytest

from devstack.redis import RedisClusterServer
from kit.redis import PubSubSource, create_redis
from kit.tasks import cancel_loops
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.skipif(
    TEST_REDIS == "cluster", reason="a private cluster of its own: once is enough"
)


async def _listen(source: PubSubSource, channel: str, heard: list[str], subscribed: asyncio.Event) -> None:
    """A listener as seckill's news, SSO's revocations and degrade's switches run it."""
    while True:
        client = source.client()
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                await source.learn(client)
                subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=0.1)
                    if message is not None:
                        heard.append(str(message["data"]))
        except asyncio.CancelledError:
            raise
        except Exception:
            subscribed.clear()
            source.failed()
            await asyncio.sleep(0.1)
        finally:
            await client.aclose()


async def test_a_listener_whose_node_is_killed_subscribes_on_another_and_hears_what_follows(
    tmp_path: Path,
) -> None:
    cluster = RedisClusterServer(
        tmp_path / "cluster", 3, replicas=1, node_timeout_ms=1000, say=lambda _: None
    )
    cluster.start()
    try:
        seed = cluster.ports[0]
        source = PubSubSource(f"redis+cluster://127.0.0.1:{seed}")
        heard: list[str] = []
        subscribed = asyncio.Event()
        listener = asyncio.create_task(_listen(source, "peak:probe", heard, subscribed))
        publisher = create_redis(f"redis+cluster://127.0.0.1:{cluster.ports[1]}")
        try:
            await asyncio.wait_for(subscribed.wait(), 10)
            assert source.address == f"127.0.0.1:{seed}"
            await publisher.publish("peak:probe", "before")
            for _ in range(50):
                if heard:
                    break
                await asyncio.sleep(0.05)
            assert heard == ["before"]
            node = cluster.node_on(seed)
            assert node.proc is not None
            node.proc.send_signal(signal.SIGKILL)  # for good: it never comes back in this test
            node.proc.wait(10)
            node.proc = None
            await asyncio.sleep(0.3)
            await asyncio.wait_for(subscribed.wait(), 20)
            assert source.address != f"127.0.0.1:{seed}"
            # Published until heard: the cluster may still be promoting the dead primary's replica.
            for attempt in range(100):
                with contextlib.suppress(Exception):  # the publisher's own failover: it tries again
                    await publisher.publish("peak:probe", f"after-{attempt}")
                await asyncio.sleep(0.1)
                if any(h.startswith("after-") for h in heard):
                    break
            assert any(h.startswith("after-") for h in heard), heard
        finally:
            await cancel_loops([listener])  # a blocked read may swallow a single cancel
            await publisher.aclose()
    finally:
        cluster.stop()

"""An API process SIGKILLed while a coalesced reservation call is in flight (issue 17): Redis ran the batch, the
process died before its reply came back, and its shoppers saw only a broken connection. Each retries with the
same Idempotency-Key on another API process and gets the very order the dead process made (a replay), or a
new one if its purchase never left; no reservation is left without its order, none is made twice.

The dying process reaches Redis through a slow TCP proxy (loadtest/faultproxy.py, 0.6 s each way), which holds
the batch's reply long enough to kill the process after Redis ran the call and before the reply arrives.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.processes import free_port
from loadtest.faultproxy import FaultProxy
from peak.app import create_app
from seckill import keys
from tests.conftest import TEST_REDIS, Servers
from tests.seckill.conftest import (
    SALE_ENV,
    MakeSettings,
    assert_balanced,
    drain,
    http_event,
    order_rows,
    seckill_context,
    shoppers,
)
from tests.support import kill_group, lifespan_client, start_peak, wait_http

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TEST_REDIS == "cluster", reason="the proxy stands in front of one redis-server"),
]

SHOPPERS = 120


def _api(servers: Servers, tmp_path: Path, name: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = start_peak(
        "serve", env={**servers.env(), **SALE_ENV, "PEAK_PORT": str(port), "PEAK_WORKERS": "1", **env},
        log=tmp_path / f"{name}.log",
    )  # fmt: skip
    return f"http://127.0.0.1:{port}", proc


async def test_shoppers_of_a_batch_cut_off_by_a_sigkill_get_the_same_order_from_another_process(
    servers: Servers, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(**SALE_ENV)
    port = int(servers.redis.url.rsplit(":", 1)[1].split("/")[0])
    async with FaultProxy("127.0.0.1", port) as proxy:
        dying_url, dying = _api(servers, tmp_path, "dying", PEAK_REDIS_URL=proxy.url())
        other_url, other = _api(servers, tmp_path, "other")
        try:
            async with lifespan_client(create_app(settings)) as shop:
                users = await shoppers(shop, SHOPPERS)
                event_id = await http_event(shop, stock=SHOPPERS * 2, per_user_limit=3)
            await asyncio.gather(
                asyncio.to_thread(wait_http, f"{dying_url}/readyz"),
                asyncio.to_thread(wait_http, f"{other_url}/readyz"),
            )
            async with seckill_context(settings) as ctx, httpx.AsyncClient(timeout=30) as http:
                stream = keys.event_keys(event_id).stream
                buy = f"/seckill/events/{event_id}/orders"
                # The process learns the event (its buckets) with a purchase of its own first.
                warm = await http.post(dying_url + buy, headers={**users[0], "Idempotency-Key": "k0"})
                assert warm.status_code == 202, warm.text
                proxy.latency_s = 0.6
                # One purchase in flight holds the event's coalescer (one call at a time per event): the others
                # arrive meanwhile and leave together as one batch when its reply is back.
                holder = asyncio.ensure_future(
                    http.post(dying_url + buy, headers={**users[1], "Idempotency-Key": "k1"})
                )
                await asyncio.sleep(0.3)
                cut_off = [
                    asyncio.ensure_future(http.post(dying_url + buy, headers={**u, "Idempotency-Key": f"k{i}"}))
                    for i, u in enumerate(users) if i > 1
                ]  # fmt: skip
                assert (await holder).status_code == 202
                # Redis ran the batch (its entries are on the stream): its reply is still in the proxy.
                deadline = time.monotonic() + 10
                while await ctx.redis.xlen(stream) < 3:
                    assert time.monotonic() < deadline, "the batch never reached Redis"
                    await asyncio.sleep(0.01)
                kill_group(dying, signal.SIGKILL)
                outcomes = await asyncio.gather(*cut_off, return_exceptions=True)
                assert all(isinstance(o, httpx.TransportError) for o in outcomes), outcomes
                entries: Any = await ctx.redis.xrange(stream)
                made_by_dead = {f["u"]: f["o"] for _, f in entries[2:]}
                assert len(made_by_dead) > SHOPPERS // 2, len(made_by_dead)
                # Every shopper tries again with its key, on the other process.
                retries = await asyncio.gather(
                    *(
                        http.post(other_url + buy, headers={**u, "Idempotency-Key": f"k{i}"})
                        for i, u in enumerate(users)
                    )
                )
                assert all(r.status_code == 202 for r in retries), Counter(r.status_code for r in retries)
                replayed = sum(r.json()["replayed"] for r in retries)
                print(f"{len(made_by_dead)} reservations of the killed batch; {replayed} replays on retry")
                await drain(ctx, event_id)
                rows = await order_rows(ctx, event_id)
                by_user = {row["user_id"]: str(row["order_id"]) for row in rows}
                assert len(rows) == len(by_user) == SHOPPERS  # one order per shopper's key, none twice
                # The orders the dead process made are the ones its shoppers were given on the retry.
                assert all(by_user[u] == o for u, o in made_by_dead.items())
                assert sorted(r.json()["order_id"] for r in retries) == sorted(by_user.values())
                assert replayed == len(made_by_dead) + 2  # the killed batch, and k0 and k1 answered before
                await assert_balanced(ctx, event_id)
        finally:
            kill_group(dying, signal.SIGKILL)
            kill_group(other, signal.SIGTERM)

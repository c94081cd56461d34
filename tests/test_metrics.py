"""/metrics: per-event gauges read from Redis at the scrape, shed answers, orders written, the Grafana dashboard."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

import seckill.component
from kit.component import Component
from kit.context import open_context
from kit.metrics import FleetGauge
from kit.settings import Settings
from peak.app import components, create_app
from seckill import keys, scripts
from seckill.worker import OrderWriter
from tests.seckill.conftest import ADMIN, SALE_ENV, http_event, shoppers
from tests.support import REPO, lifespan_client

DASHBOARD = REPO / "deploy" / "grafana" / "peak.json"


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> labels -> value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def expressions(dashboard: Path) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(orjson.loads(dashboard.read_bytes()))
    return found


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    d = orjson.loads(DASHBOARD.read_bytes())
    assert d["schemaVersion"] >= 36 and d["title"] and d["uid"]
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    assert {v["name"] for v in d["templating"]["list"]} >= {"job", "event"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for panel in d["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for needed in ("requests", "p99", "shed", "purchases", "orders written", "queue depth", "dead letters"):
        assert needed in titles


async def test_gauges_follow_a_purchase_and_a_dead_letter_and_the_dashboard_finds_every_metric(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**SALE_ENV)
    async with lifespan_client(create_app(settings)) as client:
        event_id = await http_event(client, stock=10)
        old = await http_event(
            client, stock=3, starts_at="2020-01-01T00:00:00Z", ends_at="2020-01-02T00:00:00Z"
        )
        buyers = await shoppers(client, 2, prefix="gauges")
        for headers in buyers:
            bought = await client.post(f"/seckill/events/{event_id}/orders", headers=headers)
            assert bought.status_code == 202, bought.text
        # One order dead-lettered, the other written, as the order writers would.
        async with open_context(
            settings, [seckill.component.component()], "cli", start_services=False
        ) as ctx:
            k = keys.event_keys(event_id)
            first: Any = await ctx.redis.xreadgroup(keys.GROUP, "test", {k.stream: ">"}, count=1)
            entry_id = str(first[0][1][0][0])
            assert await scripts.dead_letter(ctx.redis, k, entry_id, "chosen by the test", 1)
            assert await OrderWriter(ctx).step(event_id) == 1
        # A shed answer, so the shed counter has its labelled series.
        shed = await client.put(
            "/degrade/switches/reviews", json={"mode": "shed", "reason": "metrics test"}, headers=ADMIN
        )
        assert shed.status_code == 200, shed.text
        assert (await client.get("/reviews/SKU-1")).headers.get("x-degraded") == "reviews"

        # A crowd scraping at once: every scrape answers, and they share one refresh.
        scrapes = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
        assert {r.status_code for r in scrapes} == {200}
        text = scrapes[0].text
        got = samples(text)
        ev = (("event", str(event_id)),)
        assert got["peak_seckill_stock_left"][ev] == 8
        assert got["peak_seckill_queue_depth"][ev] == 0
        assert got["peak_seckill_dead_letters"][ev] == 1
        assert got["peak_seckill_reservations_total"][ev] == 2
        # An event that ended long ago is no series.
        assert (("event", str(old)),) not in got["peak_seckill_stock_left"]
        assert got["peak_degrade_shed_total"][(("subsystem", "reviews"),)] >= 1
        assert got["peak_seckill_orders_written_total"][()] >= 1
        purchases = got["peak_requests_total"]
        route = ("route", "/seckill/events/{event_id}/orders")
        assert purchases[(("method", "POST"), route, ("status", "202"))] >= 2

        # Every metric the dashboard's PromQL names is exported by this running app.
        exported = set(got)
        used = {name for expr in expressions(DASHBOARD) for name in re.findall(r"\b(peak_[a-z0-9_]+)", expr)}
        assert used and used <= exported, used - exported


async def test_a_failing_refresher_leaves_its_gauges_out_and_the_scrape_answers(
    make_settings: Callable[..., Settings],
) -> None:
    gauge = FleetGauge("peak_test_fleet_figure", "a test figure", ["k"])
    calls: list[str] = []

    async def good(ctx: object) -> None:
        calls.append("good")
        gauge.replace({("a",): 1.0})

    async def broken(ctx: object) -> None:
        calls.append("broken")
        raise ConnectionError("store gone")

    async def slow(ctx: object) -> None:
        await asyncio.sleep(30)

    extra = Component(name="gaugetest", gauges=[good, broken, slow])
    async with lifespan_client(create_app(make_settings(), [*components(), extra])) as client:
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert 'peak_test_fleet_figure{k="a"} 1.0' in scrape.text
        # Within the refresh interval: no second run.
        assert (await client.get("/metrics")).status_code == 200
        assert calls == ["good", "broken"]
        gauge.clear()
        assert "peak_test_fleet_figure{" not in (await client.get("/metrics")).text

"""A Redis Cluster primary SIGKILLed in the middle of a sale (real `peak serve` and `peak worker` processes, a
private cluster with one replica per primary): the replica is promoted, the event is re-derived from PostgreSQL
before it sells again, purchases succeed again within 10 s, nothing is oversold, no user goes over the limit,
reconcile is clean; with durability `replica` every 202 is an order. The same sale with `local` measures what
is lost (`lost`), with the same invariants otherwise. Both on one cluster: the killed node comes back as a
replica in between."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.drill.primary_loss import run_once, start_cluster
from loadtest.drill.stack import Stack


def _report(result: object) -> str:
    invariants = getattr(result, "invariants", [])
    return "\n".join(f"{'PASS' if i.ok else 'FAIL'} {i.name}: {i.detail}" for i in invariants)


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("primary-loss*.log"))
    )


@pytest.mark.slow
async def test_a_primary_killed_mid_sale_loses_no_acknowledged_order_and_oversells_nothing(
    stack_dir: Path,
) -> None:
    stack = Stack(stack_dir, say=lambda _: None)
    stack.start()
    cluster = start_cluster(stack)
    try:
        durable = await run_once(stack, cluster, "replica", say=lambda _: None)
        assert durable.passed, f"{_report(durable)}\n{durable.figures}\n{_logs(stack_dir)}"
        assert durable.figures["lost"] == 0 and durable.figures["oversold"] == 0
        local = await run_once(stack, cluster, "local", say=lambda _: None)
        assert local.passed, f"{_report(local)}\n{local.figures}\n{_logs(stack_dir)}"
        assert local.figures["oversold"] == 0 and local.figures["duplicated"] == 0
        print("replica:", durable.figures)
        print("local:", local.figures)
    finally:
        cluster.stop()
        stack.stop()

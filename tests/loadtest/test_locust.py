"""`peak loadtest`'s verdict counts every failure of the scenario, and the Double11 shape runs every phase of the
sale (countdown with 304s, tickets, purchases, long-polled orders, keep-alive refreshes, local validations)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.processes import free_port
from loadtest.run import PHASES, Outcome, verdict
from tests.conftest import Servers
from tests.support import kill_group, run_peak, start_peak, wait_http


@contextlib.contextmanager
def _stack(servers: Servers, folder: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real API server and order worker on the suite's Redis and PostgreSQL; (URL, environment)."""
    port = free_port()
    env = {
        **servers.env(),
        "PEAK_PORT": str(port),
        "PEAK_WORKERS": "1",
        "PEAK_ADMIN_TOKEN": "loadtest-admin-token",
        "PEAK_PAYMENT_SECRET": "loadtest-payment-secret-0123456789",
        "PEAK_DATA_DIR": str(folder),
    }
    api = start_peak("serve", env=env, log=folder / "api.log")
    worker = start_peak("worker", env=env, log=folder / "worker.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}", env
    finally:
        kill_group(api, 15)
        kill_group(worker, 15)


def _loadtest(url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_peak("loadtest", "--url", url, *args, env=env, timeout_s=600)


@pytest.mark.slow
def test_forty_shoppers_through_the_whole_sale_pass_every_check(servers: Servers, tmp_path: Path) -> None:
    """Enough users that several Subsystem users validate at once (they used to collide on event loops)."""
    with _stack(servers, tmp_path) as (url, env):
        result = _loadtest(url, env, "--users", "40", "--duration", "12", "--spawn-rate", "40")
    out = result.stdout
    assert result.returncode == 0, out[-5000:] + result.stderr[-3000:]
    for check in ("no event oversold", "every reservation became exactly one order", "reconcile is clean",
                  "no failure of any kind", "every phase of the sale ran"):  # fmt: skip
        assert f"PASS  {check}" in out, out[-5000:]
    assert "Cannot run the event loop" not in out + result.stderr
    assert "was never awaited" not in result.stderr


@pytest.mark.slow
def test_failed_local_validations_make_the_verdict_fail(servers: Servers, tmp_path: Path) -> None:
    """The scenario's own failures count: a subsystem expecting another audience refuses every token."""
    with _stack(servers, tmp_path) as (url, env):
        result = _loadtest(url, {**env, "PEAK_SSO_AUDIENCE": "another-audience"}, "--smoke")
    out = result.stdout
    assert result.returncode == 1, out[-4000:]
    assert "FAIL  no failure of any kind" in out
    assert "LOCAL TokenValidator.validate" in out  # the kind, listed with its count
    assert "PASS  no event oversold" in out  # the other checks still report
    assert out.rstrip().endswith("FAIL")


def _csv(path: Path, header: str, *rows: str) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def test_exceptions_unexpected_statuses_and_missing_phases_all_count(tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    names = [*PHASES.values(), "Aggregated"]
    _csv(Path(f"{prefix}_stats.csv"), "Type,Name,Request Count,Failure Count",
         *(f"GET,{n},{10 if n != '/seckill/events/{id}/ticket' else 0},0" for n in names))  # fmt: skip
    _csv(Path(f"{prefix}_failures.csv"), "Method,Name,Error,Occurrences",
         "POST,/seckill/events/{id}/orders,\"CatchResponseError('unexpected 403: ticket_invalid')\",3",
         "GET,/healthz,\"CatchResponseError('server error 0')\",1")  # fmt: skip
    _csv(Path(f"{prefix}_exceptions.csv"), "Count,Message,Traceback,Nodes", "2,KeyError('status'),tb,local")
    outcome = Outcome(prefix)
    assert (outcome.failures, outcome.exceptions, outcome.server_errors) == (4, 2, 1)
    assert outcome.by_name["/seckill/events/{id}/ticket"] == 0
    kinds = list(outcome.kinds())
    assert any("unexpected 403" in k and k.lstrip().startswith("3") for k in kinds)
    assert any("exception: KeyError('status')" in k for k in kinds)
    said: list[str] = []
    stats = {"stock_total": 10, "stock_left": 0, "queued": 0, "orders_pending_payment": 4, "orders_paid": 6,
             "orders_cancelled": 0, "dead_letters": 0}  # fmt: skip
    clean = subprocess.CompletedProcess(args=[], returncode=0, stdout="no drift")
    assert verdict(outcome, stats, clean, said.append) == 1
    assert (
        "FAIL  no failure of any kind: 4 failed requests or validations, 2 exceptions in the scenarios"
        in said
    )
    assert "FAIL  no 5xx but intentional `degraded`: 1 server errors in 10 requests" in said
    assert any(line.startswith("FAIL  every phase of the sale ran") and "tickets 0" in line for line in said)
    assert "PASS  no event oversold: stock 10, left 0" in said and said[-1] == "FAIL"


def test_no_csv_at_all_is_no_load(tmp_path: Path) -> None:
    outcome = Outcome(tmp_path / "absent")
    assert (outcome.requests, outcome.failures, outcome.exceptions) == (0, 0, 0)

"""`peak bench`'s paths of issue 16 (event view, order polls, session, tickets) and issue 19 (the SSO hop, the
code exchange, ES256 and RS256 ID tokens), the purchase at 2,048 connections and the access log's cost: seeded and measured for a second
each, so that none can rot.

No timing is asserted: speed is what `peak bench` reports, not what a test decides.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.processes import free_port
from loadtest.measure import Result
from loadtest.report import goals
from loadtest.wrk_runner import socket_errors
from tests.support import run_peak

NEW_PATHS = (
    "event_view", "event_view_304", "order_queued", "order_written", "sso_session", "ticket", "purchase_ticket",
    "sso_hop", "code_exchange", "code_exchange_rs256",
)  # fmt: skip


def test_wrk_socket_errors_are_read() -> None:
    assert socket_errors("Socket errors: connect 3, read 12, write 0, timeout 7\n") == {
        "connect": 3, "read": 12, "write": 0, "timeout": 7,
    }  # fmt: skip
    assert socket_errors("Requests/sec: 1.00\n") == {"connect": 0, "read": 0, "write": 0, "timeout": 0}


def test_goals_name_what_was_measured_and_whether_it_was_met() -> None:
    def row(path: str, ratio: float) -> Result:
        return Result(path, "", 1.0, 1.0, 1.0, 1, {200: 1}, [200], ratio=ratio)

    crowd = {"keeps": 0.95, "goal": 0.9, "met": True}
    logged = {"share": 0.03, "cost": 0.2, "goal": 0.1, "met": True}
    found = goals(
        [row("floor", 1.0), row("event_view", 0.96), row("sso_session", 0.5), row("ticket", 0.4)],
        {"purchase_2048": crowd, "access_log_cost": logged},
    )
    met = {g["what"]: g["met"] for g in found}
    assert met == {
        "event_view / floor": True,
        "sso_session / floor": False,
        "purchase goodput, 2,048 / few connections, no errors": True,
        "access log: CPU per request over the API's per floor request": True,
        "access log: floor rps lost (2 servers, noisy)": False,
    }


@pytest.mark.slow
def test_bench_measures_the_new_paths_the_crowd_and_the_access_log(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_peak(
        "bench", "--duration", "1", "--connections", "8", "--users", "12", "--workers", "1", "--json", str(out),
        "--paths", ",".join([*NEW_PATHS, "purchase_2048", "access_log_cost"]),
        env={"PEAK_DATA_DIR": str(tmp_path / "unused"), "PEAK_PORT": str(free_port())},
        timeout_s=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AUDIT PASS" in result.stdout
    report = json.loads(out.read_text())
    measured = {r["path"]: r for r in report["results"]}
    assert set(measured) == {"floor", *NEW_PATHS}
    for name in NEW_PATHS:
        r = measured[name]
        # Every request answered as the path expects: 304 for the conditional view, 202 for the ticketed
        # purchase (so each shopper's own ticket was accepted), 200 for the reads (each owner's own order).
        assert r["requests"] > 0 and r["unexpected"] == 0 and r["ratio"] is not None, r
        assert set(r["statuses"]) == {str(r["expected"][0])}, r
        assert r["api_cpu_ratio"] is not None and r["api_cpu_ratio"] > 0, r
    assert measured["event_view_304"]["expected"] == [304]
    assert measured["purchase_ticket"]["expected"] == [202]
    # The hop answered every request with a redirect carrying a code; every exchange redeemed a fresh one.
    assert measured["sso_hop"]["expected"] == [302] and measured["code_exchange"]["expected"] == [200]
    # The crowd: four turns, two at --connections and two at 2,048, every error counted.
    crowd = report["extras"]["purchase_2048"]
    assert crowd["few"]["connections"] == 8 and crowd["many"]["connections"] == 2048
    for side in ("few", "many"):
        assert len(crowd[side]["runs"]) == 2 and crowd[side]["goodput"] > 0
        for run in crowd[side]["runs"]:
            assert set(run["socket_errors"]) == {"connect", "read", "write", "timeout"}
    assert "keeps" in crowd and isinstance(crowd["met"], bool)
    assert "purchase at 2,048 connections keeps" in result.stdout
    # The access log: two fresh servers measured in pairs, the one with the log on wrote its lines.
    logged = report["extras"]["access_log_cost"]
    assert logged["lines"] > 0 and logged["rps_on"] > 0 and logged["rps_off"] > 0
    assert len(logged["runs"]["on"]) == len(logged["runs"]["off"]) == 4
    assert logged["inproc_us_on"] > 0 and logged["inproc_us_off"] > 0
    assert logged["share"] == pytest.approx(logged["line_us"] / logged["api_us_off"])
    whats = {g["what"] for g in report["goals"]}
    assert "access log: CPU per request over the API's per floor request" in whats
    assert "event_view / floor" in whats and "order_queued / floor" in whats
    assert "sso_hop / floor" in whats and "code_exchange / floor" in whats
    assert "code_exchange_rs256 / floor" not in whats, "the RS256 exchange is reported, with no goal"

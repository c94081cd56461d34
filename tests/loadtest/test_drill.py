"""`peak drill --short` of the slow/broken-network scenarios (issue 17): each invariant PASS, exit 0; the full
length runs only in `make chaos`. The properties themselves are tested in detail by tests/scale/test_network_faults.py,
tests/seckill/test_api_killed.py and tests/seckill/test_redis_refuses_writes.py; this keeps the drill from rotting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kit.commands import CommandError
from loadtest.drill.runner import run_drill
from tests.support import run_peak

SCENARIOS = ("slow_network", "api_killed", "redis_refuses_writes", "admin_changes")


def test_drill_lists_its_scenarios_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    listed = run_peak("drill", "--list", env={"PEAK_DATA_DIR": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    assert all(any(line.startswith(name) for line in listed.stdout.splitlines()) for name in SCENARIOS)
    with pytest.raises(CommandError, match="no scenario nope"):
        run_drill(argparse.Namespace(list=False, short=True, scenario=["nope"]), say=print)


@pytest.mark.slow
def test_the_short_drill_passes_every_invariant(tmp_path: Path) -> None:
    args = [part for name in SCENARIOS for part in ("--scenario", name)]
    done = run_peak("drill", "--short", *args, env={"PEAK_DATA_DIR": str(tmp_path)}, timeout_s=240)
    print(done.stdout[-6000:])
    # The broken invariants last: a CI excerpt keeps the end of a failure, not the scenario's middle.
    broken = "\n".join(line for line in done.stdout.splitlines() if "FAIL" in line)
    assert done.returncode == 0, (
        f"{done.stdout[-4000:]}{done.stderr[-2000:]}\nthe broken invariants:\n{broken}"
    )
    for name in SCENARIOS:
        assert f"PASS  {name}" in done.stdout
    assert "FAIL" not in done.stdout
    assert "PASS: every invariant held" in done.stdout

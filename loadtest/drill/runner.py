"""`peak drill`: run the fault scenarios of this package against a private stack, one after the other, and print
each invariant PASS or FAIL with what was measured; exit 1 on any FAIL.

Every module here that defines ``SCENARIO`` is a scenario (``loadtest/drill/scenario.py``). The stack (a private
redis-server and PostgreSQL, ``loadtest/drill/stack.py``) is started once; after each scenario the processes it
started are stopped and Redis and PostgreSQL started again if it left them down. The folder with every
process's log is removed after a clean run and kept (its path printed) when something failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import loadtest.drill
from kit.commands import CommandError
from loadtest.drill.scenario import Result, Say, Scenario
from loadtest.drill.stack import Stack

__all__ = ["discover", "report", "run_drill"]

_NOT_SCENARIOS = {"audit", "runner", "scenario", "stack"}


def discover() -> list[Scenario]:
    found = []
    for module in pkgutil.iter_modules(loadtest.drill.__path__):
        if module.name in _NOT_SCENARIOS:
            continue
        scenario = getattr(importlib.import_module(f"loadtest.drill.{module.name}"), "SCENARIO", None)
        if isinstance(scenario, Scenario):
            found.append(scenario)
    return sorted(found, key=lambda s: (s.order, s.name))


def _chosen(args: argparse.Namespace, scenarios: list[Scenario]) -> list[Scenario]:
    if not args.scenario:
        return [s for s in scenarios if s.in_short] if args.short else scenarios
    by_name = {s.name: s for s in scenarios}
    unknown = [name for name in args.scenario if name not in by_name]
    if unknown:
        raise CommandError(
            f"no scenario {', '.join(unknown)}; `peak drill --list` names them: {', '.join(by_name)}"
        )
    return [by_name[name] for name in args.scenario]


def report(scenario: Scenario, result: Result, took_s: float, say: Say) -> None:
    verdict = "PASS" if result.passed else "FAIL"
    say(f"{verdict}  {scenario.name} ({took_s:.1f} s)")
    for inv in result.invariants:
        say(f"  {'PASS' if inv.ok else 'FAIL'}  {inv.name}" + (f": {inv.detail}" if inv.detail else ""))
    if result.figures:
        say("  figures: " + ", ".join(f"{name} {value}" for name, value in result.figures.items()))


def _run_one(stack: Stack, scenario: Scenario, short: bool, say: Say) -> Result:
    def said(text: str) -> None:
        say(f"  {scenario.name}: {text}")

    try:
        result = asyncio.run(scenario.run(stack, short=short, say=said))
    except Exception as exc:
        last = traceback.format_exception_only(exc)[-1].strip()
        (stack.folder / f"{scenario.name}-traceback.txt").write_text(traceback.format_exc())
        result = Result()
        result.check("the scenario ran to its end", False, last)
    finally:
        stack.stop_processes()  # on Ctrl-C or SIGTERM too; the stack is then stopped on the way out
    stack.heal()
    return result


def run_drill(args: argparse.Namespace, *, say: Say) -> int:
    scenarios = discover()
    if args.list:
        for s in scenarios:
            say(f"{s.name:<22} {s.summary}{'' if s.in_short else '  (not in --short)'}")
        return 0
    chosen = _chosen(args, scenarios)
    length = "short" if args.short else "full-length"
    folder = Path(tempfile.mkdtemp(prefix="peak-drill-"))
    say(f"drill: {len(chosen)} {length} scenarios ({', '.join(s.name for s in chosen)}) on a private stack")
    stack = Stack(folder / "stack", say=lambda text: say(f"  {text}"))
    results: list[tuple[Scenario, Result, float]] = []
    try:
        stack.start()
        for scenario in chosen:
            say(f"-- {scenario.name}: {scenario.summary}")
            started = time.monotonic()
            result = _run_one(stack, scenario, args.short, say)
            results.append((scenario, result, time.monotonic() - started))
            report(scenario, result, results[-1][2], say)
    finally:
        stack.stop()
    failed = [s.name for s, r, _ in results if not r.passed]
    say("")
    say("drill summary")
    for scenario, result, took in results:
        bad = sum(not i.ok for i in result.invariants)
        say(f"  {'PASS' if result.passed else 'FAIL'}  {scenario.name:<22} {len(result.invariants) - bad}/"
            f"{len(result.invariants)} invariants held ({took:.1f} s)")  # fmt: skip
    if failed:
        say(f"FAIL: {', '.join(failed)}; the logs of every process are in {folder}")
        return 1
    shutil.rmtree(folder, ignore_errors=True)
    say("PASS: every invariant held")
    return 0

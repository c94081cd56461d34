"""What a drill scenario is: a named coroutine that breaks something on a private stack and checks invariants.

Each module of this package that defines ``SCENARIO`` (a ``Scenario``) is one scenario of `peak drill`. Its
``run(stack, short=..., say=...)`` gets the drill's stack (``loadtest/drill/stack.py``), breaks what it tests,
puts it back before it returns (a stopped server started again, a changed setting restored), and returns a
``Result``: every invariant checked, PASS or FAIL, with what it measured. ``short`` asks for a version of a few
seconds that still proves the property (the one `make test` runs); the full length is for `make chaos`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from loadtest.drill.stack import Stack

__all__ = ["Figure", "Invariant", "Result", "Run", "Say", "Scenario"]

Say = Callable[[str], None]
Figure = int | float | str


@dataclass(frozen=True)
class Invariant:
    """One property the scenario promises, and whether it held; ``detail`` says what was seen either way."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    invariants: list[Invariant] = field(default_factory=list)
    # What was measured, by name: acknowledged, lost, duplicated, oversold, recover_s, ... (printed in order).
    figures: dict[str, Figure] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.invariants.append(Invariant(name, bool(ok), detail))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return bool(self.invariants) and all(i.ok for i in self.invariants)


class Run(Protocol):
    def __call__(self, stack: Stack, *, short: bool, say: Say) -> Coroutine[Any, Any, Result]: ...


@dataclass(frozen=True)
class Scenario:
    name: str  # what `--scenario NAME` picks: lowercase with underscores
    summary: str  # one line for `--list`
    run: Run
    # Scenarios run in this order (lowest first), then by name.
    order: int = 50
    # Whether `peak drill --short` (and the test in `make test`) runs it; a scenario too long even when short
    # (a cluster with replicas to start) says False and runs only in the full drill or by name.
    in_short: bool = True

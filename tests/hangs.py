"""What a test that ran past pytest-timeout was waiting on: its asyncio tasks' stacks.

pytest-timeout prints every thread's stack, but an asyncio test that hangs sits in the event loop's
``select()``: the thread stack says nothing about which ``await`` never returned. This adds the stack of every
task of the loop running in the main thread (the test's, the services', the in-process app's) to that report.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest_timeout

__all__ = ["install"]


def _task_stacks() -> str:
    loop = asyncio.events._get_running_loop()
    if loop is None:
        return ""
    out = io.StringIO()
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        out.write(f"--- {task!r}\n")
        task.print_stack(limit=12, file=out)
    return out.getvalue()


def install() -> None:
    dump = pytest_timeout.dump_stacks

    def dump_with_tasks(terminal: Any) -> None:
        dump(terminal)
        stacks = _task_stacks()
        if stacks:
            terminal.sep("~", title="asyncio tasks of the main thread's loop")
            terminal.write(stacks)

    pytest_timeout.dump_stacks = dump_with_tasks

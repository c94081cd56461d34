"""What every private server shares: free loopback ports, waiting for an answer, stopping a process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from devstack.errors import StackError

__all__ = ["Say", "free_port", "port_open", "stop_process", "stop_processes", "wait_for"]

Say = Callable[[str], None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Signal the process's whole group, wait, and SIGKILL what is left after ``timeout_s``."""
    stop_processes([proc], sig, timeout_s)


def stop_processes(
    procs: Sequence[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, timeout_s: float = 10.0
) -> list[subprocess.Popen[bytes]]:
    """Signal every process's whole group at once, wait for each within one shared ``timeout_s``, and SIGKILL
    the groups of those still running then (stopped one after another, each with a bound of its own, nginx, a
    worker and two servers could take over 40 s). Returns those that had to be SIGKILLed."""
    for proc in procs:
        _kill_group(proc.pid, sig if proc.poll() is None else signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    killed: list[subprocess.Popen[bytes]] = []
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(proc)
            _kill_group(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        _kill_group(proc.pid, signal.SIGKILL)
    return killed


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_for(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float
) -> None:
    """Until ``check()`` holds; ``proc`` exiting meanwhile, or the time running out, is a StackError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode}; its log {log} ends with:\n{tail}")
        if check():
            return
        time.sleep(0.05)
    stop_process(proc)
    raise StackError(f"{what} did not answer within {timeout_s:.0f} s; see {log}")

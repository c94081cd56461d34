"""wrk, run over the request lines of a path (loadtest/wrk/requests.lua), and its output read back."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from kit.commands import CommandError

__all__ = ["Line", "parse_wrk", "run_wrk", "socket_errors", "start_wrk", "write_lines", "wrk_output"]

# One request: method, target, headers, body.
Line = tuple[str, str, dict[str, str], str]

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_script() -> str:
    return str(resources.files("loadtest").joinpath("wrk", "requests.lua"))


def write_lines(lines: list[Line], folder: Path, name: str) -> Path:
    """The requests file our wrk script cycles through: one tab-separated request per line."""
    path = folder / f"{name}.requests"
    with path.open("w") as f:
        for method, target, headers, body in lines:
            header_text = "|".join(f"{k}: {v}" for k, v in headers.items())
            f.write(f"{method}\t{target}\t{header_text}\t{body}\n")
    return path


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float, int, dict[int, int]]:
    """(rps, p50 ms, p99 ms, requests, statuses) from `wrk --latency` output with our script's status lines."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    statuses = {int(code): int(n) for code, n in re.findall(r"^status (\d+) (\d+)$", output, re.M)}
    return rps, p50, p99, requests, statuses


def _wrk_argv(
    base_url: str, requests_file: Path, *, duration_s: float, connections: int, codes_file: Path | None = None
) -> list[str]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise CommandError(
            "wrk not found: install it with `apt-get install wrk` (`make up` does this as root)"
        )
    return [
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency", "--timeout", "10s",
        "-s", _wrk_script(), base_url, "--", str(requests_file), *([str(codes_file)] if codes_file else []),
    ]  # fmt: skip


def start_wrk(
    base_url: str, requests_file: Path, *, duration_s: float, connections: int, codes_file: Path | None = None
) -> subprocess.Popen[str]:
    """wrk running in the background, for runs that overlap; ``wrk_output`` waits for it. With ``codes_file``
    the codes of the redirects it gets are written there (loadtest/wrk/requests.lua)."""
    argv = _wrk_argv(
        base_url, requests_file, duration_s=duration_s, connections=connections, codes_file=codes_file
    )
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrk_output(proc: subprocess.Popen[str], duration_s: float) -> str:
    try:
        out, err = proc.communicate(timeout=duration_s + 60)
    except BaseException:  # a timeout, Ctrl-C or SIGTERM: no wrk left running
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise CommandError(f"wrk failed: {err.strip() or out.strip()}")
    return out


def run_wrk(
    base_url: str, requests_file: Path, *, duration_s: float, connections: int, codes_file: Path | None = None
) -> str:
    return wrk_output(
        start_wrk(
            base_url, requests_file, duration_s=duration_s, connections=connections, codes_file=codes_file
        ),
        duration_s,
    )


def socket_errors(output: str) -> dict[str, int]:
    """wrk's socket errors by kind (connect, read, write, timeout); all zero when it printed none."""
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    counts = [int(n) for n in found.groups()] if found else [0, 0, 0, 0]
    return dict(zip(("connect", "read", "write", "timeout"), counts, strict=True))

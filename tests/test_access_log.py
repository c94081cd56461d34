"""The access log at peak rates: queued on the request path, written in batches by a thread (kit/logs.py).

Real processes (granian, two workers sharing one stderr) for the lines, their fields, the flush at shutdown
and whole lines; the in-process app with a writer held up for the sampling beyond the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from devstack.processes import free_port
from kit import logs
from kit.settings import Settings
from loadtest.wrk_runner import parse_wrk, run_wrk, write_lines
from peak.app import create_app
from tests.conftest import Servers
from tests.support import REPO, kill_group, lifespan_client, wait_http

PLAIN = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO peak\.access: "
    r"(?P<method>[A-Z]+) (?P<route>\S+) (?P<status>\d{3}) (?P<ms>\d+\.\d)ms (?P<rid>\S+)$"
)
SECRET = "sekrit-never-logged"


async def _flood(base_url: str, count: int, *, concurrency: int, tag: str) -> dict[str, int]:
    """``count`` requests with real concurrency, each with its own request id; {request id: status}."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(http: httpx.AsyncClient, i: int) -> tuple[str, int]:
        rid = f"{tag}-{i}"
        # Every fifth a route that does not exist; every request carries a secret in its query and headers.
        target = f"/healthz?token={SECRET}" if i % 5 else f"/no/such/{SECRET}"
        async with gate:
            answer = await http.get(
                target, headers={"X-Request-Id": rid, "Authorization": f"Bearer {SECRET}"}
            )
        return rid, answer.status_code

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
        return dict(await asyncio.gather(*(one(http, i) for i in range(count))))


def _serve(
    servers: Servers, tmp_path: Path, *, json_lines: bool, stderr: IO[bytes] | int, workers: int = 2,
    **extra: str,
) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    port = free_port()
    env = {
        **servers.env(), "PEAK_PORT": str(port), "PEAK_WORKERS": str(workers), "PEAK_ACCESS_LOG": "1",
        "PEAK_LOG_JSON": "1" if json_lines else "0", "PEAK_DATA_DIR": str(tmp_path), **extra,
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "peak", "serve"], env={**os.environ, **env}, stdout=stderr,
        stderr=stderr, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base_url}/healthz")
    except BaseException:
        kill_group(proc)
        raise
    return proc, base_url


def _check_lines(text: str, sent: dict[str, int], *, json_lines: bool) -> None:
    """Every request of ``sent`` has exactly one whole line with the right fields; nothing secret."""
    assert SECRET not in text
    seen: dict[str, dict[str, object]] = {}
    for line in text.splitlines():
        if "peak.access" not in line:
            continue
        if json_lines:
            entry = json.loads(line)  # a torn or interleaved line would not parse
            assert entry["logger"] == "peak.access" and entry["level"] == "info", entry
            assert entry["ts"].endswith("Z") and isinstance(entry["duration_ms"], float), entry
            assert entry["message"].startswith(f"{entry['method']} {entry['route']} {entry['status']} ")
        else:
            match = PLAIN.match(line)
            assert match is not None, line
            entry = {**match.groupdict(), "status": int(match["status"]), "request_id": match["rid"]}
        rid = str(entry["request_id"])
        if rid in sent:
            assert rid not in seen, f"two lines for {rid}"
            seen[rid] = entry
    assert set(seen) == set(sent), f"{len(set(sent) - set(seen))} requests without their line"
    for rid, entry in seen.items():
        assert entry["method"] == "GET" and entry["status"] == sent[rid], entry
        assert entry["route"] == ("/healthz" if sent[rid] == 200 else "unmatched"), entry


@pytest.mark.slow
def test_every_line_of_a_flood_is_written_whole_and_flushed_at_shutdown(
    servers: Servers, tmp_path: Path
) -> None:
    """3,000 requests, 200 at a time, against two processes writing one log file: each request has its one
    line, whole, with its fields, none lost although the server is stopped right after the last answer (the
    writer's period is 100 ms: the last batch is written at the lifespan's shutdown)."""
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc, base_url = _serve(servers, tmp_path, json_lines=False, stderr=out)
        try:
            sent = asyncio.run(_flood(base_url, 3000, concurrency=200, tag="plain"))
        finally:
            kill_group(proc, 15)  # SIGTERM: granian's clean shutdown
    assert sorted(set(sent.values())) == [200, 404]
    _check_lines(log.read_text(), sent, json_lines=False)


@pytest.mark.slow
def test_json_lines_through_a_pipe_are_never_interleaved(servers: Servers, tmp_path: Path) -> None:
    """The same through a pipe (how a container's stderr is read): the two processes' batches are written in
    chunks of at most PIPE_BUF, so no line of one process lands inside a line of the other."""
    proc, base_url = _serve(servers, tmp_path, json_lines=True, stderr=subprocess.PIPE)
    pipe = proc.stderr
    assert pipe is not None
    chunks: list[bytes] = []

    def read() -> None:
        while data := pipe.read1(65536):  # type: ignore[attr-defined]
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        sent = asyncio.run(_flood(base_url, 3000, concurrency=200, tag="json"))
    finally:
        kill_group(proc, 15)
        reader.join(30)
    _check_lines(b"".join(chunks).decode(), sent, json_lines=True)


@pytest.mark.slow
def test_a_server_whose_stderr_is_not_read_samples_and_counts_what_it_dropped(
    servers: Servers, tmp_path: Path
) -> None:
    """A real server whose stderr pipe nobody reads while wrk floods it: the pipe (64 KiB), the formatted
    bytes waiting (256 KiB) and the queue (PEAK_ACCESS_LOG_BUFFER_LINES, 1,024 here) fill, then one line in
    100 is kept. Once the pipe is read, every request is either its line or counted in a summary, and the
    server answered them all.

    The controller is set to shed at once (CPU above 1 % of a core), so that other loggers' warnings come
    while the pipe is full: before, such a line waited for the root handler's lock, which the access log's
    blocked writer held, and the server answered nothing more."""
    proc, base_url = _serve(
        servers, tmp_path, json_lines=True, stderr=subprocess.PIPE, workers=1, PEAK_DEGRADE_CPU_HIGH="0.01",
        PEAK_DEGRADE_CPU_LOW="0", PEAK_DEGRADE_HIGH_SAMPLES="1", PEAK_DEGRADE_SAMPLE_S="0.2",
        PEAK_DEGRADE_STEP_S="0", PEAK_ACCESS_LOG_BUFFER_LINES="1024",
    )  # fmt: skip
    pipe = proc.stderr
    assert pipe is not None
    chunks: list[bytes] = []

    def read() -> None:
        while data := pipe.read1(65536):  # type: ignore[attr-defined]
            chunks.append(data)

    reader = threading.Thread(target=read)
    connections = 64
    try:
        # A route that does not exist: its lines ("unmatched") are told apart from wait_http's /healthz.
        flood = write_lines([("GET", f"/no/such/{SECRET}", {}, "")], tmp_path, "flood")
        # About 2,300 lines fill the buffers (with the default 16,384-line queue it took ~17,700, which a slow
        # CI machine did not answer in 12 s: 12,071); a busy machine answers ~18,000 in 6 s, a slow one ~6,000.
        # Too few would show below as no line dropped.
        _, _, _, total, statuses = parse_wrk(run_wrk(base_url, flood, duration_s=6, connections=connections))
        assert set(statuses) == {404}, (total, statuses)
        # The pipe is still full, the controller has logged: the server still answers at once.
        assert httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
    finally:
        reader.start()
        kill_group(proc, 15)
        reader.join(30)
    text = b"".join(chunks).decode()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines() if "peak.access" in line]
    written = sum(1 for e in lines if e.get("route") == "unmatched")
    summaries = [e for e in lines if e["level"] == "warning"]
    dropped = sum(e["dropped"] for e in summaries)
    assert summaries and dropped > 0, f"{total} requests did not fill the buffers"
    assert all("sampled 1 in 100" in e["message"] and e["sampled_1_in"] == 100 for e in summaries)
    # The controller's warnings were written, or counted as dropped by the next line that was.
    others = [
        json.loads(line) for line in text.splitlines() if line.startswith("{") and "peak.access" not in line
    ]
    assert any("to shed" in e["message"] or "log lines dropped" in e["message"] for e in others), others[-5:]
    # Requests wrk gave up on at its end were still answered (and logged): at most one per connection; and
    # the /healthz above, if its line was dropped.
    assert total <= written + dropped <= total + connections + 1


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[Path, Callable[..., None]]]:
    """A file, and ``configure(**kwargs)`` that sends this process's log (root handler and access log) there:
    a real file descriptor, the writer's os.write path. (pytest swaps sys.stderr between a test's phases, so
    the stream is handed to the log, not set as sys.stderr.)"""
    path = tmp_path / "stderr.log"
    stream = path.open("w")

    def configure(**kwargs: object) -> None:
        saved, sys.stderr = sys.stderr, stream
        try:
            logs.configure(**kwargs)  # type: ignore[arg-type]
        finally:
            sys.stderr = saved

    try:
        yield path, configure
    finally:
        logs.configure(json=False, access=False)
        stream.close()


async def test_a_writer_held_up_samples_and_says_how_many_it_dropped(
    make_settings: Callable[..., Settings], log_file: tuple[Path, Callable[..., None]],
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """Beyond the buffer one line in ``sample`` is kept and the rest dropped; the summary line counts them, so
    written + dropped is every request. Other log lines written meanwhile stay whole."""
    path, configure = log_file
    app = create_app(make_settings(PEAK_ACCESS_LOG="1"))
    configure(json=True, access=True, buffer_lines=1000, sample=10)
    lock = logs.access._writing  # the writer's, around each write: held, as if stderr were blocked
    # The in-process client's own line per request (httpx logs at info) would fill the 256 KiB that other
    # loggers' lines may wait, and the warnings below would be dropped: this is about the server's lines.
    httpx_log = logging.getLogger("httpx")
    httpx_log.setLevel(logging.WARNING)
    request.addfinalizer(lambda: httpx_log.setLevel(logging.NOTSET))
    other = logging.getLogger("peak.other")
    others: list[threading.Thread] = []
    async with lifespan_client(app) as client:
        lock.acquire()
        try:

            async def one(i: int) -> int:
                if i % 100 == 0:
                    others.append(threading.Thread(target=other.warning, args=(f"other {i} " + "x" * 500,)))
                    others[-1].start()
                answer = await client.get("/healthz", headers={"X-Request-Id": f"flood-{i}"})
                return answer.status_code

            statuses = await asyncio.gather(*(one(i) for i in range(5000)))
        finally:
            lock.release()
        assert set(statuses) == {200}
    for thread in others:
        thread.join(10)
    logs.access.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    written = {e["request_id"] for e in lines if e.get("request_id", "").startswith("flood-")}
    summaries = [e for e in lines if e["logger"] == "peak.access" and e["level"] == "warning"]
    assert summaries, "no summary of the dropped lines"
    dropped = sum(e["dropped"] for e in summaries)
    assert dropped > 0 and len(written) + dropped == 5000
    assert all("sampled 1 in 10" in e["message"] and e["sampled_1_in"] == 10 for e in summaries)
    # Beyond the buffer one request in ten still got its line.
    beyond = sum(e["requests"] for e in summaries)
    assert beyond > 1000 and beyond - dropped == beyond // 10
    assert sum(1 for e in lines if e["logger"] == "peak.other") == 50


async def test_lines_below_the_buffer_are_all_written_in_both_formats(
    make_settings: Callable[..., Settings], log_file: tuple[Path, Callable[..., None]]
) -> None:
    """Under the buffer nothing is dropped, plain or JSON, and a reconfiguration writes the queue out first."""
    path, configure = log_file
    settings = make_settings(PEAK_ACCESS_LOG="1")
    for json_lines in (False, True):
        app = create_app(settings)
        configure(json=json_lines, access=True)
        async with lifespan_client(app) as client:
            sent = dict(
                await asyncio.gather(*(_status(client, f"below-{json_lines}-{i}", i) for i in range(2000)))
            )
        mine = "\n".join(line for line in path.read_text().splitlines() if f"below-{json_lines}-" in line)
        _check_lines(mine, sent, json_lines=json_lines)


async def _status(client: httpx.AsyncClient, rid: str, i: int) -> tuple[str, int]:
    target = f"/healthz?token={SECRET}" if i % 5 else f"/no/such/{SECRET}"
    answer = await client.get(target, headers={"X-Request-Id": rid, "Authorization": f"Bearer {SECRET}"})
    return rid, answer.status_code


def test_a_closed_stderr_loses_lines_not_the_process(tmp_path: Path) -> None:
    stream = (tmp_path / "gone.log").open("w")
    stream.close()
    log = logs.AccessLog()
    log.setup(stream, enabled=True, json=False)
    log.add("GET", "/healthz", 200, 0.001, "rid")
    log.stop()  # no exception: the writer and the request path go on


def test_a_level_above_info_silences_the_access_log() -> None:
    try:
        logs.configure(json=False, level="warning", access=True)
        assert not logs.access.enabled
        logs.configure(json=False, level="info", access=True)
        assert logs.access.enabled
    finally:
        logs.configure(json=False, level="info", access=False)


def test_a_blocked_stderr_blocks_no_thread_that_logs_and_the_lines_dropped_are_counted() -> None:
    """stderr a pipe that is full and not read: 20,000 warnings of another logger return at once (before, the
    first waited for the pipe, and on the event loop that stopped the server). Beyond 256 KiB waiting they
    are dropped; once the pipe is read, the next line says how many, and written + dropped is all of them."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    saved, sys.stderr = sys.stderr, stream
    try:
        logs.configure(json=False, access=True)
    finally:
        sys.stderr = saved
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b"")))
    try:
        os.set_blocking(write_fd, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write_fd, b"#" * 4096)
        os.set_blocking(write_fd, True)
        logger = logging.getLogger("peak.test.blocked")
        done = threading.Event()

        def log_many() -> None:
            for i in range(20000):
                logger.warning("blocked line %d", i)
            done.set()

        threading.Thread(target=log_many, daemon=True).start()
        assert done.wait(20), "a thread that logs waited for the blocked stderr"
        reader.start()
        logs.access.flush()  # the writer has written what it was handed
        logger.warning("after the drain")
        logs.access.flush()
    finally:
        if not reader.is_alive():
            reader.start()  # unblocks what did wait (a failure above), so that the test ends
        logs.configure(json=False, access=False)
        stream.close()
        reader.join(30)
    text = b"".join(chunks).decode()
    written = len(re.findall(r"WARNING peak\.test\.blocked: blocked line \d+\n", text))
    notes = [
        int(n) for n in re.findall(r"WARNING peak\.logs: (\d+) log lines dropped: stderr was not read", text)
    ]
    assert len(notes) == 1 and notes[0] > 0, notes
    assert written + notes[0] == 20000
    assert text.index("log lines dropped") < text.index("after the drain")

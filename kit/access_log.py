"""The access log: one line per request, queued on the request path, written by a thread.

The access log (``access``) is not a ``logging.Logger``: one ``Logger.info`` per request (a LogRecord, a
formatter, a write and a flush to stderr, all on the event loop; ~16 us) cost the API 40 % of its floor
(14.6k against 25.4k requests/s with 2 processes). A request now appends one tuple to a bounded queue
(~0.4 us). Every ``FLUSH_S`` the event loop formats what is queued into chunks of whole lines (~1.3 us a
plain line, ~1.9 us a JSON one) and hands them to a daemon thread, which writes each with one ``os.write``.
The root handler of kit/logs.py (every other logger's lines) hands its formatted lines to the same thread
(``log_line``), so no line is torn by another of this process and a blocked stderr blocks only that thread:
before, the writer held the handler's lock while blocked, and the next warning of any logger then stopped the
event loop, and with it the server (found on 2026-12-02). When stderr is a pipe a chunk is at most
``PIPE_BUF`` bytes (such a write is atomic, so the lines of the server's processes sharing the pipe never
interleave either). Beyond 256 KiB of them waiting, the handler's lines are dropped and counted, and its next
line says how many.

When the writer falls behind (a blocked or slow stderr), the loop stops formatting once 256 KiB wait for it,
and the queue holds ``BUFFER_LINES``; beyond that one request in ``SAMPLE`` is still queued (up to twice
``BUFFER_LINES``) and the others are dropped, and one warning line then says how many were dropped and that
1 in ``SAMPLE`` was kept. The queue is written out at the lifespan's shutdown (kit/middleware.py), at exit,
and at every reconfiguration.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import os
import queue
import select
import stat
import sys
import threading
import time
from typing import IO

import orjson

__all__ = ["BUFFER_LINES", "FLUSH_S", "SAMPLE", "AccessLog", "access", "iso"]

# About 1 s of one process at its floor rate; ~200 bytes a queued line, so ~3 MiB at most per process.
BUFFER_LINES = 16384
FLUSH_S = 0.1
SAMPLE = 100
ACCESS_LOGGER = "peak.access"

# A chunk for a regular file or a terminal: big writes are cheap and nothing else shares the offset mid-write.
_FILE_CHUNK = 1 << 16
# Formatted bytes waiting for the writer beyond which the loop stops formatting: the queue then fills and
# the sampling starts (a blocked stderr costs at most this, the queue and its samples).
_MAX_HANDED_BYTES = 1 << 18

# What a request queues: wall time at its end, method, route template, status, seconds taken, request id.
Entry = tuple[float, str, str, int, float, str]


class _LogLine(bytes):
    """A line of the root handler (another logger's), counted apart from the access log's bytes."""


def iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


class AccessLog:
    """One line per request: queued on the request path, formatted on the event loop in batches, written by
    a thread."""

    def __init__(self) -> None:
        self.enabled = False
        self.json = False
        self.buffer_lines = BUFFER_LINES
        self.sample = SAMPLE
        self.flush_s = FLUSH_S
        self._queue: collections.deque[Entry] = collections.deque()
        # Counted on the event loop only; the writer reads them and remembers what it reported.
        self._over = 0
        self._dropped = 0
        self._reported_over = 0
        self._reported_dropped = 0
        # Formatted chunks for the writer thread (a threading.Event: tell me when you got here; None: stop),
        # and bytes handed over and written so far (each counted by one side only).
        self._out: queue.SimpleQueue[bytes | threading.Event | None] = queue.SimpleQueue()
        self._bytes_in = 0
        self._bytes_out = 0
        self._armed = False
        self._stream: IO[str] = sys.stderr
        self._fd: int | None = None
        self._chunk = _FILE_CHUNK
        # The root handler's lines waiting (counted under its lock) and written (by the writer).
        self._lines_in = 0
        self._lines_out = 0
        self._stopped = False
        self._writing = threading.Lock()
        self._draining = threading.Lock()
        self._state = threading.Lock()
        self._writer: threading.Thread | None = None
        self._second = -1
        self._prefix = ""
        os.register_at_fork(after_in_child=self._after_fork)
        atexit.register(self.stop)

    def setup(
        self,
        stream: IO[str],
        *,
        enabled: bool,
        json: bool,
        buffer_lines: int = BUFFER_LINES,
        sample: int = SAMPLE,
        flush_s: float = FLUSH_S,
    ) -> None:
        """Write to ``stream`` from now on (what is queued goes out first, where it was headed)."""
        self.flush()
        self.enabled, self.json = enabled, json
        self.buffer_lines, self.sample, self.flush_s = buffer_lines, max(1, sample), flush_s
        self._stream = stream
        self._second = -1
        self._stopped = False
        self._fd, self._chunk = None, _FILE_CHUNK
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = stream.fileno()
            self._fd = fd
            if stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode):
                self._chunk = select.PIPE_BUF

    def add(self, method: str, route: str, status: int, elapsed_s: float, request_id: str) -> None:
        """Queue one request's line (the request path: no formatting, no I/O)."""
        entries = self._queue
        if len(entries) < self.buffer_lines:
            entries.append((time.time(), method, route, status, elapsed_s, request_id))
        else:
            self._over += 1
            if self._over % self.sample == 0 and len(entries) < 2 * self.buffer_lines:
                entries.append((time.time(), method, route, status, elapsed_s, request_id))
            else:
                self._dropped += 1
        if not self._armed:
            self._arm()

    def _arm(self) -> None:
        """The next batch: formatted on this thread's event loop in ``flush_s`` (one timer per batch, not per
        line); without a loop, by the writer thread itself."""
        self.start()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._armed = True
        loop.call_later(self.flush_s, self._on_loop)

    def _on_loop(self) -> None:
        # Formatting here rather than in the writer: the thread then holds the GIL only around its os.write
        # calls instead of competing for it with the loop and granian's threads for a whole batch.
        self._armed = False
        if self._draining.acquire(blocking=False):
            try:
                if self._bytes_in - self._bytes_out < _MAX_HANDED_BYTES:
                    self._hand_over(self._format(len(self._queue)))
            finally:
                self._draining.release()
        if self._queue or self._dropped != self._reported_dropped:
            self._arm()

    def start(self) -> None:
        """The writer thread of this process (after a fork, the child starts its own at its first line)."""
        if self._writer is None:
            with self._state:
                self._start()

    def _start(self) -> None:
        if self._writer is None:
            writer = threading.Thread(target=self._run, name="peak-access-log", daemon=True)
            writer.start()
            self._writer = writer

    def log_line(self, data: bytes) -> bool:
        """Write a line of the root handler (called under its lock) in order with the access lines, by the
        writer thread; False if it was dropped: 256 KiB of such lines wait already (a blocked stderr)."""
        with self._state:  # not handed over once stop() has told the writer to end
            if not self._stopped:
                self._start()
            writer = self._writer
            if not self._stopped and writer is not None and writer is not threading.current_thread():
                if self._lines_in - self._lines_out >= _MAX_HANDED_BYTES:
                    return False
                self._lines_in += len(data)
                self._out.put(_LogLine(data))
                return True
        self._write(data)  # after stop(), or the writer's own warning: this thread writes it
        return True

    def flush(self) -> None:
        """Write out what is queued now (not what arrives meanwhile, so that it ends), from any thread; waits
        for the writer (at most 5 s: a blocked stderr must not hold a shutdown forever)."""
        done = threading.Event()
        with self._draining:  # handed over in the order formatted
            chunks = self._format(len(self._queue))
            writer = self._writer
            threaded = writer is not None and writer.is_alive() and writer is not threading.current_thread()
            if threaded:
                self._hand_over(chunks)
                self._out.put(done)
        if threaded:
            done.wait(5)
            return
        for data in [*self._take_handed(), *chunks]:
            self._write(data)

    def stop(self) -> None:
        """Flush and end the writer thread (a clean shutdown); the root handler's lines are then written by
        the thread that logs them."""
        self.flush()
        with self._state:
            self._stopped = True
            writer, self._writer = self._writer, None
            if writer is not None and writer.is_alive() and writer is not threading.current_thread():
                self._out.put(None)
            else:
                writer = None
        if writer is not None:
            writer.join(5)

    def _take_handed(self) -> list[bytes]:
        found: list[bytes] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._out.get_nowait()
                if isinstance(item, bytes):
                    found.append(item)
                    self._count_out(item)
                elif isinstance(item, threading.Event):
                    item.set()
        return found

    def _after_fork(self) -> None:
        # The parent's thread does not exist here, nor do its locks' owners; its lines are its own to write.
        self._writer = None
        self._armed = False
        self._stopped = False
        self._draining = threading.Lock()
        self._state = threading.Lock()
        self._writing = threading.Lock()
        self._lines_in = self._lines_out = 0
        self._out = queue.SimpleQueue()
        self._bytes_in = self._bytes_out = 0
        self._queue.clear()
        self._over = self._dropped = self._reported_over = self._reported_dropped = 0

    def _hand_over(self, chunks: list[bytes]) -> None:
        for data in chunks:
            self._bytes_in += len(data)
            self._out.put(data)

    def _run(self) -> None:
        idle = 0
        while True:
            try:
                item = self._out.get(timeout=self.flush_s * 2)
            except queue.Empty:
                idle += 1
                if idle >= 2 and (self._queue or self._dropped != self._reported_dropped):
                    # No loop formats them (a process without one, or its loop is gone): do it here.
                    self._armed = False
                    with self._draining:
                        chunks = self._format(len(self._queue))
                    for data in chunks:
                        self._write(data)
                continue
            idle = 0
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._write(item)
            except Exception:  # the writer must outlive one bad write; say it where it can
                with contextlib.suppress(Exception):
                    logging.getLogger("peak").exception("the access log writer failed a batch")
            finally:
                self._count_out(item)

    def _count_out(self, item: bytes) -> None:
        if isinstance(item, _LogLine):
            self._lines_out += len(item)
        else:
            self._bytes_out += len(item)

    def _format(self, most: int) -> list[bytes]:
        """Up to ``most`` queued lines as chunks of whole lines (and the summary of lines dropped so far)."""
        entries, limit = self._queue, self._chunk
        line = self._json_line if self.json else self._plain_line
        chunks: list[bytes] = []
        out: list[bytes] = []
        size = 0
        for _ in range(min(most, len(entries))):
            data = line(entries.popleft())
            if out and size + len(data) > limit:
                chunks.append(b"".join(out))
                out, size = [], 0
            out.append(data)
            size += len(data)
        if self._dropped != self._reported_dropped:
            summary = self._summary()
            if out and size + len(summary) > limit:
                chunks.append(b"".join(out))
                out = []
            out.append(summary)
        if out:
            chunks.append(b"".join(out))
        return chunks

    def _write(self, data: bytes) -> None:
        if not data:
            return
        with self._writing:
            try:
                if self._fd is None:
                    self._stream.write(data.decode())
                    self._stream.flush()
                    return
                self._stream.flush()
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except (OSError, ValueError):
                # stderr closed or gone: nobody can read these lines; the process must go on serving.
                pass

    def _plain_line(self, entry: Entry) -> bytes:
        moment, method, route, status, elapsed_s, request_id = entry
        second = int(moment)
        if second != self._second:
            self._new_second(second)
        return (
            f"{self._prefix},{int((moment - second) * 1000):03d} INFO {ACCESS_LOGGER}: "
            f"{method} {route} {status} {elapsed_s * 1000:.1f}ms {request_id}\n"
        ).encode()

    def _json_line(self, entry: Entry) -> bytes:
        moment, method, route, status, elapsed_s, request_id = entry
        second = int(moment)
        if second != self._second:
            self._new_second(second)
        ms = elapsed_s * 1000
        return orjson.dumps(
            {
                "ts": f"{self._prefix}.{int((moment - second) * 1000):03d}Z", "level": "info",
                "logger": ACCESS_LOGGER, "message": f"{method} {route} {status} {ms:.1f}ms {request_id}",
                "method": method, "route": route, "status": status, "duration_ms": round(ms, 3),
                "request_id": request_id,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )  # fmt: skip

    def _new_second(self, second: int) -> None:
        # The time stamp's second, computed once a second rather than once a line: logging.Formatter's
        # asctime (local time) for plain lines, the JSON formatter's UTC ISO 8601 for JSON ones.
        self._second = second
        if self.json:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        else:
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))

    def _summary(self) -> bytes:
        over, dropped = self._over, self._dropped
        new_over, new_dropped = over - self._reported_over, dropped - self._reported_dropped
        self._reported_over, self._reported_dropped = over, dropped
        message = (
            f"access log sampled 1 in {self.sample}: the writer fell behind, {new_dropped} lines dropped of "
            f"{new_over} requests beyond the {self.buffer_lines}-line buffer"
        )
        now = time.time()
        if self.json:
            return orjson.dumps(
                {
                    "ts": iso(now), "level": "warning", "logger": ACCESS_LOGGER, "message": message,
                    "dropped": new_dropped, "requests": new_over, "sampled_1_in": self.sample,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )  # fmt: skip
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        return f"{stamp},{int(now % 1 * 1000):03d} WARNING {ACCESS_LOGGER}: {message}\n".encode()


access = AccessLog()

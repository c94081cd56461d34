"""Logging set-up: plain text or one JSON object per line (``PEAK_LOG_JSON=1``), and the access log
(kit/access_log.py), whose writer thread also writes the root handler's lines: a blocked stderr then blocks
no thread that logs."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import orjson

from kit.access_log import BUFFER_LINES, FLUSH_S, SAMPLE, AccessLog, access, iso

__all__ = ["BUFFER_LINES", "FLUSH_S", "SAMPLE", "AccessLog", "access", "configure"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: its lines go to the access log's writer thread (``AccessLog.log_line``)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + self.terminator).encode(errors="backslashreplace")
        except Exception:
            self.handleError(record)
            return
        if self.dropped:
            note = logging.LogRecord(
                "peak.logs", logging.WARNING, __file__, 0,
                f"{self.dropped} log lines dropped: stderr was not read", None, None,
            )  # fmt: skip
            if _access.log_line((self.format(note) + self.terminator).encode()):
                self.dropped = 0
        if not _access.log_line(data):
            self.dropped += 1


def configure(
    *,
    json: bool,
    level: str = "info",
    access: bool = True,
    buffer_lines: int = BUFFER_LINES,
    sample: int = SAMPLE,
    flush_s: float = FLUSH_S,
) -> None:
    handler = _Handler(sys.stderr)
    if json:
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # As before, when the access log was a logger: a level above info silences it.
    enabled = access and root.getEffectiveLevel() <= logging.INFO
    _access.setup(
        sys.stderr, enabled=enabled, json=json, buffer_lines=buffer_lines,
        sample=sample, flush_s=flush_s,
    )  # fmt: skip


_access = access

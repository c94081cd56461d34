"""`peak up`: the whole stack on this machine, stopped cleanly by Ctrl-C or SIGTERM.

With no PEAK_REDIS_URL/PEAK_DATABASE_URL it starts private servers under PEAK_DATA_DIR; then it applies the
migrations, starts the API server (granian) and the background workers, and watches them. ``LocalStack`` is the
same thing as an object, for `peak bench` and `peak loadtest`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO

from peak.settings import Settings
from peak.stack import PostgresServer, RedisServer, StackError, stop_process

__all__ = ["ENV_FILE", "LocalStack", "run_up"]

ENV_FILE = "env"
_READY_TIMEOUT_S = 60.0


def _say(text: str) -> None:
    print(f"peak: {text}", flush=True)


def _secret_key(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    os.chmod(path, 0o600)
    return path.read_text().strip()


def server_command(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "peak.app:create_app",
        "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers),
        "--loop", "uvloop", "--no-ws", "--log-level", "warning", "--backlog", "4096",
    ]  # fmt: skip


class LocalStack:
    """Private servers (where no URL is set), migrations, the API server and the background workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        say: Callable[[str], None] = _say,
        output: IO[bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.say = say
        self.output = output
        self.env = {**os.environ, **(env or {})}
        self.data_dir = Path(settings.data_dir).resolve()
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def base_url(self) -> str:
        return self.settings.public_base_url()

    def start(self) -> Settings:
        """Start everything and wait until /readyz answers 200; returns the settings with the server URLs."""
        settings = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.redis_url is None:
            self.redis = RedisServer(self.data_dir / "redis")
            self.say(f"starting redis-server on port {self.redis.port} (data in {self.redis.data_dir})")
            self.redis.start()
            settings = replace(settings, redis_url=self.redis.url)
        if settings.database_url is None:
            self.postgres = PostgresServer(self.data_dir / "postgres", say=self.say)
            self.say(f"starting PostgreSQL on port {self.postgres.port} (data in {self.postgres.data_dir})")
            self.postgres.start()
            settings = replace(settings, database_url=self.postgres.url)
        if settings.secret_key is None:
            settings = replace(settings, secret_key=_secret_key(self.data_dir))
        self.settings = settings
        self.env.update(
            PEAK_REDIS_URL=settings.require("redis_url"),
            PEAK_DATABASE_URL=settings.require("database_url"),
            PEAK_SECRET_KEY=settings.require("secret_key"),
        )
        metrics_dir = self.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

        from peak.cli import migrate_now

        self.say("applying migrations")
        asyncio.run(migrate_now(settings))
        (self.data_dir / ENV_FILE).write_text(
            f"PEAK_REDIS_URL={settings.redis_url}\nPEAK_DATABASE_URL={settings.database_url}\n"
        )
        self.server = self._spawn(server_command(settings))
        for _ in range(settings.background_workers):
            self.workers.append(self._spawn([sys.executable, "-m", "peak", "worker"]))
        self._wait_ready()
        return settings

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=self.output,
            start_new_session=True,
        )

    def _wait_ready(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise StackError(
                    f"the API server exited with code {self.server.returncode} while starting; see its output"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=1) as answer:  # noqa: S310 - our own URL
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise StackError(
            f"the API did not answer {self.base_url}/readyz with 200 within {_READY_TIMEOUT_S:.0f} s"
        )

    def check(self) -> str | None:
        """What died, if it cannot be replaced; a dead background worker is replaced and reported."""
        if self.server is not None and self.server.poll() is not None:
            return f"the API server exited with code {self.server.returncode}"
        for name, server in (("redis-server", self.redis), ("PostgreSQL", self.postgres)):
            if server is not None and server.proc is not None and server.proc.poll() is not None:
                return f"{name} exited with code {server.proc.returncode}"
        for i, worker in enumerate(self.workers):
            if worker.poll() is not None:
                self.say(f"background worker exited with code {worker.returncode}; starting a new one")
                self.workers[i] = self._spawn([sys.executable, "-m", "peak", "worker"])
        return None

    def stop(self) -> None:
        for child in [*self.workers, self.server]:
            if child is not None:
                stop_process(child, signal.SIGTERM, 8.0)
        self.workers.clear()
        self.server = None
        if self.postgres is not None:
            self.postgres.stop()
        if self.redis is not None:
            self.redis.stop()
        (self.data_dir / ENV_FILE).unlink(missing_ok=True)


def run_up(settings: Settings) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack(settings)
    try:
        settings = stack.start()
        base = stack.base_url
        _say(f"API        {base}  ({settings.workers} processes)")
        _say(f"ready      {base}/readyz   metrics {base}/metrics   OpenAPI {base}/openapi.json")
        _say(f"Redis      {settings.redis_url}")
        _say(f"PostgreSQL {settings.database_url}")
        _say(f"workers    {len(stack.workers)} background worker processes")
        _say(f"Ctrl-C stops everything; other terminals find this stack through {stack.data_dir / ENV_FILE}")
        while not stop.wait(0.5):
            failure = stack.check()
            if failure is not None:
                _say(f"{failure}; stopping everything")
                return 1
        _say("stopping")
        return 0
    finally:
        stack.stop()
        _say("stopped")

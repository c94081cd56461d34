"""`peak up`: the whole stack on this machine, stopped cleanly by Ctrl-C or SIGTERM.

With no PEAK_REDIS_URL/PEAK_DATABASE_URL it starts private servers under PEAK_DATA_DIR; then it applies the
migrations, starts the API server (granian) and the background workers, and watches them.
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
from dataclasses import replace
from pathlib import Path

from peak.settings import Settings
from peak.stack import PostgresServer, RedisServer, StackError, stop_process

__all__ = ["ENV_FILE", "run_up"]

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


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StackError(
                f"the API server exited with code {server.returncode} while starting; see its output above"
            )
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as answer:  # noqa: S310 - our own URL
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise StackError(f"the API did not answer {url}/readyz with 200 within {timeout_s:.0f} s")


def run_up(settings: Settings) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    redis: RedisServer | None = None
    postgres: PostgresServer | None = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        if settings.redis_url is None:
            redis = RedisServer(data_dir / "redis")
            _say(f"starting redis-server on port {redis.port} (data in {redis.data_dir})")
            redis.start()
            settings = replace(settings, redis_url=redis.url)
        if settings.database_url is None:
            postgres = PostgresServer(data_dir / "postgres", say=_say)
            _say(f"starting PostgreSQL on port {postgres.port} (data in {postgres.data_dir})")
            postgres.start()
            settings = replace(settings, database_url=postgres.url)
        if settings.secret_key is None:
            settings = replace(settings, secret_key=_secret_key(data_dir))
        env.update(
            PEAK_REDIS_URL=settings.require("redis_url"),
            PEAK_DATABASE_URL=settings.require("database_url"),
            PEAK_SECRET_KEY=settings.require("secret_key"),
        )
        metrics_dir = data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

        from peak.cli import migrate_now

        _say("applying migrations")
        asyncio.run(migrate_now(settings))
        env_file = data_dir / ENV_FILE
        env_file.write_text(
            f"PEAK_REDIS_URL={settings.redis_url}\nPEAK_DATABASE_URL={settings.database_url}\n"
        )

        server = subprocess.Popen(
            [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "peak.app:create_app",
             "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers),
             "--loop", "uvloop", "--no-ws", "--log-level", "warning", "--backlog", "4096"],
            env=env, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        children.append(server)
        workers: list[subprocess.Popen[bytes]] = []
        for _ in range(settings.background_workers):
            workers.append(_start_worker(env))
        children.extend(workers)
        base = settings.public_base_url()
        _wait_ready(base, server, _READY_TIMEOUT_S)
        _say(f"API        {base}  ({settings.workers} processes)")
        _say(f"ready      {base}/readyz   metrics {base}/metrics   OpenAPI {base}/openapi.json")
        _say(f"Redis      {settings.redis_url}")
        _say(f"PostgreSQL {settings.database_url}")
        _say(f"workers    {len(workers)} background worker processes")
        _say("Ctrl-C stops everything; other terminals find this stack through " + str(env_file))
        while not stop.wait(0.5):
            if server.poll() is not None:
                _say(f"the API server exited with code {server.returncode}; stopping everything")
                return 1
            for name, proc in (
                ("redis-server", redis and redis.proc),
                ("PostgreSQL", postgres and postgres.proc),
            ):
                if proc and proc.poll() is not None:
                    _say(f"{name} exited with code {proc.returncode}; stopping everything")
                    return 1
            for i, w in enumerate(workers):
                if w.poll() is not None:
                    _say(f"background worker exited with code {w.returncode}; starting a new one")
                    children.remove(w)
                    workers[i] = _start_worker(env)
                    children.append(workers[i])
        _say("stopping")
        return 0
    finally:
        for child in reversed(children):
            stop_process(child, signal.SIGTERM, 8.0)
        if postgres is not None:
            postgres.stop()
        if redis is not None:
            redis.stop()
        (data_dir / ENV_FILE).unlink(missing_ok=True)
        _say("stopped")


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "peak", "worker"], env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )

"""`peak up` as a user runs it: private servers, migrations, API and workers; SIGTERM leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import pytest
import redis

from devstack.postgres import postgres_bindir
from devstack.processes import free_port
from tests.support import alive_in, run_peak, sessions_started_by, start_peak, up_env, wait_http


def _env_file(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


async def _write(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE IF NOT EXISTS up_probe (v text); INSERT INTO up_probe VALUES ('kept')")
    await conn.close()


async def _read(pg_url: str) -> list[str]:
    conn = await asyncpg.connect(pg_url)
    rows = await conn.fetch("SELECT v FROM up_probe")
    await conn.close()
    return [r["v"] for r in rows]


@pytest.mark.slow
def test_up_starts_stops_cleanly_and_keeps_data(tmp_path: Path, stack_dir: Path) -> None:
    data_dir = stack_dir
    port = free_port()
    env = up_env(data_dir, port, workers=2)
    for round_ in (1, 2):
        log = tmp_path / f"up{round_}.log"
        proc = start_peak("up", env=env, log=log)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=90)
            urls = _env_file(data_dir)
            client = redis.Redis.from_url(urls["PEAK_REDIS_URL"], decode_responses=True)
            if round_ == 1:
                client.set("up:probe", "kept")
                asyncio.run(_write(urls["PEAK_DATABASE_URL"]))
            else:
                assert client.get("up:probe") == "kept"
                assert asyncio.run(_read(urls["PEAK_DATABASE_URL"])) == ["kept"]
            client.close()
            sessions = sessions_started_by(proc.pid)
            assert len(sessions) >= 4, sessions  # redis, postgres, granian, one worker
            assert (os.stat(data_dir / "secret_key").st_mode & 0o777) == 0o600
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(30)
        output = log.read_text()
        assert code == 0, output
        assert "peak: stopped" in output
        assert alive_in(sessions | {proc.pid}) == [], output
        assert not (data_dir / "env").exists()


def test_up_without_redis_server_says_how_to_install_it(tmp_path: Path) -> None:
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    env = {
        "PATH": str(bare_path),
        "PEAK_DATA_DIR": str(tmp_path / "stack"),
        "PEAK_PORT": str(free_port()),
        "PEAK_REDIS_URL": "",
        "PEAK_DATABASE_URL": "",
    }
    result = run_peak("up", env=env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("peak:")]
    assert lines == [
        "peak: redis-server not found: install it with `apt-get install redis-server` "
        "(`make up` does this when run as root), or set PEAK_REDIS_URL to a running Redis 7"
    ], result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_postgres_binaries_are_found_off_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Debian keeps the server binaries in its versioned folder, off PATH.
    monkeypatch.setenv("PATH", str(tmp_path))
    bindir = postgres_bindir()
    assert bindir.parent.parent.name == "postgresql" and (bindir / "initdb").exists()

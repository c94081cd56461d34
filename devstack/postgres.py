"""A private PostgreSQL for development, tests and the benchmark, from the OS packages' binaries.

It runs as a child process in its own session, with its data in a folder of ours. As root, it runs as an
unprivileged user (initdb and postgres refuse root), who is given the right to reach its folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from devstack.errors import StackError
from devstack.processes import Say, free_port, port_open, stop_process, wait_for

__all__ = ["PostgresServer", "postgres_bindir"]


def postgres_bindir() -> Path:
    found = shutil.which("postgres")
    candidates = [Path(found).parent] if found else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    candidates += [Path(p) for p in reversed(versions)]
    for bindir in candidates:
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            return bindir
    raise StackError(
        "PostgreSQL server binaries not found: install them with `apt-get install postgresql` "
        "(`make up` does this when run as root), or set PEAK_DATABASE_URL to a running PostgreSQL 15"
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise StackError("running as root and no unprivileged user (postgres or nobody) exists to run PostgreSQL")


def _grant_traverse(path: Path, user: pwd.struct_passwd, say: Say) -> None:
    """Let ``user`` reach ``path``: every ancestor needs an execute bit that applies to them."""
    for folder in reversed(path.resolve().parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid and st.st_mode & stat.S_IXUSR:
            continue
        if st.st_gid == user.pw_gid and st.st_mode & stat.S_IXGRP:
            continue
        if st.st_mode & stat.S_IXOTH:
            continue
        os.chmod(folder, st.st_mode | stat.S_IXOTH)
        say(
            f"gave others the right to traverse {folder} so that user {user.pw_name} can reach PostgreSQL's data"
        )


class PostgresServer:
    """A private PostgreSQL cluster: initdb on first start, trust auth on 127.0.0.1, database ``peak``."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        database: str = "peak",
        durable: bool = True,
        say: Say = print,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.database = database
        self.durable = durable
        self.say = say
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = "peak"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def start(self, timeout_s: float = 60.0) -> None:
        bindir = postgres_bindir()
        runas = _unprivileged_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sockets = self.data_dir / "sockets"
        sockets.mkdir(exist_ok=True)
        log = self.data_dir / "postgres.log"
        log.touch()
        if runas is not None:
            _grant_traverse(self.data_dir, runas, self.say)
            for p in (self.data_dir, sockets, log):
                os.chown(p, runas.pw_uid, runas.pw_gid)
        uid = runas.pw_uid if runas is not None else None
        gid = runas.pw_gid if runas is not None else None
        groups: list[int] | None = [] if runas is not None else None
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        if runas is not None:
            env["HOME"] = runas.pw_dir
        if not (self.pgdata / "PG_VERSION").exists():
            self.say(f"initialising PostgreSQL in {self.pgdata} (first start)")
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)
            result = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.pgdata.resolve()), "-U", self.user,
                 "--auth=trust", "-E", "UTF8", "--no-instructions"],
                capture_output=True, env=env, cwd=self.data_dir, check=False,
                user=uid, group=gid, extra_groups=groups,
            )  # fmt: skip
            if result.returncode != 0:
                raise StackError(f"initdb failed: {result.stderr.decode(errors='replace').strip()}")
        if port_open(self.port):
            raise StackError(f"port {self.port} is already in use; stop what listens there or pick another")
        settings = [
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={sockets.resolve()}",
            "max_connections=400",
            "shared_buffers=256MB",
            "logging_collector=off",
        ]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        args = [str(bindir / "postgres"), "-D", str(self.pgdata.resolve()), "-p", str(self.port)]
        for s in settings:
            args += ["-c", s]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=self.data_dir,
                start_new_session=True, user=uid, group=gid, extra_groups=groups,
            )  # fmt: skip
        assert self.proc is not None
        wait_for(lambda: self._psql("SELECT 1") is not None, self.proc, "postgres", log, timeout_s)
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if not exists:
            self._psql(f'CREATE DATABASE "{self.database}"', check=True)

    def _psql(self, sql: str, *, check: bool = False) -> str | None:
        psql = shutil.which("psql") or str(postgres_bindir() / "psql")
        result = subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres",
             "-XAtqc", sql],
            capture_output=True, check=False, timeout=10,
        )  # fmt: skip
        if result.returncode != 0:
            if check:
                raise StackError(f"psql failed: {result.stderr.decode(errors='replace').strip()}")
            return None
        return result.stdout.decode().strip()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's fast shutdown: end sessions, checkpoint, exit.
            stop_process(self.proc, signal.SIGINT, timeout_s)
            self.proc = None

"""Private servers for development, tests and the benchmark: redis-server, a Redis Cluster, PostgreSQL, nginx.

Each runs as a child process in its own session, with its data in a folder of ours. As root, PostgreSQL runs
as an unprivileged user (initdb and postgres refuse root), who is given the right to reach its folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "NginxBalancer",
    "PostgresServer",
    "RedisClusterServer",
    "RedisServer",
    "StackError",
    "free_port",
    "stop_process",
]

Say = Callable[[str], None]


class StackError(Exception):
    """A server could not start; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Signal the process's whole group, wait, and SIGKILL what is left after ``timeout_s``."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)
        return
    _kill_group(proc.pid, sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait(5)
    _kill_group(proc.pid, signal.SIGKILL)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_for(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float
) -> None:
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


class RedisServer:
    """redis-server with AOF on (appendfsync everysec), on 127.0.0.1."""

    def __init__(self, data_dir: Path, port: int | None = None, *, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str:
        found = shutil.which("redis-server")
        if found is None:
            raise StackError(
                "redis-server not found: install it with `apt-get install redis-server` "
                "(`make up` does this when run as root), or set PEAK_REDIS_URL to a running Redis 7"
            )
        return found

    def start(self, timeout_s: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _port_open(self.port):
            raise StackError(f"port {self.port} is already in use; stop what listens there or pick another")
        log = self.data_dir / "redis.log"
        args = [
            self.binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log.resolve()),
            "--protected-mode", "yes",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for(self._ping, self.proc, "redis-server", log, timeout_s)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, timeout_s)
            self.proc = None


def _cluster_info(port: int) -> dict[str, str]:
    """CLUSTER INFO of one node as a dict; empty while the node does not answer it."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"CLUSTER INFO\r\n")
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return {}
                data += chunk
                head, found, body = data.partition(b"\r\n")
                if not head.startswith(b"$"):  # an error such as -LOADING
                    return {}
                if found and len(body) >= int(head[1:]):
                    break
    except (OSError, ValueError):
        return {}
    text = body[: int(head[1:])].decode(errors="replace")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class RedisClusterServer:
    """A private Redis Cluster of ``masters`` primaries (no replicas) on 127.0.0.1, AOF on, for demos and tests.

    Each node has its folder (``node-<port>``) with its AOF and ``nodes.conf``. The ports are kept in
    ``ports`` so that a restart brings the same nodes back: they find each other again from ``nodes.conf``
    and no `redis-cli --cluster create` is needed. Bus ports are chosen explicitly (``cluster-port``) rather
    than the default port + 10000, which can run past 65535 for a free ephemeral port.
    """

    def __init__(self, data_dir: Path, masters: int = 3, *, say: Say = print) -> None:
        if masters < 3:
            raise StackError("a Redis Cluster needs at least 3 masters")
        self.data_dir = data_dir
        self.masters = masters
        self.say = say
        self.nodes: list[RedisServer] = []
        self.ports: list[int] = []
        self.bus_ports: list[int] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}" if self.ports else ""

    @property
    def node_urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [node.proc for node in self.nodes if node.proc is not None]

    def _plan(self) -> bool:
        """Pick the ports (kept ones on a restart); True when the cluster already exists."""
        marker = self.data_dir / "created"
        ports_file = self.data_dir / "ports"
        if marker.exists() and ports_file.exists():
            pairs = [line.split() for line in ports_file.read_text().splitlines() if line.strip()]
            if len(pairs) == self.masters:
                self.ports = [int(p) for p, _ in pairs]
                self.bus_ports = [int(b) for _, b in pairs]
                return True
            raise StackError(
                f"{self.data_dir} holds a cluster of {len(pairs)} masters, not {self.masters}: "
                f"ask for {len(pairs)} or remove that folder"
            )
        # No finished cluster here (first start, or a start that failed half way): begin from nothing.
        for stale in self.data_dir.glob("node-*"):
            shutil.rmtree(stale)
        chosen: set[int] = set()
        while len(chosen) < 2 * self.masters:
            chosen.add(free_port())
        ordered = sorted(chosen)
        self.ports, self.bus_ports = ordered[: self.masters], ordered[self.masters :]
        ports_file.write_text("".join(f"{p} {b}\n" for p, b in zip(self.ports, self.bus_ports, strict=True)))
        return False

    def start(self, timeout_s: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            existing = self._plan()
            try:
                self._start_nodes(existing, timeout_s)
                return
            except StackError:
                self.stop()
                # Fresh ports can be taken by someone else between choosing and binding: choose again.
                if existing or attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise

    def _start_nodes(self, existing: bool, timeout_s: float) -> None:
        for bus in self.bus_ports:
            if _port_open(bus):
                raise StackError(f"port {bus} (cluster bus) is already in use; stop what listens there")
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            node = RedisServer(
                self.data_dir / f"node-{port}",
                port,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(bus),
                    "--cluster-node-timeout", "5000",
                    # Without replicas a lost node loses its slots anyway; the rest keep serving theirs.
                    "--cluster-require-full-coverage", "no",
                ],
            )  # fmt: skip
            self.nodes.append(node)
            node.start(timeout_s)
        if not existing:
            self._create()
        self._wait_ok(timeout_s)

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise StackError("redis-cli not found: install it with `apt-get install redis-tools`")
        result = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            out = (result.stdout + result.stderr).decode(errors="replace").strip()[-2000:]
            raise StackError(f"redis-cli --cluster create failed:\n{out}")
        (self.data_dir / "created").write_text("")

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        states: dict[int, dict[str, str]] = {}
        while time.monotonic() < deadline:
            states = {port: _cluster_info(port) for port in self.ports}
            if all(
                info.get("cluster_state") == "ok"
                and info.get("cluster_slots_assigned") == "16384"
                and info.get("cluster_known_nodes") == str(self.masters)
                for info in states.values()
            ):
                return
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise StackError(
                        f"redis-server on port {node.port} exited; see {node.data_dir}/redis.log"
                    )
            time.sleep(0.1)
        shown = ", ".join(f"{p}: {i.get('cluster_state', 'no answer')}" for p, i in states.items())
        raise StackError(
            f"the Redis Cluster did not reach cluster_state:ok within {timeout_s:.0f} s ({shown})"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout_s)
        self.nodes.clear()


def _postgres_bindir() -> Path:
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
        bindir = _postgres_bindir()
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
        if _port_open(self.port):
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
        _wait_for(lambda: self._psql("SELECT 1") is not None, self.proc, "postgres", log, timeout_s)
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if not exists:
            self._psql(f'CREATE DATABASE "{self.database}"', check=True)

    def _psql(self, sql: str, *, check: bool = False) -> str | None:
        psql = shutil.which("psql") or str(_postgres_bindir() / "psql")
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


_NGINX_CONF = """\
# Written by peak at each start; edits are lost.
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    upstream peak {{
        # Round-robin (nginx's default); idle connections to the instances are kept for reuse.
{servers}
        keepalive 256;
    }}
    server {{
        listen {host}:{port} backlog=4096;
        location / {{
            proxy_pass http://peak;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # A purchase must never be sent twice: only connection failures move to the next instance,
            # and nginx retries nothing that is not idempotent anyway.
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class NginxBalancer:
    """nginx (from the OS packages) in front of several API instances: round-robin, keep-alive upstreams.

    It runs in the foreground as our child with a generated config; pid, logs and temporary files stay in
    ``data_dir``.
    """

    def __init__(self, data_dir: Path, host: str, port: int, upstream_ports: Sequence[int]) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.upstream_ports = list(upstream_ports)
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary(search_path: str | None = None) -> str:
        # Debian installs nginx in /usr/sbin, which is not on an ordinary user's PATH.
        if search_path is None:
            search_path = f"{os.environ.get('PATH', os.defpath)}:/usr/sbin:/usr/local/sbin"
        found = shutil.which("nginx", path=search_path)
        if found is None:
            raise StackError(
                "nginx not found: install it with `apt-get install nginx-light` (`make` does this when run as root)"
            )
        return found

    def config(self) -> str:
        folder = self.data_dir.resolve()
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in self.upstream_ports)
        return _NGINX_CONF.format(dir=folder, servers=servers, host=self.host, port=self.port)

    def start(self, timeout_s: float = 20.0) -> None:
        binary = self.binary()
        (self.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
        if _port_open(self.port):
            raise StackError(f"port {self.port} is already in use; stop what listens there or pick another")
        (self.data_dir / "nginx.conf").write_text(self.config())
        log = self.data_dir / "error.log"
        folder = str(self.data_dir.resolve())
        args = [binary, "-p", folder, "-c", "nginx.conf", "-e", str(log.resolve()), "-g", "daemon off;"]
        with (self.data_dir / "nginx.out").open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        _wait_for(lambda: _port_open(self.port), self.proc, "nginx", log, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            # SIGQUIT is nginx's graceful stop: requests in flight are finished.
            stop_process(self.proc, signal.SIGQUIT, timeout_s)
            self.proc = None

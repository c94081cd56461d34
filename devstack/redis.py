"""Private Redis for development, tests and the benchmark: one redis-server, or a Redis Cluster of several.

Each node runs as a child process in its own session, AOF on, with its data in a folder of ours.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from devstack.errors import StackError
from devstack.processes import Say, free_port, port_open, stop_process, wait_for

__all__ = ["RedisClusterServer", "RedisServer"]


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
        if port_open(self.port):
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
        wait_for(self._ping, self.proc, "redis-server", log, timeout_s)

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
            if port_open(bus):
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

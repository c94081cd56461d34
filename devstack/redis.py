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
        self.launch()
        self.wait_started(timeout_s)

    def launch(self) -> None:
        """Start the process without waiting for it to answer (``wait_started``)."""
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

    def wait_started(self, timeout_s: float = 20.0) -> None:
        assert self.proc is not None, "launch() first"
        wait_for(self._ping, self.proc, "redis-server", self.data_dir / "redis.log", timeout_s)

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


def _info(port: int, command: bytes = b"CLUSTER INFO") -> dict[str, str]:
    """A node's answer to CLUSTER INFO (or INFO ...) as a dict; empty while the node does not answer it."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(command + b"\r\n")
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
    """A private Redis Cluster of ``masters`` primaries with ``replicas`` replicas each on 127.0.0.1, AOF on,
    for demos and tests.

    Each node has its folder (``node-<port>``) with its AOF and ``nodes.conf``. The ports are kept in
    ``ports`` so that a restart brings the same nodes back: they find each other again from ``nodes.conf``
    and no `redis-cli --cluster create` is needed. Bus ports are chosen explicitly (``cluster-port``) rather
    than the default port + 10000, which can run past 65535 for a free ephemeral port. With replicas, a
    primary that stays unreachable for ``node_timeout_ms`` is replaced by its replica (a failover), and the
    cluster is only reported started once every replica has its primary's data (in sync).
    """

    def __init__(
        self,
        data_dir: Path,
        masters: int = 3,
        *,
        replicas: int = 0,
        node_timeout_ms: int = 5000,
        say: Say = print,
    ) -> None:
        if masters < 3:
            raise StackError("a Redis Cluster needs at least 3 masters")
        if replicas < 0:
            raise StackError(f"replicas per master must be 0 or more, got {replicas}")
        self.data_dir = data_dir
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.say = say
        self.nodes: list[RedisServer] = []
        self.ports: list[int] = []
        self.bus_ports: list[int] = []

    @property
    def size(self) -> int:
        """Nodes in all: the primaries and their replicas."""
        return self.masters * (1 + self.replicas)

    @property
    def url(self) -> str:
        """The cluster's URL, naming the first node that answers (any node knows the whole map)."""
        alive = (
            [port for port in self.ports[1:] if port_open(port)]
            if self.ports and not port_open(self.ports[0])
            else []
        )
        return f"redis+cluster://127.0.0.1:{(alive or self.ports)[0]}" if self.ports else ""

    @property
    def node_urls(self) -> list[str]:
        """A plain URL of each node that is a primary now (failovers move the role); every node while none
        answers."""
        primaries = [port for port in self.ports if _info(port, b"INFO replication").get("role") == "master"]
        return [f"redis://127.0.0.1:{port}/0" for port in primaries or self.ports]

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [node.proc for node in self.nodes if node.proc is not None]

    def node_on(self, port: int) -> RedisServer:
        """The node listening on ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise StackError(f"no node of this cluster listens on port {port}")

    def _plan(self) -> bool:
        """Pick the ports (kept ones on a restart); True when the cluster already exists."""
        marker = self.data_dir / "created"
        ports_file = self.data_dir / "ports"
        if marker.exists() and ports_file.exists():
            pairs = [line.split() for line in ports_file.read_text().splitlines() if line.strip()]
            if len(pairs) == self.size:
                self.ports = [int(p) for p, _ in pairs]
                self.bus_ports = [int(b) for _, b in pairs]
                return True
            raise StackError(
                f"{self.data_dir} holds a cluster of {len(pairs)} nodes, not {self.size} "
                f"({self.masters} masters with {self.replicas} replicas each): ask for that shape or remove "
                "that folder"
            )
        # No finished cluster here (first start, or a start that failed half way): begin from nothing.
        for stale in self.data_dir.glob("node-*"):
            shutil.rmtree(stale)
        chosen: set[int] = set()
        while len(chosen) < 2 * self.size:
            chosen.add(free_port())
        ordered = sorted(chosen)
        self.ports, self.bus_ports = ordered[: self.size], ordered[self.size :]
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
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    # A lost primary without a replica loses its slots; the rest keep serving theirs.
                    "--cluster-require-full-coverage", "no",
                    # A replica is promoted however long its link was down (a test kills primaries at will).
                    "--cluster-replica-validity-factor", "0",
                    # Never more than one replica moves to a primary that lost its own.
                    "--cluster-allow-replica-migration", "no",
                    # A replica's first sync starts at once (the default waits 5 s for more replicas to join).
                    "--repl-diskless-sync-delay", "0",
                ],
            )  # fmt: skip
            self.nodes.append(node)
        # The nodes load (or create) their data side by side: a start costs one node's time, not six.
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_started(timeout_s)
        if not existing:
            self._create()
        self._wait_ok(timeout_s)

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise StackError("redis-cli not found: install it with `apt-get install redis-tools`")
        result = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            out = (result.stdout + result.stderr).decode(errors="replace").strip()[-2000:]
            raise StackError(f"redis-cli --cluster create failed:\n{out}")
        (self.data_dir / "created").write_text("")

    def _ready(self) -> tuple[bool, str]:
        """Every node sees the whole cluster ok, each primary has its replicas, each replica is in sync."""
        shown: list[str] = []
        ready = True
        for port in self.ports:
            info = _info(port)
            repl = _info(port, b"INFO replication")
            ok = (
                info.get("cluster_state") == "ok"
                and info.get("cluster_slots_assigned") == "16384"
                and info.get("cluster_known_nodes") == str(self.size)
            )
            if repl.get("role") == "master":
                ok = ok and repl.get("connected_slaves") == str(self.replicas)
            elif repl.get("role") == "slave":
                ok = (
                    ok
                    and repl.get("master_link_status") == "up"
                    and repl.get("master_sync_in_progress") == "0"
                )
            else:
                ok = False
            ready = ready and ok
            shown.append(f"{port}: {info.get('cluster_state', 'no answer')} {repl.get('role', '')}".strip())
        return ready, ", ".join(shown)

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        shown = ""
        while time.monotonic() < deadline:
            ready, shown = self._ready()
            if ready:
                return
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise StackError(
                        f"redis-server on port {node.port} exited; see {node.data_dir}/redis.log"
                    )
            time.sleep(0.05)
        raise StackError(
            f"the Redis Cluster did not reach cluster_state:ok with its replicas in sync within {timeout_s:.0f} s "
            f"({shown})"
        )

    def wait_in_sync(self, timeout_s: float = 30.0) -> None:
        """Wait until the cluster is whole again (after a failover and the lost node's return, for example)."""
        self._wait_ok(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout_s)
        self.nodes.clear()

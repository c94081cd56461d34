"""`peak up`: the whole stack on this machine, stopped cleanly by Ctrl-C or SIGTERM.

With no PEAK_REDIS_URL/PEAK_DATABASE_URL it starts private servers under PEAK_DATA_DIR (a single redis-server,
or with ``--redis-cluster N`` a private N-master Redis Cluster); then it applies the migrations, starts the API
server (granian) and the background workers, and watches them. With ``--instances N`` it starts N API servers
on free loopback ports behind nginx, which listens on PEAK_HOST:PEAK_PORT. ``LocalStack`` is the same thing as
an object, for `peak bench` and `peak loadtest`.
"""

from __future__ import annotations

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

from devstack.errors import StackError
from devstack.nginx import NginxBalancer
from devstack.postgres import PostgresServer
from devstack.processes import free_port, stop_processes
from devstack.redis import RedisClusterServer, RedisServer
from kit.settings import Settings, SettingsError
from peak.serve import APP_FACTORY, server_command

__all__ = ["ENV_FILE", "INSTANCES_FILE", "LocalStack", "run_up", "wait_ready"]

ENV_FILE = "env"
INSTANCES_FILE = "instances"
_READY_TIMEOUT_S = 60.0


def _peak(*args: str) -> list[str]:
    """A `peak` subcommand as a child process: the app's own work (migrations, workers) never runs in ours."""
    return [sys.executable, "-m", "peak", *args]


def _say(text: str) -> None:
    print(f"peak: {text}", flush=True)


def _secret(data_dir: Path, name: str) -> str:
    """A random secret kept under the data folder (made on the first start), readable by this user only."""
    path = data_dir / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    os.chmod(path, 0o600)
    return path.read_text().strip()


def wait_ready(base_url: str, *servers: subprocess.Popen[bytes]) -> None:
    """Until ``base_url``/readyz answers 200; a server exiting meanwhile is an error."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for server in servers:
            if server.poll() is not None:
                raise StackError(
                    f"the API server exited with code {server.returncode} while starting; see its output"
                )
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=1) as answer:  # noqa: S310 - our own URL
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise StackError(f"the API did not answer {base_url}/readyz with 200 within {_READY_TIMEOUT_S:.0f} s")


class LocalStack:
    """Private servers (where no URL is set), migrations, the API server and the background workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        say: Callable[[str], None] = _say,
        output: IO[bytes] | None = None,
        redis_cluster: int = 0,
        replicas: int = 0,
        instances: int = 1,
        factory: str = APP_FACTORY,
    ) -> None:
        if redis_cluster and settings.redis_url is not None:
            raise StackError(
                "--redis-cluster starts a private cluster but PEAK_REDIS_URL is set: unset it, or drop the option "
                "and name your cluster as PEAK_REDIS_URL=redis+cluster://HOST:PORT"
            )
        if redis_cluster and redis_cluster < 3:
            raise StackError(f"--redis-cluster needs at least 3 masters, got {redis_cluster}")
        if replicas and not redis_cluster:
            raise StackError("--replicas needs --redis-cluster N: replicas are started for a private cluster")
        if replicas < 0:
            raise StackError(f"--replicas must be 0 or more, got {replicas}")
        if instances < 1:
            raise StackError(f"--instances must be at least 1, got {instances}")
        if instances > 1:
            NginxBalancer.binary()  # before anything starts: a missing nginx is said at once
        self.settings = settings
        self.say = say
        self.output = output
        self.redis_cluster = redis_cluster
        self.replicas = replicas
        self.instances = instances
        self.factory = factory
        self.env = {**os.environ, **(env or {})}
        self.data_dir = Path(settings.data_dir).resolve()
        self.redis: RedisServer | RedisClusterServer | None = None
        self.postgres: PostgresServer | None = None
        self.servers: list[subprocess.Popen[bytes]] = []
        self.instance_urls: list[str] = []
        self.nginx: NginxBalancer | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def base_url(self) -> str:
        return self.settings.public_base_url()

    def start(self) -> Settings:
        """Start everything and wait until /readyz answers 200; returns the settings with the server URLs."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = self._start_servers(self.settings)
        if settings.secret_key is None:
            settings = replace(settings, secret_key=_secret(self.data_dir, "secret_key"))
        # The payment provider's shared secret, so that `peak seckill pay` can sign callbacks out of the box.
        payment_secret = settings.environ.get("PEAK_PAYMENT_SECRET") or _secret(
            self.data_dir, "payment_secret"
        )
        self.settings = settings
        self.env.update(
            PEAK_REDIS_URL=settings.require("redis_url"),
            PEAK_DATABASE_URL=settings.require("database_url"),
            PEAK_SECRET_KEY=settings.require("secret_key"),
            PEAK_PAYMENT_SECRET=payment_secret,
        )
        self.say("applying migrations")
        self._migrate()
        # After the migration: its process is no server, and its metrics files would be added to theirs.
        metrics_dir = self.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env_file = self.data_dir / ENV_FILE
        env_file.touch(mode=0o600)
        env_file.chmod(0o600)  # it holds the payment secret
        env_file.write_text(
            f"PEAK_REDIS_URL={settings.redis_url}\nPEAK_DATABASE_URL={settings.database_url}\n"
            f"PEAK_PAYMENT_SECRET={payment_secret}\n"
        )
        if self.instances == 1:
            self.servers.append(self._spawn(server_command(settings, self.factory)))
            self.instance_urls = [self.base_url]
        else:
            self._start_instances(settings)
        for _ in range(settings.background_workers):
            self.workers.append(self._spawn(_peak("worker")))
        for url in self.instance_urls:
            self._wait_ready(url)
        if self.nginx is not None:
            self._wait_ready(self.base_url)
        return settings

    def _start_servers(self, settings: Settings) -> Settings:
        """A private Redis (or Redis Cluster) and PostgreSQL where no URL is set; the settings with their URLs."""
        if settings.redis_url is None and self.redis_cluster:
            cluster = RedisClusterServer(
                self.data_dir / "redis-cluster", self.redis_cluster, replicas=self.replicas, say=self.say
            )
            self.redis = cluster
            shape = f" with {self.replicas} replica(s) each" if self.replicas else ""
            self.say(
                f"starting a {self.redis_cluster}-master Redis Cluster{shape} (data in {cluster.data_dir})"
            )
            cluster.start()
            settings = replace(settings, redis_url=cluster.url)
        elif settings.redis_url is None:
            single = RedisServer(self.data_dir / "redis")
            self.redis = single
            self.say(f"starting redis-server on port {single.port} (data in {single.data_dir})")
            single.start()
            settings = replace(settings, redis_url=single.url)
        if settings.database_url is None:
            self.postgres = PostgresServer(self.data_dir / "postgres", say=self.say)
            self.say(f"starting PostgreSQL on port {self.postgres.port} (data in {self.postgres.data_dir})")
            self.postgres.start()
            settings = replace(settings, database_url=self.postgres.url)
        return settings

    def _migrate(self) -> None:
        """`peak migrate` with the stack's environment. In its own session like the workers: a Ctrl-C meant for
        `peak up` lets it finish, and `peak up` then stops as usual."""
        done = subprocess.run(
            _peak("migrate"), env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            check=False, start_new_session=True,
        )  # fmt: skip
        if done.returncode == 0:
            return
        text = done.stderr.strip() or done.stdout.strip()
        _, found, said = f"\n{text}".partition("\npeak: ")
        if not found:  # no message of its own: a crash, whose traceback is the message
            raise StackError(f"`peak migrate` exited with code {done.returncode}:\n{text}")
        # Its message, said by `peak up` as it was said in this process before; `peak` exits 2 for a bad setting.
        if done.returncode == 2:
            raise SettingsError(said)
        raise StackError(said)

    def _start_instances(self, settings: Settings) -> None:
        """Each instance on a free loopback port, trusting nginx's X-Forwarded-For; nginx on HOST:PORT."""
        ports: list[int] = []
        while len(ports) < self.instances:
            port = free_port()
            if port != settings.port and port not in ports:
                ports.append(port)
        for port in ports:
            instance = replace(settings, host="127.0.0.1", port=port)
            env = {**self.env, "PEAK_HOST": "127.0.0.1", "PEAK_PORT": str(port)}
            if not env.get("PEAK_TRUSTED_PROXIES"):
                env["PEAK_TRUSTED_PROXIES"] = "127.0.0.1"
            # One public URL for all: it is the tokens' issuer, which every instance must agree on.
            if not env.get("PEAK_PUBLIC_URL"):
                env["PEAK_PUBLIC_URL"] = self.base_url
            self.servers.append(self._spawn(server_command(instance, self.factory), env))
            self.instance_urls.append(f"http://127.0.0.1:{port}")
        (self.data_dir / INSTANCES_FILE).write_text("".join(f"{url}\n" for url in self.instance_urls))
        self.nginx = NginxBalancer(self.data_dir / "nginx", settings.host, settings.port, ports)
        self.say(f"starting nginx on {settings.host}:{settings.port} (config in {self.nginx.data_dir})")
        self.nginx.start()

    def _spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=self.output,
            start_new_session=True,
        )

    def _wait_ready(self, base_url: str) -> None:
        wait_ready(base_url, *self.servers)

    def _server_procs(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        found: list[tuple[str, subprocess.Popen[bytes]]] = []
        if isinstance(self.redis, RedisClusterServer):
            found += [("a Redis Cluster node", proc) for proc in self.redis.procs]
        elif self.redis is not None and self.redis.proc is not None:
            found.append(("redis-server", self.redis.proc))
        if self.postgres is not None and self.postgres.proc is not None:
            found.append(("PostgreSQL", self.postgres.proc))
        if self.nginx is not None and self.nginx.proc is not None:
            found.append(("nginx", self.nginx.proc))
        return found

    def check(self) -> str | None:
        """What died, if it cannot be replaced; a dead background worker is replaced and reported."""
        for url, server in zip(self.instance_urls, self.servers, strict=False):
            if server.poll() is not None:
                return f"the API server at {url} exited with code {server.returncode}"
        for name, proc in self._server_procs():
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        for i, worker in enumerate(self.workers):
            if worker.poll() is not None:
                self.say(f"background worker exited with code {worker.returncode}; starting a new one")
                self.workers[i] = self._spawn(_peak("worker"))
        return None

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        names = {w.pid: "a background worker" for w in self.workers}
        names |= {
            s.pid: f"the API server at {url}"
            for url, s in zip(self.instance_urls, self.servers, strict=False)
        }
        for child in stop_processes([*self.workers, *self.servers], signal.SIGTERM, 8.0):
            self.say(f"{names.get(child.pid, child.pid)} did not stop within 8 s of SIGTERM: killed")
        self.workers.clear()
        self.servers.clear()
        if self.postgres is not None:
            self.postgres.stop()
        if self.redis is not None:
            self.redis.stop()
        (self.data_dir / ENV_FILE).unlink(missing_ok=True)
        (self.data_dir / INSTANCES_FILE).unlink(missing_ok=True)


def run_up(settings: Settings, *, redis_cluster: int = 0, replicas: int = 0, instances: int = 1) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack(settings, redis_cluster=redis_cluster, replicas=replicas, instances=instances)
    try:
        settings = stack.start()
        base = stack.base_url
        if stack.nginx is None:
            _say(f"API        {base}  ({settings.workers} processes)")
        else:
            _say(f"API        {base}  (nginx, round-robin over {instances} instances)")
            for url in stack.instance_urls:
                _say(f"instance   {url}  ({settings.workers} processes)")
        _say(f"ready      {base}/readyz   metrics {base}/metrics   OpenAPI {base}/openapi.json")
        _say(f"console    {base}/console/  (sign in as an SSO admin: `peak sso grant USER admin`)")
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

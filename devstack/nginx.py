"""nginx in front of several API instances, for `peak up --instances N`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from devstack.errors import StackError
from devstack.processes import port_open, stop_process, wait_for

__all__ = ["NginxBalancer"]

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
        if port_open(self.port):
            raise StackError(f"port {self.port} is already in use; stop what listens there or pick another")
        (self.data_dir / "nginx.conf").write_text(self.config())
        log = self.data_dir / "error.log"
        folder = str(self.data_dir.resolve())
        args = [binary, "-p", folder, "-c", "nginx.conf", "-e", str(log.resolve()), "-g", "daemon off;"]
        with (self.data_dir / "nginx.out").open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        wait_for(lambda: port_open(self.port), self.proc, "nginx", log, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            # SIGQUIT is nginx's graceful stop: requests in flight are finished.
            stop_process(self.proc, signal.SIGQUIT, timeout_s)
            self.proc = None

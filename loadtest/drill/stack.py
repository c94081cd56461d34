"""The drill's private stack: its own redis-server and PostgreSQL, and the API and worker processes a scenario
starts on them (``peak serve``, ``peak worker``), all stopped at the end whatever happened.

Scenarios start the processes they need with the environment they need (an API that reaches Redis through a
fault proxy, two API processes, settings turned down for a short run), so the runner starts none. After each
scenario the runner stops every process it started and starts Redis or PostgreSQL again if they were left down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devstack.postgres import PostgresServer
from devstack.processes import free_port, port_open
from devstack.processes import stop_processes as stop_all
from devstack.redis import RedisServer
from loadtest.drill.scenario import Say
from loadtest.seed import bearer, create_shoppers, iso

__all__ = ["Api", "Stack"]

# Every shopper of a drill comes from this one address, and buys as fast as it can.
# The API's access log line of a purchase: "POST /seckill/events/{event_id}/orders 202 12.3ms <request id>".
_PURCHASE_LINE = "POST /seckill/events/{event_id}/orders "

_DRILL_ENV = {
    # API processes log every request: their purchase lines give the server's answer times.
    "PEAK_ACCESS_LOG": "1",
    "PEAK_SECKILL_IP_RATE_PER_S": "1000000",
    "PEAK_SECKILL_USER_RATE_PER_S": "1000000",
    "PEAK_SSO_SIGNUPS_PER_IP_PER_HOUR": "0",
    # Shoppers are made fast; the hashing cost is not what a drill tests.
    "PEAK_SSO_ARGON2_MEMORY_KIB": "1024",
    "PEAK_SSO_ARGON2_TIME_COST": "1",
    "PEAK_SSO_ISSUER": "http://peak.drill",
    "PEAK_PUBLIC_URL": "http://peak.drill",
}


def _peak(*args: str) -> list[str]:
    return [sys.executable, "-m", "peak", *args]


@dataclass
class Api:
    """One `peak serve` process (granian and its workers, in a session of their own)."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def purchase_times_s(self) -> list[float]:
        """How long the server took for each purchase it answered, from its access log (lines are written up to
        ~100 ms late): what the server did, whatever a busy load generator adds on its side."""
        times = []
        for line in self.log.read_text(errors="replace").splitlines():
            if _PURCHASE_LINE in line:
                with contextlib.suppress(ValueError, IndexError):
                    times.append(float(line.rsplit("ms ", 1)[0].rsplit(" ", 1)[1]) / 1000)
        return times

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (granian's workers too) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Stack:
    def __init__(self, folder: Path, *, say: Say) -> None:
        self.folder = folder
        self.say = say
        self.redis = RedisServer(folder / "redis")
        self.postgres = PostgresServer(folder / "postgres", durable=True, say=lambda _: None)
        self.admin_token = secrets.token_urlsafe(24)
        self.payment_secret = secrets.token_urlsafe(24)
        self.env: dict[str, str] = {}
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- the servers ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.say(f"starting redis-server and PostgreSQL in {self.folder}")
        self.redis.start()
        self.postgres.start()
        self.env = {
            **os.environ,
            **_DRILL_ENV,
            "PEAK_REDIS_URL": self.redis.url,
            "PEAK_DATABASE_URL": self.postgres.url,
            "PEAK_SECRET_KEY": secrets.token_urlsafe(32),
            "PEAK_ADMIN_TOKEN": self.admin_token,
            "PEAK_PAYMENT_SECRET": self.payment_secret,
            "PEAK_DATA_DIR": str(self.folder / "data"),
        }
        done = subprocess.run(
            _peak("migrate"), env=self.env, capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"`peak migrate` failed: {done.stderr.strip() or done.stdout.strip()}")

    def heal(self) -> None:
        """Redis and PostgreSQL running again, whatever the last scenario left (the next one needs them)."""
        if not port_open(self.redis.port):
            self.say("redis-server was left stopped: starting it again")
            self.redis.stop()
            self.redis.start()
        if not port_open(self.postgres.port):
            self.say("PostgreSQL was left stopped: starting it again")
            self.postgres.stop()
            self.postgres.start()

    def stop_processes(self) -> None:
        stop_all(self._procs, signal.SIGTERM, 8.0)
        self._procs.clear()

    def stop(self) -> None:
        self.stop_processes()
        self.postgres.stop()
        self.redis.stop()

    def scratch(self, name: str) -> Path:
        """A folder of the scenario's own (its logs, its own servers)."""
        path = self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- processes on the stack -------------------------------------------------------------------------------

    def spawn(self, *args: str, env: Mapping[str, str] | None = None, log: str) -> subprocess.Popen[bytes]:
        """`peak ARGS` on the stack (``env`` over the stack's), output to ``log`` in the folder; stopped by
        the runner after the scenario."""
        out = (self.folder / log).open("ab")
        proc = subprocess.Popen(
            _peak(*args), env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        out.close()
        self._procs.append(proc)
        return proc

    async def serve(
        self, *, env: Mapping[str, str] | None = None, workers: int = 1, log: str = "api.log"
    ) -> Api:
        """A `peak serve` process on a free port, once its /readyz answers 200."""
        port = free_port()
        proc = self.spawn(
            "serve", env={"PEAK_PORT": str(port), "PEAK_WORKERS": str(workers), **(env or {})}, log=log
        )
        api = Api(f"http://127.0.0.1:{port}", proc, self.folder / log)
        await self.wait_ready(api)
        return api

    def worker(
        self, *, env: Mapping[str, str] | None = None, log: str = "worker.log"
    ) -> subprocess.Popen[bytes]:
        """A `peak worker` process (order writers, payment timeouts, ...)."""
        return self.spawn("worker", env=env, log=log)

    async def wait_ready(self, api: Api, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if not api.alive:
                    raise RuntimeError(f"the API at {api.url} exited with code {api.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{api.url}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the API at {api.url} was not ready within {timeout_s:g} s")

    # -- data --------------------------------------------------------------------------------------------------

    async def shoppers(self, api: Api, count: int, *, prefix: str) -> list[dict[str, str]]:
        """Bearer headers of ``count`` new shoppers."""
        made = await create_shoppers(api.url, count, prefix=f"{prefix}-{secrets.token_hex(3)}")
        return [bearer(token) for _, token in made]

    async def event(self, api: Api, *, stock: int, per_user_limit: int = 1, **fields: Any) -> int:
        """An unticketed event on sale from now for two hours; its id."""
        now = datetime.now(UTC)
        body = {
            "sku": f"drill-{secrets.token_hex(4)}", "title": "drill", "price": 100, "stock": stock,
            "per_user_limit": per_user_limit, "starts_at": iso(now - timedelta(seconds=5)),
            "ends_at": iso(now + timedelta(hours=2)), "ticket_required": False, **fields,
        }  # fmt: skip
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(f"{api.url}/seckill/events", json=body, headers=bearer(self.admin_token))
        if answer.status_code != 201:
            raise RuntimeError(f"could not create an event: {answer.status_code} {answer.text}")
        return int(answer.json()["id"])

    async def stats(self, api: Api, event_id: int) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.get(
                f"{api.url}/seckill/events/{event_id}/stats", headers=bearer(self.admin_token)
            )
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    async def drained(self, api: Api, event_id: int, *, timeout_s: float = 60.0) -> dict[str, Any]:
        """The event's stats once no order is queued (a worker must be running), or at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = await self.stats(api, event_id)
            if not stats["queued"] or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.25)

    async def orders(self, event_id: int) -> list[tuple[str, str]]:
        """(order id, user id) of every order of the event in PostgreSQL."""
        conn = await asyncpg.connect(self.postgres.url)
        try:
            rows = await conn.fetch(
                "SELECT order_id::text AS o, user_id AS u FROM seckill_orders WHERE event_id = $1", event_id
            )
        finally:
            await conn.close()
        return [(r["o"], r["u"]) for r in rows]

    def reconcile(self, event_id: int) -> tuple[bool, str]:
        """`peak seckill reconcile EVENT`: clean or not, and its last line."""
        done = subprocess.run(
            _peak("seckill", "reconcile", str(event_id)), env=self.env, capture_output=True, text=True,
            check=False, timeout=60,
        )  # fmt: skip
        lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
        return done.returncode == 0, (lines[-1] if lines else "")

"""Double-11 load scenarios for locust.

Run through `peak loadtest` (which seeds the data and checks the results), or by hand:
``PEAK_LOADTEST_SEED=seed.json locust -f loadtest/locustfile.py --host URL``.
The seed file (written by `peak loadtest`) names the shoppers' credentials, the sale event, the SKU with
reviews, the introspection client and the admin token.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import os
import random
import threading
import time
import uuid
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, task

from sso.client import TokenValidator, jwks_from_url

_SEED: dict[str, Any] = json.loads(open(os.environ["PEAK_LOADTEST_SEED"]).read())  # noqa: SIM115
_ACCOUNTS = itertools.cycle(_SEED["usernames"])
_ACCOUNTS_LOCK = threading.Lock()
_PASSWORD: str = _SEED["password"]
_EVENT: str = _SEED["event_id"]
_SKU: str = _SEED["sku"]
_ADMIN = {"Authorization": f"Bearer {_SEED['admin_token']}"}
_BASIC = "Basic " + base64.b64encode(f"{_SEED['client_id']}:{_SEED['client_secret']}".encode()).decode()
_SHARED_TOKENS: list[str] = []


def _next_account() -> str:
    with _ACCOUNTS_LOCK:
        return str(next(_ACCOUNTS))


def _login(user: FastHttpUser) -> str:
    """Log a seeded shopper in; its access token, or "" (the failure is already reported)."""
    with user.client.post(
        "/sso/login",
        json={"username": _next_account(), "password": _PASSWORD},
        catch_response=True,
        name="/sso/login",
    ) as r:
        return str(r.json()["access_token"]) if _check(r, 200) else ""


def _check(response: Any, *expected: int) -> bool:
    """Mark a response failed when it is not expected; any 5xx but an intentional `degraded` is a server error."""
    status = response.status_code
    if status in expected:
        response.success()
        return True
    if status == 503 and b'"degraded"' in (response.content or b""):
        response.success()
        return False
    if status >= 500 or status == 0:
        response.failure(f"server error {status}")
    else:
        response.failure(f"unexpected {status}: {(response.text or '')[:120]}")
    return False


class Shopper(FastHttpUser):
    """Logs in once, reads the event, buys, polls its order and pays most of the time."""

    weight = 6
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.bought = False
        self.token = _login(self)
        if self.token:
            _SHARED_TOKENS.append(self.token)
            del _SHARED_TOKENS[:-500]

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @task(3)
    def read_event(self) -> None:
        with self.client.get(
            f"/seckill/events/{_EVENT}", catch_response=True, name="/seckill/events/{id}"
        ) as r:
            _check(r, 200)

    @task(2)
    def buy(self) -> None:
        if not self.token or self.bought:
            return
        headers = {**self._auth(), "Idempotency-Key": str(uuid.uuid4())}
        with self.client.post(
            f"/seckill/events/{_EVENT}/orders",
            headers=headers,
            catch_response=True,
            name="/seckill/events/{id}/orders",
        ) as r:
            if r.status_code == 409 or r.status_code == 429:
                r.success()  # sold out, limit reached, rate limited: answers a sale gives
                self.bought = r.status_code == 409
                return
            if not _check(r, 202):
                return
            order_id = r.json()["order_id"]
        self.bought = True
        status = "queued"
        for _ in range(20):
            with self.client.get(
                f"/seckill/orders/{order_id}",
                headers=self._auth(),
                catch_response=True,
                name="/seckill/orders/{id}",
            ) as r:
                if not _check(r, 200):
                    return
                status = r.json()["status"]
            if status != "queued":
                break
            time.sleep(0.25)
        if status == "pending_payment" and random.random() < 0.8:
            with self.client.post(
                f"/seckill/orders/{order_id}/pay",
                headers=self._auth(),
                catch_response=True,
                name="/seckill/orders/{id}/pay",
            ) as r:
                _check(r, 200)


class Subsystem(FastHttpUser):
    """Another subsystem checking shoppers' tokens: by introspection and with the local validator."""

    weight = 2
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        # The validator is asyncio code; each simulated subsystem drives it on an event loop of its own.
        self.loop = asyncio.new_event_loop()
        jwks = jwks_from_url(str(self.host).rstrip("/") + "/.well-known/jwks.json")
        self.validator = TokenValidator(issuer=_SEED["issuer"], audience=_SEED["audience"], keys=jwks)

    def on_stop(self) -> None:
        self.loop.close()

    @task
    def introspect(self) -> None:
        if not _SHARED_TOKENS:
            return
        token = random.choice(_SHARED_TOKENS)
        with self.client.post(
            "/sso/introspect",
            data=f"token={token}",
            headers={"Authorization": _BASIC, "Content-Type": "application/x-www-form-urlencoded"},
            catch_response=True,
            name="/sso/introspect",
        ) as r:
            _check(r, 200)

    @task
    def validate_locally(self) -> None:
        if not _SHARED_TOKENS:
            return
        start = time.perf_counter()
        exception: Exception | None = None
        try:
            self.loop.run_until_complete(self.validator.validate(random.choice(_SHARED_TOKENS)))
        except Exception as exc:  # reported to locust as a failure of this request type
            exception = exc
        self.environment.events.request.fire(
            request_type="LOCAL",
            name="TokenValidator.verify",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )


class Browser(FastHttpUser):
    """Non-core traffic: reading reviews and writing to customer service."""

    weight = 3
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.token = _login(self)

    @task(5)
    def reviews(self) -> None:
        with self.client.get(f"/reviews/{_SKU}", catch_response=True, name="/reviews/{sku}") as r:
            _check(r, 200)

    @task(1)
    def write_to_support(self) -> None:
        if not self.token:
            return
        with self.client.post(
            "/cs/messages",
            json={"text": "where is my order?"},
            headers={"Authorization": f"Bearer {self.token}"},
            catch_response=True,
            name="/cs/messages",
        ) as r:
            _check(r, 201, 202)


class Ops(FastHttpUser):
    """Ops watching the switches and now and then shedding reviews for a moment."""

    weight = 1
    fixed_count = 1
    wait_time = between(2, 5)

    @task(5)
    def switches(self) -> None:
        with self.client.get(
            "/degrade/switches", headers=_ADMIN, catch_response=True, name="/degrade/switches"
        ) as r:
            _check(r, 200)

    @task(1)
    def flip(self) -> None:
        for mode in ("shed", "auto"):
            with self.client.put(
                "/degrade/switches/reviews",
                json={"mode": mode, "reason": "loadtest: ops drill"},
                headers=_ADMIN,
                catch_response=True,
                name="/degrade/switches/{name}",
            ) as r:
                _check(r, 200)
            time.sleep(1)


class Double11(LoadTestShape):
    """Warm-up, a spike at the sale start, a sustained peak, then cool-down; scaled to PEAK_LOADTEST_DURATION_S."""

    def tick(self) -> tuple[int, float] | None:
        total = float(os.environ.get("PEAK_LOADTEST_DURATION_S", "60"))
        peak = int(os.environ.get("PEAK_LOADTEST_USERS", "200"))
        rate = float(os.environ.get("PEAK_LOADTEST_SPAWN_RATE", "50"))
        t = float(self.get_run_time()) / total  # type: ignore[no-untyped-call]
        if t >= 1:
            return None
        if t < 0.2:  # warm-up
            return max(1, math.ceil(peak * 0.1)), rate
        if t < 0.3:  # the sale starts: everyone at once
            return peak, rate * 4
        if t < 0.8:  # sustained peak
            return max(1, math.ceil(peak * 0.7)), rate
        return max(1, math.ceil(peak * 0.1)), rate  # cool-down

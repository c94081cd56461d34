"""Double-11 load scenarios for locust.

Run through `peak loadtest` (which seeds the data and checks the results), or by hand:
``PEAK_LOADTEST_SEED=seed.json locust -f loadtest/locustfile.py --host URL``.
The seed file (written by `peak loadtest`) names the shoppers' credentials, the sale event (which starts a
fifth of the way into the run: the countdown first), the SKU with reviews, the introspection client, the admin
token and, when the server has one, the payment provider's secret.

A shopper is a client author's reference: it polls the event view with the ETag it last got (304 while
nothing changes) until the sale starts, keeps its session alive by refreshing at ~80 % of ``expires_in`` (with
jitter), fetches its purchase ticket once the sale has started, buys with it (waiting ``Retry-After`` seconds
on 409 ``not_admitted``), long-polls its order until it is written, and pays through the provider's callback.
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
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from locust import FastHttpUser, LoadTestShape, between, task

from seckill.signature import HEADER as SIGNATURE_HEADER
from seckill.signature import sign
from sso.client import Principal, TokenValidator, jwks_from_url

_SEED: dict[str, Any] = json.loads(open(os.environ["PEAK_LOADTEST_SEED"]).read())  # noqa: SIM115
_ACCOUNTS = itertools.cycle(_SEED["usernames"])
_ACCOUNTS_LOCK = threading.Lock()
_PASSWORD: str = _SEED["password"]
_EVENT: str = _SEED["event_id"]
_PRICE: int = int(_SEED.get("price", 0))
_SKU: str = _SEED["sku"]
_ADMIN = {"Authorization": f"Bearer {_SEED['admin_token']}"}
_BASIC = "Basic " + base64.b64encode(f"{_SEED['client_id']}:{_SEED['client_secret']}".encode()).decode()
_PAYMENT_SECRET: str = _SEED.get("payment_secret", "")
# The keep-alive period: 80 % of the access token's lifetime, or this when shorter (a run of 40 s would
# otherwise never refresh).
_KEEPALIVE_S = float(os.environ.get("PEAK_LOADTEST_KEEPALIVE_S", "0") or 0)
# The long poll's wait (the server allows up to 30 s).
_WAIT_S = 25
_SHARED_TOKENS: list[str] = []

T = TypeVar("T")


def _next_account() -> str:
    with _ACCOUNTS_LOCK:
        return str(next(_ACCOUNTS))


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


def _code(response: Any) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _retry_after_s(response: Any, default: float = 1.0) -> float:
    try:
        return min(30.0, max(0.0, float(response.headers.get("Retry-After") or default)))
    except ValueError:
        return default


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _login(user: FastHttpUser) -> dict[str, Any]:
    """Log a seeded shopper in; its tokens, or {} (the failure is already reported)."""
    with user.client.post(
        "/sso/login",
        json={"username": _next_account(), "password": _PASSWORD},
        catch_response=True,
        name="/sso/login",
    ) as r:
        if not _check(r, 200):
            return {}
        tokens: dict[str, Any] = r.json()
    _SHARED_TOKENS.append(str(tokens["access_token"]))
    del _SHARED_TOKENS[:-500]
    return tokens


class Shopper(FastHttpUser):
    """The countdown page, the keep-alive, the ticket, the purchase, the long-polled order and the payment."""

    weight = 6
    wait_time = between(0.5, 1.5)  # the countdown page's polling

    def on_start(self) -> None:
        self.tokens = _login(self)
        self.etag = ""
        self.event_status = ""
        self.done = False
        self.refresh_at = self._next_refresh()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    def _next_refresh(self) -> float:
        lifetime = 0.8 * float(self.tokens.get("expires_in", 900))
        if _KEEPALIVE_S:
            lifetime = min(lifetime, _KEEPALIVE_S)
        return time.monotonic() + lifetime * random.uniform(0.85, 1.0)

    @task
    def shop(self) -> None:
        if not self.tokens:
            return
        if time.monotonic() >= self.refresh_at:
            self._keep_alive()
        self._read_event()
        if self.event_status == "active" and not self.done:
            self._buy()

    def _keep_alive(self) -> None:
        """POST /sso/token before the access token expires: a new pair, and the session slides."""
        with self.client.post(
            "/sso/token",
            data={"grant_type": "refresh_token", "refresh_token": self.tokens["refresh_token"]},
            catch_response=True,
            name="/sso/token (keep-alive)",
        ) as r:
            if _check(r, 200):
                self.tokens = r.json()
                _SHARED_TOKENS.append(str(self.tokens["access_token"]))
        self.refresh_at = self._next_refresh()

    def _read_event(self) -> None:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        with self.client.get(
            f"/seckill/events/{_EVENT}", headers=headers, catch_response=True, name="/seckill/events/{id}"
        ) as r:
            if not _check(r, *((200, 304) if self.etag else (200,))):
                return
            if r.status_code == 304:
                r.request_meta["name"] = "/seckill/events/{id} (304)"  # counted apart: the countdown's answer
            else:
                self.etag = str(r.headers.get("ETag") or "")
                self.event_status = str(r.json()["status"])
        if self.event_status in ("sold_out", "ended"):
            self.done = True

    def _ticket(self) -> dict[str, Any] | None:
        with self.client.get(
            f"/seckill/events/{_EVENT}/ticket", headers=self._auth(), catch_response=True,
            name="/seckill/events/{id}/ticket",
        ) as r:  # fmt: skip
            if r.status_code == 409 and _code(r) in ("not_started", "ended"):
                r.success()  # not_started: this process saw the start a moment before that one, come back
                self.done = _code(r) == "ended"
                return None
            return dict(r.json()) if _check(r, 200) else None

    def _buy(self) -> None:
        ticket = self._ticket()
        if ticket is None:
            return
        # The ticket says when this shopper's turn comes (the admission spread): come back then.
        time.sleep(max(0.0, min(30.0, _seconds(ticket["admit_at"]) - _seconds(ticket["server_time"]))))
        headers = {
            **self._auth(),
            "Idempotency-Key": str(uuid.uuid4()),
            "X-Purchase-Ticket": ticket["ticket"],
        }
        for _ in range(10):
            with self.client.post(
                f"/seckill/events/{_EVENT}/orders", headers=headers, catch_response=True,
                name="/seckill/events/{id}/orders",
            ) as r:  # fmt: skip
                code = _code(r) if r.status_code in (409, 429) else ""
                if code in ("not_admitted", "rate_limited"):
                    r.success()
                    time.sleep(_retry_after_s(r))
                    continue
                if code in ("sold_out", "limit_reached", "ended"):
                    r.success()  # answers a sale gives
                    self.done = True
                    return
                if not _check(r, 202):
                    return
                order_id = str(r.json()["order_id"])
            self.done = True
            self._follow(order_id)
            return

    def _follow(self, order_id: str) -> None:
        """Long-poll the order until the workers have written it, then pay most of the time."""
        status = "queued"
        for _ in range(4):
            with self.client.get(
                f"/seckill/orders/{order_id}?wait={_WAIT_S}&status={status}", headers=self._auth(),
                catch_response=True, name="/seckill/orders/{id}?wait",
            ) as r:  # fmt: skip
                if not _check(r, 200):
                    return
                status = str(r.json()["status"])
            if status != "queued":
                break
        if status == "pending_payment" and _PAYMENT_SECRET and random.random() < 0.8:
            self._pay(order_id)

    def _pay(self, order_id: str) -> None:
        """As the payment provider would: its signed server-to-server notification (a shopper cannot)."""
        body = json.dumps({"payment_id": str(uuid.uuid4()), "order_id": order_id, "amount": _PRICE})
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(_PAYMENT_SECRET.encode(), body.encode()),
        }
        with self.client.post(
            "/seckill/payments/callback", data=body, headers=headers, catch_response=True,
            name="/seckill/payments/callback",
        ) as r:  # fmt: skip
            _check(r, 200)


class _Loop:
    """One asyncio event loop per locust process for the asyncio validator. Locust's users are greenlets on
    one OS thread, which asyncio allows one running loop: each user running a loop of its own failed with
    "Cannot run the event loop while another loop is running" whenever one greenlet waited inside its loop
    (a key fetch) while another entered its own. Here one greenlet at a time runs the shared loop (gevent's
    patched lock: the others wait cooperatively); a local validation is microseconds, so nobody waits long."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of the coroutine ``make()`` returns, made only once this greenlet holds the loop (a user
        stopped while waiting leaves no coroutine behind, never awaited)."""
        with self._lock:
            task = self._loop.create_task(make())
            try:
                return self._loop.run_until_complete(task)
            except BaseException:
                task.cancel()  # a user stopped mid-validation: the next run finishes the cancellation
                raise


_LOOP = _Loop()
_VALIDATORS: dict[str, TokenValidator] = {}


def _validator(host: str) -> TokenValidator:
    """One validator per locust process (and host): its verified-token cache is shared like a subsystem's."""
    if host not in _VALIDATORS:
        jwks = jwks_from_url(host.rstrip("/") + "/.well-known/jwks.json")
        _VALIDATORS[host] = TokenValidator(issuer=_SEED["issuer"], audience=_SEED["audience"], keys=jwks)
    return _VALIDATORS[host]


class Subsystem(FastHttpUser):
    """Another subsystem checking shoppers' tokens: by introspection and with the local validator."""

    weight = 2
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.validator = _validator(str(self.host))

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
            token = random.choice(_SHARED_TOKENS)
            principal: Principal = _LOOP.run(lambda: self.validator.validate(token))
            if not principal.user_id:
                exception = ValueError("the validator answered a principal without a user")
        except Exception as exc:  # reported to locust as a failure of this request type
            exception = exc
        self.environment.events.request.fire(
            request_type="LOCAL",
            name="TokenValidator.validate",
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
        self.token = str(_login(self).get("access_token", ""))

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

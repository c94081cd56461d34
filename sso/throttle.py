"""Login throttles that attackers cannot turn against users (OWASP's device cookies).

Failures are counted per account, per (account, client network) and per client network. The first two hold
the account's unknown devices (from that network, or from everywhere) until their window ends; the network's
daily budget only slows its unknown devices (a growing gate, ``sso/lua/throttle_network.lua``). A known device
(a device cookie from an earlier success, ``sso.devices``) is judged by its own failures only: attempts from
other devices or from its own network never hold it.

Attempts count before the password is checked and successes give them back. A check is one script call on the
account's slot and one on the network's, sent together (one round trip); only a refused or doubtful attempt
needs a second.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import ConnectionError, TimeoutError

from kit.redis import RedisClient
from sso import devices, keys, scripts, throttle_scripts
from sso.errors import IpBudgetSpent, ThrottleUnavailable
from sso.settings import SsoSettings

__all__ = ["LoginThrottle", "Ticket", "network_of"]

_UNREACHABLE = (ConnectionError, TimeoutError)
_NOT_AN_ADDRESS = re.compile(r"[^A-Za-z0-9.:_-]")


def network_of(ip: str) -> str:
    """What the per-network counters count: an IPv4 address, or the /64 of an IPv6 one (one subscriber's
    prefix; a client picks any address in it at will)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return _NOT_AN_ADDRESS.sub("_", ip)[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True)
class Ticket:
    """A counted login attempt, to report its success with."""

    account: str
    network: str
    tokens: tuple[str, ...]
    known: str | None = None


class LoginThrottle:
    def __init__(self, redis: RedisClient, settings: SsoSettings) -> None:
        self._redis = redis
        self._on = settings.throttle
        self._signups_per_hour = settings.signups_per_ip_per_hour
        self.device_ttl_s = settings.device_ttl_s
        self._limits = throttle_scripts.ThrottleLimits(
            account_failures=settings.account_max_failures,
            account_network_failures=settings.account_ip_max_failures,
            account_window_s=settings.account_window_s,
            device_failures=settings.device_max_failures,
            device_ttl_ms=settings.device_ttl_s * 1000,
            devices_kept=keys.DEVICES_KEPT,
            network_failures=settings.ip_daily_failures,
            day_s=86400,
            network_max_delay_ms=settings.ip_max_delay_s * 1000,
        )

    async def check(self, account: str, ip: str, tokens: list[str]) -> Ticket:
        """Count an attempt of ``account`` (its normalised name) from ``ip`` with the device tokens the
        client sent; AccountLocked or IpBudgetSpent when this client must wait."""
        ticket = Ticket(account, network_of(ip), tuple(tokens))
        if not self._on:
            return ticket
        digests = [devices.digest(t) for t in tokens]
        now_ms = int(time.time() * 1000)
        verdict, past_budget = await asyncio.gather(
            throttle_scripts.account_attempt(
                self._redis, account, ticket.network, digests, self._limits, now_ms
            ),
            throttle_scripts.network_attempt(
                self._redis, ticket.network, self._limits, with_device=bool(tokens)
            ),
            return_exceptions=True,
        )
        if isinstance(verdict, _UNREACHABLE) or isinstance(past_budget, _UNREACHABLE):
            raise ThrottleUnavailable()
        if isinstance(verdict, BaseException):
            raise verdict  # a held account is held; the network's count stands, like a failure
        if verdict.known is not None:
            return Ticket(account, ticket.network, ticket.tokens, tokens[verdict.known])
        if isinstance(past_budget, BaseException):
            await self._unreachable_is_unavailable(self._give_back_account(ticket, now_ms))
            raise past_budget
        if past_budget:
            await self._unreachable_is_unavailable(self._gate(ticket, now_ms))
        return ticket

    async def _gate(self, ticket: Ticket, now_ms: int) -> None:
        try:
            await throttle_scripts.network_gate(self._redis, ticket.network, self._limits)
        except IpBudgetSpent:
            await self._give_back_account(ticket, now_ms)
            raise

    async def _give_back_account(self, ticket: Ticket, now_ms: int) -> None:
        await throttle_scripts.account_outcome(
            self._redis, "give_back", ticket.account, ticket.network, "", self._limits, now_ms
        )

    async def give_back(self, ticket: Ticket) -> None:
        """The attempt was not decided (PostgreSQL was gone): it counts against nobody."""
        if not self._on:
            return
        digest = devices.digest(ticket.known) if ticket.known else ""
        now_ms = int(time.time() * 1000)
        await self._unreachable_is_unavailable(
            asyncio.gather(
                throttle_scripts.account_outcome(self._redis, "give_back", ticket.account, ticket.network, digest,
                                        self._limits, now_ms),
                throttle_scripts.network_give_back(self._redis, ticket.network, self._limits),
            )
        )  # fmt: skip

    async def succeeded(self, ticket: Ticket) -> str | None:
        """Give the attempt back and remember the device: the device cookie's value (None when off)."""
        if not self._on:
            return None
        token = ticket.known or devices.new_token()
        mode: Literal["known_ok", "unknown_ok"] = "known_ok" if ticket.known else "unknown_ok"
        now_ms = int(time.time() * 1000)
        await self._unreachable_is_unavailable(
            asyncio.gather(
                throttle_scripts.account_outcome(self._redis, mode, ticket.account, ticket.network,
                                        devices.digest(token), self._limits, now_ms),
                throttle_scripts.network_give_back(self._redis, ticket.network, self._limits),
            )
        )  # fmt: skip
        return devices.cookie_value(token, ticket.tokens)

    async def signup(self, ip: str) -> None:
        """Count a registration from ``ip``'s network; TooManySignups past the hourly limit."""
        if self._signups_per_hour:
            await self._unreachable_is_unavailable(
                scripts.signup(self._redis, network_of(ip), self._signups_per_hour)
            )

    @staticmethod
    async def _unreachable_is_unavailable(call: Any) -> Any:
        # Without Redis nothing can be counted: logins wait (503) rather than go unthrottled.
        try:
            return await call
        except _UNREACHABLE:
            raise ThrottleUnavailable() from None

"""The login throttle's two scripts (``sso/lua/throttle_account.lua``, ``throttle_network.lua``, bound in
``sso/scripts.py``): the KEYS and ARGV each takes, and what its reply means (``sso/throttle.py`` decides when
to call them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from kit.lua import EncodableT
from kit.redis import RedisClient
from sso import keys
from sso.errors import AccountLocked, IpBudgetSpent
from sso.scripts import THROTTLE_ACCOUNT, THROTTLE_NETWORK

__all__ = [
    "AccountVerdict",
    "ThrottleLimits",
    "account_attempt",
    "account_outcome",
    "network_attempt",
    "network_gate",
    "network_give_back",
]


class ThrottleLimits(NamedTuple):
    """The login throttle's settings, in the order its scripts take them."""

    account_failures: int
    account_network_failures: int
    account_window_s: int
    device_failures: int
    device_ttl_ms: int
    devices_kept: int
    network_failures: int
    day_s: int
    network_max_delay_ms: int


class AccountVerdict(NamedTuple):
    """An attempt counted on the account side: against device ``known`` (an index into the digests sent),
    or, when ``known`` is None, against the account and the pair."""

    known: int | None


def _account_args(mode: str, limits: ThrottleLimits, now_ms: int, digests: Sequence[str]) -> list[EncodableT]:
    return [mode, limits.account_failures, limits.account_network_failures, limits.account_window_s,
            limits.device_failures, limits.device_ttl_ms, limits.devices_kept, now_ms, *digests]  # fmt: skip


def _account_keys(account: str, network: str) -> list[str]:
    return [
        keys.account_failures(account),
        keys.account_network_failures(account, network),
        keys.devices(account),
    ]


async def account_attempt(
    redis: RedisClient,
    account: str,
    network: str,
    digests: Sequence[str],
    limits: ThrottleLimits,
    now_ms: int,
) -> AccountVerdict:
    """Count a login attempt on the account side; AccountLocked when its unknown devices must wait."""
    status, value = await THROTTLE_ACCOUNT(
        redis, _account_keys(account, network), _account_args("attempt", limits, now_ms, digests)
    )
    if int(status) == 2:
        raise AccountLocked(int(value))
    return AccountVerdict(int(value) - 1 if int(status) == 1 else None)


async def account_outcome(
    redis: RedisClient,
    mode: Literal["known_ok", "unknown_ok", "give_back"],
    account: str,
    network: str,
    digest: str,
    limits: ThrottleLimits,
    now_ms: int,
) -> None:
    """A counted attempt succeeded (from a known device, or from an unknown one that is now known by
    ``digest``) or was refused elsewhere (give it back)."""
    await THROTTLE_ACCOUNT(
        redis,
        _account_keys(account, network),
        _account_args(mode, limits, now_ms, [digest] if digest else []),
    )


def _network_args(mode: str, limits: ThrottleLimits, with_device: bool) -> list[EncodableT]:
    return [mode, limits.network_failures, limits.day_s, limits.network_max_delay_ms, int(with_device)]


def _network_keys(network: str) -> list[str]:
    return [keys.network_failures(network), keys.network_gate(network)]


def _network_verdict(status: Any, value: Any) -> bool:
    if int(status) == 2:
        raise IpBudgetSpent(-(-int(value) // 1000))
    return int(status) == 1


async def network_attempt(
    redis: RedisClient, network: str, limits: ThrottleLimits, *, with_device: bool
) -> bool:
    """Count a login attempt from the network; IpBudgetSpent when its unknown devices must wait. True when
    the network is past its budget and only a known device may go on (else call ``network_gate``)."""
    status, value = await THROTTLE_NETWORK(
        redis, _network_keys(network), _network_args("attempt", limits, with_device)
    )
    return _network_verdict(status, value)


async def network_gate(redis: RedisClient, network: str, limits: ThrottleLimits) -> None:
    """An attempt counted past the budget came from an unknown device: IpBudgetSpent unless the gate is open
    (the attempt is then given back)."""
    status, value = await THROTTLE_NETWORK(redis, _network_keys(network), _network_args("gate", limits, True))
    _network_verdict(status, value)


async def network_give_back(redis: RedisClient, network: str, limits: ThrottleLimits) -> None:
    await THROTTLE_NETWORK(redis, _network_keys(network), _network_args("give_back", limits, False))

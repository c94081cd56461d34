"""argon2id hashing off the event loop, a bounded queue in front of it, and a dummy verification that makes
unknown usernames cost the same."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from sso.errors import HashingBusy
from sso.settings import SsoSettings

__all__ = ["Kind", "Passwords"]

# Logins (and password changes) are served before registrations, which may fill at most half the queue: a
# flood of registrations cannot stall the logins.
Kind = Literal["login", "signup"]


class Passwords:
    """argon2-cffi releases the GIL, so a pool of one thread per core keeps every core hashing."""

    def __init__(self, settings: SsoSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self.pool_size = os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix="argon2")
        # Verified when the username is unknown, so that answer takes as long as a wrong password.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._capacity = self.pool_size + settings.hash_queue
        self._free = self.pool_size
        self._admitted: dict[Kind, int] = {"login": 0, "signup": 0}
        self._waiting: dict[Kind, deque[asyncio.Future[None]]] = {"login": deque(), "signup": deque()}

    @contextlib.asynccontextmanager
    async def turn(self, kind: Kind) -> AsyncIterator[None]:
        """Hold one of the pool's threads (waiting in line for it); HashingBusy at once when the line is
        full. What runs inside (the throttle check, the lookup, the hash) is at most the pool's size at a
        time, so attempts counted and not yet decided never exceed it."""
        if sum(self._admitted.values()) >= self._capacity or (
            kind == "signup" and self._admitted["signup"] >= max(1, self._capacity // 2)
        ):
            raise HashingBusy()
        self._admitted[kind] += 1
        try:
            await self._acquire(kind)
            try:
                yield
            finally:
                self._release()
        finally:
            self._admitted[kind] -= 1

    async def _acquire(self, kind: Kind) -> None:
        if self._free > 0:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[kind].append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # handed over just as the caller gave up
            else:
                with contextlib.suppress(ValueError):  # already dropped by a release
                    self._waiting[kind].remove(granted)
            raise

    def _release(self) -> None:
        for kind in ("login", "signup"):
            line = self._waiting[kind]
            while line:
                waiter = line.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``stored_hash`` None (no such user) spends the same time and fails."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._verify, stored_hash, password
        )

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

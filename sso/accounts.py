"""Users in PostgreSQL: create, find, roles, disable, password; and the one form of a username.

A username is NFKC-normalised, then must be 3 to 64 ASCII letters, digits or ``. _ @ + -``; it is stored as
given (after NFKC) and found by its lower-case form, the same string the login throttle counts
(``username_key``): PostgreSQL's ``lower()`` and Python's ``str.lower()`` agree on ASCII, so no variant of a
name (``ALICE``, fullwidth ``ALICE``) gets a budget of its own.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from kit.db import Pool
from kit.errors import POSTGRES_OUTAGES, ServiceUnavailable
from sso.errors import UsernameTaken

__all__ = ["Account", "Accounts", "canonical_username", "username_key"]

T = TypeVar("T")

_COLUMNS = "id::text AS id, username, password_hash, roles, disabled_at IS NOT NULL AS disabled"
_USERNAME = re.compile(r"[A-Za-z0-9._@+-]{3,64}")


def canonical_username(raw: str) -> str | None:
    """The NFKC form of ``raw`` when it is a valid username, else None."""
    if len(raw) > 256:
        return None
    name = unicodedata.normalize("NFKC", raw)
    return name if _USERNAME.fullmatch(name) else None


def username_key(name: str) -> str:
    """How a canonical username is looked up and throttled: its lower-case (ASCII) form."""
    return name.lower()


async def _reachable(call: Awaitable[T]) -> T:
    try:
        return await call
    except POSTGRES_OUTAGES:
        raise ServiceUnavailable(
            "the account store is unavailable; try again shortly", retry_after_s=2
        ) from None


@dataclass(frozen=True)
class Account:
    id: str
    username: str
    password_hash: str
    roles: tuple[str, ...]
    disabled: bool


def _account(row: asyncpg.Record | None) -> Account | None:
    if row is None:
        return None
    return Account(row["id"], row["username"], row["password_hash"], tuple(row["roles"]), row["disabled"])


class Accounts:
    def __init__(self, db: Pool) -> None:
        self._db = db

    async def create(self, username: str, password_hash: str) -> Account:
        """``username`` is canonical (``canonical_username``)."""
        user_id = str(uuid.uuid4())
        try:
            row = await _reachable(
                self._db.fetchrow(
                    f"INSERT INTO sso_users (id, username, password_hash) VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
                    user_id,
                    username,
                    password_hash,
                )
            )
        except asyncpg.UniqueViolationError:
            raise UsernameTaken(f"the username {username!r} is taken") from None
        account = _account(row)
        assert account is not None
        return account

    async def by_username(self, key: str) -> Account | None:
        """The account whose ``username_key`` is ``key``."""
        row = await _reachable(
            self._db.fetchrow(f"SELECT {_COLUMNS} FROM sso_users WHERE lower(username) = $1", key)
        )
        return _account(row)

    async def by_id(self, user_id: str) -> Account | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM sso_users WHERE id = $1::uuid", user_id)
        return _account(row)

    async def set_password_hash(self, user_id: str, password_hash: str, *, changed: bool) -> None:
        await self._db.execute(
            "UPDATE sso_users SET password_hash = $2,"
            " password_changed_at = CASE WHEN $3 THEN now() ELSE password_changed_at END WHERE id = $1::uuid",
            user_id,
            password_hash,
            changed,
        )

    async def set_role(self, username: str, role: str, *, granted: bool) -> Account | None:
        name = canonical_username(username)
        if name is None:
            return None
        row = await self._db.fetchrow(
            "UPDATE sso_users SET roles = CASE WHEN NOT $3 THEN array_remove(roles, $2)"
            " WHEN $2 = ANY(roles) THEN roles ELSE roles || $2 END"
            f" WHERE lower(username) = $1 RETURNING {_COLUMNS}",
            username_key(name),
            role,
            granted,
        )
        return _account(row)

    async def disable(self, username: str) -> Account | None:
        name = canonical_username(username)
        if name is None:
            return None
        row = await self._db.fetchrow(
            "UPDATE sso_users SET disabled_at = coalesce(disabled_at, now())"
            f" WHERE lower(username) = $1 RETURNING {_COLUMNS}",
            username_key(name),
        )
        return _account(row)

"""Users in PostgreSQL: create, find, roles, disable, password."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from kit.db import Pool
from sso.errors import UsernameTaken

__all__ = ["Account", "Accounts"]

_COLUMNS = "id::text AS id, username, password_hash, roles, disabled_at IS NOT NULL AS disabled"


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
        user_id = str(uuid.uuid4())
        try:
            row = await self._db.fetchrow(
                f"INSERT INTO sso_users (id, username, password_hash) VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
                user_id,
                username,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise UsernameTaken(f"the username {username!r} is taken") from None
        account = _account(row)
        assert account is not None
        return account

    async def by_username(self, username: str) -> Account | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM sso_users WHERE lower(username) = lower($1)", username
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
        row = await self._db.fetchrow(
            "UPDATE sso_users SET roles = CASE WHEN NOT $3 THEN array_remove(roles, $2)"
            " WHEN $2 = ANY(roles) THEN roles ELSE roles || $2 END"
            f" WHERE lower(username) = lower($1) RETURNING {_COLUMNS}",
            username,
            role,
            granted,
        )
        return _account(row)

    async def disable(self, username: str) -> Account | None:
        row = await self._db.fetchrow(
            "UPDATE sso_users SET disabled_at = coalesce(disabled_at, now())"
            f" WHERE lower(username) = lower($1) RETURNING {_COLUMNS}",
            username,
        )
        return _account(row)

"""Support conversations in PostgreSQL, and the Redis inbox that takes messages while the subsystem is shed."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from customer_service import keys
from kit.context import Context
from kit.errors import NotFound

__all__ = ["Message", "add", "conversation", "enqueue", "insert_many", "reply"]

_COLUMNS = "id, user_id, author, author_name, text, reply_to, created_at"


@dataclass(frozen=True)
class Message:
    id: uuid.UUID
    user_id: str
    author: str
    author_name: str
    text: str
    created_at: datetime.datetime
    reply_to: uuid.UUID | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "author": self.author,
            "author_name": self.author_name,
            "text": self.text,
            "reply_to": str(self.reply_to) if self.reply_to else None,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def of(cls, row: asyncpg.Record) -> Message:
        return cls(
            row["id"], row["user_id"], row["author"], row["author_name"], row["text"], row["created_at"],
            row["reply_to"],
        )  # fmt: skip


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def insert_many(ctx: Context, messages: Sequence[Message], *, queued: bool) -> None:
    async with ctx.db.acquire() as conn:
        await conn.executemany(
            f"INSERT INTO cs_messages ({_COLUMNS}, queued) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (id) DO NOTHING",
            [
                (m.id, m.user_id, m.author, m.author_name, m.text, m.reply_to, m.created_at, queued)
                for m in messages
            ],
        )


async def add(ctx: Context, *, user_id: str, username: str, text: str) -> Message:
    message = Message(uuid.uuid4(), user_id, "shopper", username, text, _now())
    await insert_many(ctx, [message], queued=False)
    return message


async def enqueue(ctx: Context, *, user_id: str, username: str, text: str) -> Message:
    message = Message(uuid.uuid4(), user_id, "shopper", username, text, _now())
    fields = {
        "id": str(message.id),
        "user_id": user_id,
        "author_name": username,
        "text": text,
        "created_at": message.created_at.isoformat(),
    }
    await ctx.redis.xadd(keys.INBOX, fields)  # type: ignore[arg-type]
    return message


def from_inbox(fields: dict[str, str]) -> Message:
    return Message(
        uuid.UUID(fields["id"]), fields["user_id"], "shopper", fields["author_name"], fields["text"],
        datetime.datetime.fromisoformat(fields["created_at"]),
    )  # fmt: skip


async def conversation(ctx: Context, user_id: str) -> list[Message]:
    rows = await ctx.db.fetch(
        f"SELECT {_COLUMNS} FROM cs_messages WHERE user_id = $1 ORDER BY created_at, id", user_id
    )
    return [Message.of(r) for r in rows]


async def reply(ctx: Context, message_id: uuid.UUID, *, agent: str, text: str) -> Message:
    row = await ctx.db.fetchrow(
        "SELECT user_id FROM cs_messages WHERE id = $1 AND author = 'shopper'", message_id
    )
    if row is None:
        raise NotFound(f"no shopper message {message_id}", code="message_not_found")
    message = Message(uuid.uuid4(), row["user_id"], "agent", agent, text, _now(), message_id)
    await insert_many(ctx, [message], queued=False)
    return message

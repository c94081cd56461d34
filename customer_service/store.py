"""Support conversations in PostgreSQL, and the Redis inbox that takes messages while the subsystem is shed."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from customer_service import scripts
from customer_service.errors import MessageNotFound
from customer_service.settings import CustomerServiceSettings
from kit.context import Context

__all__ = ["Message", "Page", "add", "conversation", "enqueue", "from_inbox", "insert_many", "reply"]

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
    """A shopper's message, stored now; MessageRateLimited past the shopper's rate."""
    s = ctx.settings.of(CustomerServiceSettings)
    await scripts.post(ctx.redis, user_id, per_window=s.user_messages, window_s=s.user_window_s)
    message = Message(uuid.uuid4(), user_id, "shopper", username, text, _now())
    await insert_many(ctx, [message], queued=False)
    return message


async def enqueue(ctx: Context, *, user_id: str, username: str, text: str) -> Message:
    """A shopper's message, queued in the inbox while customer_service is shed; MessageRateLimited past the
    shopper's rate, InboxFull when the inbox holds PEAK_CS_INBOX_MAX messages."""
    s = ctx.settings.of(CustomerServiceSettings)
    message = Message(uuid.uuid4(), user_id, "shopper", username, text, _now())
    fields = {
        "id": str(message.id),
        "user_id": user_id,
        "author_name": username,
        "text": text,
        "created_at": message.created_at.isoformat(),
    }
    await scripts.post(
        ctx.redis, user_id, per_window=s.user_messages, window_s=s.user_window_s, queue_into=s.inbox_max,
        fields=fields,
    )  # fmt: skip
    return message


def from_inbox(fields: dict[str, str]) -> Message:
    return Message(
        uuid.UUID(fields["id"]), fields["user_id"], "shopper", fields["author_name"], fields["text"],
        datetime.datetime.fromisoformat(fields["created_at"]),
    )  # fmt: skip


@dataclass(frozen=True)
class Page:
    """Oldest first; ``next_before`` pages back to older messages (None: there are none)."""

    messages: list[Message]
    next_before: uuid.UUID | None


async def conversation(ctx: Context, user_id: str, *, before: uuid.UUID | None = None) -> Page:
    """The newest page of a shopper's conversation, or the one before the message ``before`` (one of theirs;
    anyone else's id gives an empty page)."""
    size = ctx.settings.of(CustomerServiceSettings).page_size
    rows = await ctx.db.fetch(
        f"SELECT {_COLUMNS} FROM cs_messages WHERE user_id = $1 AND ($2::uuid IS NULL OR (created_at, id) <"
        " (SELECT created_at, id FROM cs_messages WHERE id = $2 AND user_id = $1))"
        " ORDER BY created_at DESC, id DESC LIMIT $3",
        user_id,
        before,
        size + 1,
    )
    page = [Message.of(r) for r in reversed(rows[:size])]
    return Page(page, page[0].id if len(rows) > size else None)


async def reply(ctx: Context, message_id: uuid.UUID, *, agent: str, text: str) -> Message:
    row = await ctx.db.fetchrow(
        "SELECT user_id FROM cs_messages WHERE id = $1 AND author = 'shopper'", message_id
    )
    if row is None:
        raise MessageNotFound(f"no shopper message {message_id}")
    message = Message(uuid.uuid4(), row["user_id"], "agent", agent, text, _now(), message_id)
    await insert_many(ctx, [message], queued=False)
    return message

"""How an order stream (an event's stock bucket), and a dead letter in one, are named in text.

Two spellings, both kept as they are. The registry of streams in Redis (``keys.EVENTS``) holds "<event>" or
"<event>:<bucket>": stored data, which running sales and workers read. Operators see and type a dead letter
as "<event>:<entry id>" or "<event>/<bucket>:<entry id>" (`peak seckill dead-letters [--retry REF]`). Bucket 0
is left out of both, so a one-bucket event is named as it was before buckets existed.
"""

from __future__ import annotations

from kit.params import ascii_int

__all__ = ["dead_letter_ref", "parse_dead_letter_ref", "parse_stream_member", "stream_member"]


def _number(text: str) -> bool:
    """ASCII digits, short enough for a bigint ("²".isdigit() is true, and int() refuses it)."""
    return ascii_int(text) is not None


def _entry_id(text: str) -> bool:
    """A stream entry id as Redis writes them: <ms>-<seq>."""
    ms, dash, seq = text.partition("-")
    return bool(dash) and _number(ms) and _number(seq)


def stream_member(event_id: int, bucket: int = 0) -> str:
    """The order stream's member of the EVENTS registry."""
    return str(event_id) if bucket == 0 else f"{event_id}:{bucket}"


def parse_stream_member(member: str) -> tuple[int, int] | None:
    """(event id, bucket) of an EVENTS member, or None for anything else."""
    event, _, bucket = member.partition(":")
    if not _number(event) or not (bucket == "" or _number(bucket)):
        return None
    return int(event), int(bucket or 0)


def dead_letter_ref(event_id: int, bucket: int, entry_id: str) -> str:
    """What `peak seckill dead-letters` lists and `--retry` takes."""
    stream = str(event_id) if bucket == 0 else f"{event_id}/{bucket}"
    return f"{stream}:{entry_id}"


def parse_dead_letter_ref(ref: str) -> tuple[int, int, str] | None:
    """(event id, bucket, dead-letter entry id) of a dead letter's reference, or None for anything else."""
    stream, _, entry_id = ref.partition(":")
    event, _, bucket = stream.partition("/")
    if not _number(event) or not (bucket == "" or _number(bucket)) or not _entry_id(entry_id):
        return None
    return int(event), int(bucket or 0), entry_id

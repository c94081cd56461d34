"""The names of order streams and dead letters in text: each spelling made and read in one module."""

from __future__ import annotations

import pytest

from seckill import refs


@pytest.mark.parametrize("stream,member", [((7, 0), "7"), ((7, 2), "7:2")])
def test_registry_members(stream: tuple[int, int], member: str) -> None:
    assert refs.stream_member(*stream) == member
    assert refs.parse_stream_member(member) == stream


@pytest.mark.parametrize("member", ["", "x", "7:x", "7/2", "-1"])
def test_other_registry_members_are_ignored(member: str) -> None:
    assert refs.parse_stream_member(member) is None


@pytest.mark.parametrize(
    "letter,ref", [((7, 0, "1700000000000-0"), "7:1700000000000-0"), ((7, 2, "1-5"), "7/2:1-5")]
)
def test_dead_letter_refs(letter: tuple[int, int, str], ref: str) -> None:
    assert refs.dead_letter_ref(*letter) == ref
    assert refs.parse_dead_letter_ref(ref) == letter


@pytest.mark.parametrize("ref", ["", "7", "7:", "x:1-0", "7/x:1-0", "7/2:"])
def test_malformed_dead_letter_refs(ref: str) -> None:
    assert refs.parse_dead_letter_ref(ref) is None

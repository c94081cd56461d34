"""The order message's fields, spelled in Python (``seckill/messages.py``) and in the Lua scripts alike."""

from __future__ import annotations

import re

from seckill import messages, scripts

# An XADD of an order message: redis.call('XADD', stream, '*', 'o', order_id, 'u', user, ...)
_XADD = re.compile(r"redis\.call\('XADD', \w+, '\*', ([^)]*)\)")


def _written_fields(source: str) -> list[tuple[str, ...]]:
    """The field names of every order message a script writes, in order."""
    found = []
    for call in _XADD.finditer(source):
        args = [arg.strip() for arg in call.group(1).split(",")]
        names = args[0::2]
        assert all(re.fullmatch(r"'\w+'", name) for name in names), names
        found.append(tuple(name.strip("'") for name in names))
    return found


def test_the_reservation_scripts_write_the_fields_python_reads() -> None:
    bucketed = messages.FIELDS + messages.BUCKETED_FIELDS
    assert _written_fields(scripts.RESERVE.source) == [bucketed, messages.FIELDS]
    assert _written_fields(scripts.TAKE.source) == [bucketed]


def test_dead_letters_find_and_strip_the_fields_python_names() -> None:
    dead, requeue = scripts.DEADLETTER.source, scripts.REQUEUE.source
    owner = {messages.ORDER_ID, messages.USER_ID}
    assert set(re.findall(r"fields\[i\] == '(\w+)'", dead)) == owner
    assert tuple(re.findall(r"table\.insert\(fields, '(\w+)'\)", dead)) == messages.DEAD_LETTER_FIELDS
    assert set(re.findall(r"name == '(\w+)'", requeue)) == owner
    assert tuple(re.findall(r"name ~= '(\w+)'", requeue)) == messages.DEAD_LETTER_FIELDS

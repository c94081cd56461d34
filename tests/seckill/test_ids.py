"""Order ids: UUIDv7, unique within a process and across forked API workers."""

from __future__ import annotations

import os
import time
import uuid

from seckill.ids import new_order_id


def test_order_ids_are_time_ordered_uuid7() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid.UUID(new_order_id())
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after
    ids = [new_order_id() for _ in range(2000)]
    assert all(str(uuid.UUID(i)) == i for i in ids)  # canonical lower-case form, as PostgreSQL prints it
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the millisecond prefix never goes back


def test_order_ids_do_not_repeat_across_many_refills() -> None:
    ids = [new_order_id() for _ in range(100_000)]  # 250 refills of the random pool
    assert len(set(ids)) == len(ids)


def test_a_forked_worker_does_not_reuse_the_random_bytes_it_inherited() -> None:
    new_order_id()  # the parent holds random bytes that a forked child inherits
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, as a granian worker forked from the server process
        os.close(read_end)
        os.write(write_end, "\n".join(new_order_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write_end)
    mine = [new_order_id() for _ in range(100)]
    with os.fdopen(read_end) as pipe:
        theirs = pipe.read().split("\n")
    os.waitpid(pid, 0)
    assert len(theirs) == 100
    # The random tail (after the millisecond prefix) is what keeps same-millisecond ids apart.
    assert not {i[14:] for i in mine} & {i[14:] for i in theirs}


def test_new_ids_are_uuid8_naming_their_event_and_home_bucket() -> None:
    from seckill.ids import home_of

    before = time.time_ns() // 1_000_000
    for event_id, bucket in ((1, 0), (7, 63), (2**32 - 1, 5), (123_456_789, 17), (0, 0)):
        raw = new_order_id(event_id, bucket)
        made = uuid.UUID(raw)
        assert str(made) == raw and made.version == 8 and made.variant == uuid.RFC_4122
        assert before <= made.int >> 80 <= time.time_ns() // 1_000_000  # the 48-bit millisecond prefix
        assert home_of(made) == (event_id, bucket)
    ids = [new_order_id(42, 3) for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
    # 36 random bits: every one of them varies.
    varied = 0
    for i in ids[:2000]:
        varied |= uuid.UUID(i).int ^ uuid.UUID(ids[0]).int
    assert varied & (2**36 - 1) == 2**36 - 1


def test_ids_that_cannot_name_their_event_are_the_uuid7_of_before() -> None:
    from seckill.ids import home_of

    for args in ((), (2**32, 0), (-1, 0), (5, 64)):
        made = uuid.UUID(new_order_id(*args))
        assert made.version == 7 and home_of(made) is None
    assert home_of(uuid.uuid4()) is None

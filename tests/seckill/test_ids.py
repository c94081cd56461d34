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

"""Request stream ids: unique within a session across instances, without a shared counter or a system call each."""

from __future__ import annotations

import os
import re

from refserver.session import new_request_stream_id as _next_id


def test_ids_have_48_random_bits_and_do_not_repeat() -> None:
    ids = {_next_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    assert all(re.fullmatch(r"r[0-9a-f]{12}", stream_id) for stream_id in ids)


def test_a_forked_worker_does_not_repeat_its_parents_ids() -> None:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only reports
        os.write(write_end, ",".join(_next_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as pipe:
        child_ids = set(pipe.read().split(","))
    parent_ids = {_next_id() for _ in range(8)}
    assert len(child_ids) == 8 and not child_ids & parent_ids

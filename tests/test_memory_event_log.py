"""The in-memory event log keeps what a client can still ask for, and only that."""

from __future__ import annotations

from refserver.backend.events import STANDALONE_STREAM
from refserver.backend.memory import MemoryEventLog

SESSION = "s1"


async def test_a_stream_answered_with_json_is_forgotten_once_read_to_its_end() -> None:
    log = MemoryEventLog(100)
    await log.open_stream(SESSION, "r1", [1, 2])
    await log.append(SESSION, "r1", '{"id":1}', is_response=True)
    first = await log.read_after(SESSION, "r1", 0)
    assert [e.data for e in first.events] == ['{"id":1}'] and not first.closed
    await log.append(SESSION, "r1", '{"id":2}', is_response=True)
    await log.close_stream(SESSION, "r1")
    last = await log.read_after(SESSION, "r1", 1)
    assert [e.data for e in last.events] == ['{"id":2}'] and last.closed
    # No event id ever reached the client (a JSON answer has none): nothing is kept for a resumption.
    assert not (await log.read_after(SESSION, "r1", 0)).exists
    assert log.statistics().streams == 0


async def test_a_stream_whose_result_was_read_before_it_closed_is_forgotten_too() -> None:
    """The usual order for a quick call: its reader takes the result, then the stream closes, and the reader's last
    read finds nothing new. That read must forget the stream as well, or every session keeps its last 64 calls."""
    log = MemoryEventLog(100)
    for n in range(200):
        stream_id = f"r{n}"
        await log.open_stream(SESSION, stream_id, [n])
        await log.append(SESSION, stream_id, f'{{"id":{n}}}', is_response=True)
        assert [e.seq for e in (await log.read_after(SESSION, stream_id, 0)).events] == [1]
        await log.close_stream(SESSION, stream_id)
        last = await log.read_after(SESSION, stream_id, 1)
        assert last.closed and not last.events
    assert log.statistics().streams == 0


async def test_append_many_records_on_existing_streams_only() -> None:
    log = MemoryEventLog(100)
    await log.open_stream("a", STANDALONE_STREAM)
    await log.open_stream("b", STANDALONE_STREAM)
    await log.drop_session("b")  # closed meanwhile: must not get a history again
    await log.append_many(
        [("a", STANDALONE_STREAM, "one"), ("b", STANDALONE_STREAM, "lost"), ("a", STANDALONE_STREAM, "two")]
    )
    assert [(e.seq, e.data) for e in (await log.read_after("a", STANDALONE_STREAM, 0)).events] == [
        (1, "one"),
        (2, "two"),
    ]
    assert not (await log.read_after("b", STANDALONE_STREAM, 0)).exists
    assert log.statistics().streams == 1


async def test_a_stream_with_notifications_or_served_as_sse_is_kept_for_resumption() -> None:
    log = MemoryEventLog(100)
    await log.open_stream(SESSION, "with-progress", [1])
    await log.append(SESSION, "with-progress", '{"method":"notifications/progress"}')
    await log.append(SESSION, "with-progress", '{"id":1}', is_response=True)
    await log.close_stream(SESSION, "with-progress")
    await log.open_stream(SESSION, "served", [2])
    await log.persist(SESSION, "served")  # handed to an SSE response: its client holds event ids
    await log.append(SESSION, "served", '{"id":2}', is_response=True)
    await log.close_stream(SESSION, "served")
    await log.open_stream(SESSION, STANDALONE_STREAM)
    await log.append(SESSION, STANDALONE_STREAM, '{"id":"srv-1"}', is_response=True)
    for stream_id in ("with-progress", "served", STANDALONE_STREAM):
        for _ in range(2):
            read = await log.read_after(SESSION, stream_id, 0)
            assert read.exists and read.events, stream_id

"""The periodic notifiers: a round gives every ready session what its notifier composes, as one batch of appends.

Real registry, sessions and in-memory event log, on trio's autojump clock (virtual time). The same round against
a real Redis is in tests/test_redis_group_commit.py (`append_many`).
"""

from __future__ import annotations

import json

import trio
import trio.testing

from refserver.backend.events import STANDALONE_STREAM
from refserver.backend.memory import MemoryEventLog
from refserver.dispatch import RequestCore
from refserver.features import reference
from refserver.features.catalog import FeatureIndex
from refserver.features.periodic import PeriodicNotifier
from refserver.protocol.jsonrpc import Notification
from refserver.protocol.session_state import SessionState
from refserver.registry import SessionRegistry

SESSIONS = 300
INTERVAL = 10.0


async def test_every_round_appends_what_each_open_session_is_given(autojump_clock: trio.testing.MockClock) -> None:
    rounds = 0
    composed: list[str] = []
    wanted: dict[str, int] = {}
    """Messages each session gets per round: 0, 1 or 2."""
    session_of: dict[int, str] = {}
    """A notifier sees a session's protocol state only; the test knows whose state it is."""

    def compose(state: SessionState) -> list[Notification]:
        session_id = session_of[id(state)]
        composed.append(session_id)
        return [Notification("notifications/test", {"round": rounds, "n": n}) for n in range(wanted[session_id])]

    log = MemoryEventLog(100)
    registry = SessionRegistry(
        events=log,
        core=RequestCore(FeatureIndex.build([reference.build_catalog()])),
        idle_ttl=3600.0,
        max_sessions=SESSIONS,
        client_request_timeout=30.0,
        notifiers=[PeriodicNotifier("test", INTERVAL, compose)],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        sessions = [await registry.create_session("streamable") for _ in range(SESSIONS)]
        wanted.update((session.id, n % 3) for n, session in enumerate(sessions))
        session_of.update((id(session.state), session.id) for session in sessions)
        closed = sessions[1]
        closed.close("test")
        await trio.sleep(INTERVAL * 0.5)
        for round_number in (1, 2):
            rounds = round_number  # what compose() puts in this round's messages
            composed.clear()
            await trio.sleep(INTERVAL)
            assert closed.id not in composed  # a closed session is not even asked
            assert sorted(composed) == sorted(s.id for s in sessions if s is not closed)
        for session in sessions:
            read = await log.read_after(session.id, STANDALONE_STREAM, 0)
            got = [json.loads(e.data)["params"] for e in read.events]
            if session is closed:
                assert not read.exists
            else:
                assert got == [{"round": r, "n": n} for r in (1, 2) for n in range(wanted[session.id])]
        nursery.cancel_scope.cancel()

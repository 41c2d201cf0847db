"""The periodic notifiers fan out: a round sends to many sessions at once (bounded), so a slow backend call per
session does not make a round last sessions x round trip, and one failing session does not stop the round.

Real registry and sessions on the in-memory backend, on trio's autojump clock (virtual time).
"""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from refserver.backend.memory import MemoryEventLog
from refserver.dispatch import McpDispatcher
from refserver.errors import BackendUnavailable
from refserver.features import reference
from refserver.features.catalog import FeatureIndex
from refserver.registry import NOTIFIER_CONCURRENCY, PeriodicNotifier, SessionRegistry
from refserver.session import Session

SESSIONS = 3 * NOTIFIER_CONCURRENCY
INTERVAL = 10.0
SEND_TIME = 0.01
"""Virtual seconds one send takes (a Redis round trip, say)."""


async def test_a_round_reaches_every_session_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    sent: dict[str, int] = {}
    in_flight = peak = 0
    round_times: list[float] = []
    failing: dict[str, type[Exception]] = {}

    async def emit(session: Session) -> None:
        nonlocal in_flight, peak
        if not sent:
            round_times.append(trio.current_time())
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await trio.sleep(SEND_TIME)
            if session.id in failing:
                raise failing[session.id]("this session is skipped this round")
            sent[session.id] = sent.get(session.id, 0) + 1
        finally:
            in_flight -= 1

    registry = SessionRegistry(
        events=MemoryEventLog(100),
        handler=McpDispatcher(FeatureIndex.build([reference.build_catalog()])),
        idle_ttl=3600.0,
        max_sessions=SESSIONS,
        client_request_timeout=30.0,
        notifiers=[PeriodicNotifier("test", INTERVAL, emit)],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        sessions = [await registry.create_session("streamable") for _ in range(SESSIONS)]
        for n, session in enumerate(sessions[::7]):
            failing[session.id] = trio.ClosedResourceError if n % 2 else BackendUnavailable
        sessions[1].close("test")  # closed sessions are skipped, not sent to
        with trio.fail_after(INTERVAL * 2):
            await wait_until(lambda: len(sent) == SESSIONS - len(failing) - 1)
        finished = trio.current_time()
        nursery.cancel_scope.cancel()

    assert set(sent) == {s.id for s in sessions} - set(failing) - {sessions[1].id}
    assert set(sent.values()) == {1}  # each session exactly once per round
    assert peak == NOTIFIER_CONCURRENCY
    # Sequential sends would take SESSIONS x SEND_TIME (30 s); NOTIFIER_CONCURRENCY at a time, three sends' time.
    assert finished - round_times[0] <= SEND_TIME * SESSIONS / NOTIFIER_CONCURRENCY + SEND_TIME


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(SEND_TIME / 2)

"""Failures in a cluster of three instances and one redis-server, under load, with exact accounting.

Each test starts its own redis-server and three instances, drives them with raw httpx requests whose
instance is chosen explicitly (round robin, like a load balancer without stickiness), and injects one
fault: SIGKILL of an instance, a Redis outage and restart, SIGTERM of an instance, SIGKILL of the
instance running a request that has not said anything yet. What the clients see is counted request by
request: answered correctly, answered twice, answered with another request's answer, lost, refused (and
how), and how long each took; Redis is searched afterwards to tell executed requests from refused ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import pytest
import trio

from refserver.backend.redis.bus import INSTANCE_TTL
from refserver.protocol.sse import SSEDecoder, SSEEvent
from tests.cluster import Cluster, long_call, open_session, rpc, start_cluster
from tests.conftest import INIT_PARAMS, POST_HEADERS, wait_until
from tests.redis_server import RedisServer

HEARTBEAT: Final = 1.0
"""REFSERVER_HEARTBEAT_INTERVAL of every cluster here (start_cluster's default)."""
CALL_BOUND: Final = 5.0
"""No single request may take longer than this, whatever fails."""
URI: Final = "test://static/resource/3"
"""The resource the stream-watching sessions subscribe to (updates every SUBSCRIPTION_INTERVAL)."""
SUBSCRIPTION_INTERVAL: Final = 0.2
LONG_ID: Final = 4242
WAIT_SILENT: Final = 30.0

CLIENT_TIMEOUT = httpx.Timeout(10.0)
CLIENT_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200)


# --- JSON-RPC over raw httpx -----------------------------------------------------------------------


def echo_call(request_id: int, message: str) -> dict[str, Any]:
    return rpc("tools/call", request_id, name="echo", arguments={"message": message})


def answers_in(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC responses in a POST's answer, whether plain JSON or an SSE stream."""
    content_type = response.headers.get("content-type", "")
    messages: list[Any] = []
    if content_type.startswith("application/json"):
        body = response.json()
        messages = body if isinstance(body, list) else [body]
    elif content_type.startswith("text/event-stream"):
        messages = [json.loads(e.data) for e in SSEDecoder().feed(response.content) if e.data]
    return [m for m in messages if isinstance(m, dict) and ("result" in m or "error" in m)]


def echo_texts(response: httpx.Response) -> list[str]:
    return [str(a["result"]["content"][0]["text"]) for a in answers_in(response) if "result" in a]


def resumption_id(response: httpx.Response) -> str | None:
    """The Last-Event-ID to resume with, if `response` is an SSE stream (which may have ended early)."""
    if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/event-stream"):
        return None
    decoder = SSEDecoder()
    decoder.feed(response.content)
    return decoder.last_event_id


def is_jsonrpc_error(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return (
        body.get("jsonrpc") == "2.0"
        and isinstance(error, dict)
        and isinstance(error.get("code"), int)
        and isinstance(error.get("message"), str)
    )


async def sse_events(response: httpx.Response, decoder: SSEDecoder) -> AsyncIterator[SSEEvent]:
    """The events carrying a message (the priming event, data-less, only sets the decoder's last id)."""
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            if event.data:
                yield event


def seq_of(event_id: str | None) -> int:
    assert event_id is not None
    return int(event_id.rsplit(".", 1)[1])


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def recorded_events(redis: RedisServer) -> str:
    """Every event stored in Redis (all streams of all sessions), as one string to search in.

    Each request's answer is appended to its stream before anything is sent to the client, so an echo
    message absent from here was never executed.
    """
    client = redis.client()
    found: list[str] = []
    for key in client.scan_iter("refserver:{*}:events:*", count=1000):
        entries: Any = client.xrange(key)
        found += [fields[b"d"].decode() for _, fields in entries if b"d" in fields]
    return "\n".join(found)


# --- a load of echo calls, each accounted for ------------------------------------------------------


@attrs.define(eq=False)
class Outcome:
    session: int
    request_id: int
    message: str
    instance: int
    sent: float
    ended: float | None = None
    status: int | None = None
    ok: bool = False
    error: str = ""
    transport_error: type[Exception] | None = None
    body: str = ""
    jsonrpc_error: bool = False
    resumed_on: int | None = None
    """The instance where the client resumed a stream that ended without the answer (Last-Event-ID)."""


@attrs.define(eq=False)
class Load:
    """`sessions` clients calling echo `calls` times each, one call at a time per session.

    Every call goes to the next instance in `rotation` (instances in service); taking one out of the
    rotation is what a load balancer does with an instance it found dead.
    """

    urls: list[str]
    sessions: int
    calls: int
    rotation: list[int] = attrs.field(init=False)
    headers: list[dict[str, str]] = attrs.field(factory=list)
    outcomes: list[Outcome] = attrs.field(factory=list)
    answers: Counter[str] = attrs.field(factory=Counter)
    """Echo text -> how many responses carried it (over every HTTP response received)."""
    crosstalk: list[str] = attrs.field(factory=list)
    completed: int = 0
    on_failure: Callable[[Outcome], None] | None = None
    resume_cut_streams: bool = False
    """A client that resumes (GET with Last-Event-ID, on another instance) an SSE answer ended without the
    response, as a draining instance ends its streams; an MCP client does this."""
    resumed: int = 0
    _turn: int = 0

    def __attrs_post_init__(self) -> None:
        self.rotation = list(range(len(self.urls)))

    @property
    def total(self) -> int:
        return self.sessions * self.calls

    def choose(self) -> int:
        instance = self.rotation[self._turn % len(self.rotation)]
        self._turn += 1
        return instance

    def take_out(self, instance: int) -> None:
        if instance in self.rotation:
            self.rotation.remove(instance)

    async def open_sessions(self, http: httpx.AsyncClient) -> None:
        for _ in range(self.sessions):
            self.headers.append(await open_session(http, self.urls[self.choose()]))

    async def run(self, http: httpx.AsyncClient) -> None:
        async with trio.open_nursery() as nursery:
            for session in range(self.sessions):
                nursery.start_soon(self._run_session, http, session)

    async def _run_session(self, http: httpx.AsyncClient, session: int) -> None:
        for index in range(self.calls):
            instance = self.choose()
            message = f"s{session}-c{index}-{secrets.token_hex(6)}"
            outcome = Outcome(session, index + 1, message, instance, trio.current_time())
            self.outcomes.append(outcome)  # in flight from here: chosen and recorded in one step
            with trio.move_on_after(CALL_BOUND) as bound:
                try:
                    response = await http.post(
                        f"{self.urls[instance]}/mcp",
                        json=echo_call(outcome.request_id, message),
                        headers=self.headers[session],
                    )
                except httpx.TransportError as exc:
                    outcome.transport_error = type(exc)
                    outcome.error = f"{type(exc).__name__}: {exc}"
                else:
                    self._check(outcome, response)
                    last_event_id = self._cut_stream(outcome, response)
                    if last_event_id is not None and self.resume_cut_streams:
                        await self._resume(http, outcome, last_event_id)
            if bound.cancelled_caught:
                outcome.error = f"no answer within {CALL_BOUND}s"
            outcome.ended = trio.current_time()
            self.completed += 1
            if not outcome.ok and self.on_failure is not None:
                self.on_failure(outcome)

    def _check(self, outcome: Outcome, response: httpx.Response) -> None:
        outcome.status = response.status_code
        outcome.body = response.text[:300]
        outcome.jsonrpc_error = is_jsonrpc_error(response)
        if response.status_code != 200:
            outcome.error = f"HTTP {response.status_code}: {outcome.body}"
            return
        expected = f"Echo: {outcome.message}"
        for answer in answers_in(response):
            text = str(((answer.get("result") or {}).get("content") or [{}])[0].get("text"))
            self.answers[text] += 1
            if answer.get("id") == outcome.request_id and text == expected:
                outcome.ok = True
            else:
                self.crosstalk.append(f"{outcome.message} (id {outcome.request_id}) got {answer}")
        if not outcome.ok:
            outcome.error = f"200 without the answer: {outcome.body}"

    @staticmethod
    def _cut_stream(outcome: Outcome, response: httpx.Response) -> str | None:
        """The id to resume from, if the answer was an SSE stream that ended before the response."""
        return None if outcome.ok else resumption_id(response)

    async def _resume(self, http: httpx.AsyncClient, outcome: Outcome, last_event_id: str) -> None:
        others = [i for i in self.rotation if i != outcome.instance] or self.rotation
        instance = others[self._turn % len(others)]
        self._turn += 1
        headers = {**self.headers[outcome.session], "Last-Event-ID": last_event_id}
        first = outcome.error
        try:
            response = await http.get(f"{self.urls[instance]}/mcp", headers=headers)
        except httpx.TransportError as exc:
            outcome.error = f"{first}; resuming on instance {instance}: {type(exc).__name__}: {exc}"
            return
        self._check(outcome, response)
        if outcome.ok:
            outcome.resumed_on = instance
            self.resumed += 1
        else:
            outcome.error = f"{first}; resuming on instance {instance}: {outcome.error}"

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.answers.values() if count > 1)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def describe(self, outcomes: list[Outcome]) -> str:
        start = self.outcomes[0].sent if self.outcomes else 0.0
        return "\n".join(
            f"  s{o.session} #{o.request_id} -> instance {o.instance}, sent at +{o.sent - start:.2f}s, "
            f"took {(o.ended or trio.current_time()) - o.sent:.2f}s: {o.error[:300]}"
            for o in outcomes[:20]
        )


# --- SSE streams followed by a client ---------------------------------------------------------------


@attrs.define(eq=False)
class StreamWatch:
    """What one client saw of a session's standalone (GET) stream, across reconnections."""

    headers: dict[str, str]
    ids: list[str] = attrs.field(factory=list)
    """Ids of the events with data, in arrival order, over every connection."""
    updates: int = 0
    last_event_id: str | None = None
    ended_at: float | None = None
    tail: bytes = b""
    cut: str = ""
    resumed_from: str | None = None
    resumed_ids: list[str] = attrs.field(factory=list)

    def take(self, event: SSEEvent, resumed: bool) -> None:
        assert event.id is not None, event
        self.ids.append(event.id)
        if resumed:
            self.resumed_ids.append(event.id)
        message = json.loads(event.data)
        if message.get("method") == "notifications/resources/updated":
            assert message["params"]["uri"] == URI, message
            self.updates += 1


async def watch_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    headers = await open_session(http, url)
    subscribed = await http.post(f"{url}/mcp", json=rpc("resources/subscribe", 1, uri=URI), headers=headers)
    assert subscribed.status_code == 200, subscribed.text
    return headers


async def follow_until_cut(http: httpx.AsyncClient, url: str, watch: StreamWatch) -> None:
    """Follow the GET stream on `url` until the server ends it or the connection breaks."""
    decoder = SSEDecoder()
    try:
        async with http.stream("GET", f"{url}/mcp", headers=watch.headers) as response:
            assert response.status_code == 200, await response.aread()
            async for chunk in response.aiter_bytes():
                watch.tail = (watch.tail + chunk)[-200:]
                for event in decoder.feed(chunk):
                    if event.data:
                        watch.take(event, resumed=False)
        watch.cut = "ended by the server"
    except httpx.TransportError as exc:
        watch.cut = f"{type(exc).__name__}: {exc}"
    watch.ended_at = trio.current_time()
    # The last event received whole (the decoder's id may belong to an event cut off by the failure).
    watch.last_event_id = watch.ids[-1] if watch.ids else decoder.last_event_id


async def resume(http: httpx.AsyncClient, url: str, watch: StreamWatch, updates: int) -> None:
    """Reconnect with Last-Event-ID on `url` and read until `updates` more resource updates came."""
    assert watch.last_event_id is not None
    watch.resumed_from = watch.last_event_id
    wanted = watch.updates + updates
    headers = {**watch.headers, "Last-Event-ID": watch.last_event_id}
    async with http.stream("GET", f"{url}/mcp", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for event in sse_events(response, SSEDecoder()):
            watch.take(event, resumed=True)
            if watch.updates >= wanted:
                return
    raise AssertionError(f"the resumed stream on {url} ended after {watch.resumed_ids}")


def check_resumption(watch: StreamWatch) -> None:
    """Over both connections, the standalone stream's events arrived exactly once each and in order:
    ids get.1, get.2, ... with no repeat and no gap, the resumed one continuing after its Last-Event-ID."""
    assert len(set(watch.ids)) == len(watch.ids), f"an event id was delivered twice: {watch.ids}"
    assert watch.resumed_ids, "nothing arrived on the resumed stream"
    assert seq_of(watch.resumed_ids[0]) == seq_of(watch.resumed_from) + 1, (watch.resumed_from, watch.resumed_ids)
    assert all(i.startswith("get.") for i in watch.ids), watch.ids
    assert [seq_of(i) for i in watch.ids] == list(range(1, len(watch.ids) + 1)), watch.ids


def check_logs(cluster: Cluster, indexes: list[int]) -> None:
    for index in indexes:
        log = cluster.instances[index].log()
        assert "Traceback" not in log, f"instance {index} logged a traceback:\n{log[-5000:]}"


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    """Three instances on this test's own redis-server (which the test may stop or restart)."""
    started = start_cluster(
        redis_server,
        tmp_path,
        heartbeat_interval=HEARTBEAT,
        subscription_update_interval=SUBSCRIPTION_INTERVAL,
        log_message_interval=3600,  # no demo log notifications: the GET streams carry only the updates
    )
    yield started
    started.stop()


# --- 1. SIGKILL -------------------------------------------------------------------------------------


async def test_sigkill_of_one_instance_loses_only_its_in_flight_requests(cluster: Cluster) -> None:
    urls = cluster.urls
    victim, survivor_a, survivor_b = 0, 1, 2
    process = cluster.instances[victim].process
    assert process is not None
    load = Load(urls, sessions=20, calls=60)
    killed_at = 0.0
    in_flight_at_kill: set[int] = set()  # id() of the outcomes in flight on the victim
    watch = StreamWatch({})
    long_events: list[dict[str, Any]] = []
    long_ids: list[str] = []
    long_answered_at = 0.0
    long_stream_ended_at = 0.0
    long_follow_ready = trio.Event()
    killed = trio.Event()

    async def long_request(http: httpx.AsyncClient) -> None:
        """A long request runs on the victim; a client follows its stream from a survivor."""
        nonlocal long_answered_at, long_stream_ended_at
        last_id: str | None = None
        body = long_call(LONG_ID, duration=120, steps=600)
        async with http.stream("POST", f"{urls[victim]}/mcp", json=body, headers=watch.headers) as response:
            assert response.status_code == 200
            decoder = SSEDecoder()
            async for event in sse_events(response, decoder):
                last_id = event.id  # the first progress notification: enough, drop this connection
                break
        assert last_id is not None
        headers = {**watch.headers, "Last-Event-ID": last_id}
        async with http.stream("GET", f"{urls[survivor_a]}/mcp", headers=headers) as response:
            assert response.status_code == 200
            async for event in sse_events(response, SSEDecoder()):
                message = json.loads(event.data)
                long_events.append(message)
                assert event.id is not None
                long_ids.append(event.id)
                long_follow_ready.set()
                if message.get("id") == LONG_ID:
                    long_answered_at = trio.current_time()
        long_stream_ended_at = trio.current_time()

    async def standalone_stream(http: httpx.AsyncClient) -> None:
        await follow_until_cut(http, urls[victim], watch)
        assert killed.is_set(), f"the GET stream on the victim ended before the kill: {watch.cut}"
        await resume(http, urls[survivor_b], watch, updates=5)

    async def killer() -> None:
        nonlocal killed_at
        await wait_until(lambda: load.completed >= load.total // 2, 60, "half the load")
        # The load balancer takes the victim out and the victim dies, in one step: whatever was
        # chosen for it before is in flight on it.
        load.take_out(victim)
        in_flight_at_kill.update(id(o) for o in load.outcomes if o.instance == victim and o.ended is None)
        killed_at = trio.current_time()
        os.killpg(process.pid, signal.SIGKILL)
        killed.set()

    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=CLIENT_LIMITS) as http:
        with trio.fail_after(90):
            watch.headers = await watch_session(http, urls[victim])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(standalone_stream, http)
                nursery.start_soon(long_request, http)
                await wait_until(lambda: watch.updates >= 2, 10, "updates on the victim's GET stream")
                await wait_until(long_follow_ready.is_set, 10, "the long request's stream followed elsewhere")
                await load.open_sessions(http)
                started = trio.current_time()
                async with trio.open_nursery() as load_nursery:
                    load_nursery.start_soon(killer)
                    await load.run(http)
                load_seconds = trio.current_time() - started
            await trio.to_thread.run_sync(process.wait, 5)

    failures = load.failures()
    lost = len(failures)
    after_kill = [o for o in load.outcomes if o.sent > killed_at]
    recorded = await trio.to_thread.run_sync(recorded_events, cluster.redis)
    executed = [o for o in failures if o.message in recorded]
    print(
        f"\nSIGKILL: {load.total} calls in {load_seconds:.1f}s, killed at +{killed_at - load.outcomes[0].sent:.1f}s; "
        f"in flight on the victim at the kill: "
        f"{len(in_flight_at_kill)}; ok {load.total - lost}; lost {lost} ({len(executed)} of them executed, "
        f"their answers recorded but never delivered); duplicates {load.duplicates}; "
        f"cross-talk {len(load.crosstalk)}; calls after the kill {len(after_kill)}; "
        f"long request answered {long_answered_at - killed_at:.1f}s after the kill; "
        f"GET resumed from {watch.resumed_from} with {watch.resumed_ids[:3]}..."
    )
    assert load.crosstalk == []
    assert load.duplicates == 0
    assert all(o.ended is not None for o in load.outcomes)
    # Lost: only requests in flight on the victim when it died, and only as broken connections.
    assert all(id(o) in in_flight_at_kill for o in failures), load.describe(failures)
    assert all(o.transport_error is not None for o in failures), load.describe(failures)
    assert not [o for o in after_kill if o.instance == victim]
    # Every session went on, on the survivors.
    for session in range(load.sessions):
        assert any(o.ok for o in after_kill if o.session == session), f"session {session} did not continue"
    assert len(in_flight_at_kill) > 0, "the kill hit no request: the test proved nothing"

    # The standalone stream: cut with the victim, resumed on a survivor, nothing repeated.
    assert watch.ended_at is not None and watch.ended_at >= killed_at, watch.cut
    check_resumption(watch)

    # The long request: its follower gets a definite error, then the end of the stream.
    final = long_events[-1]
    assert final.get("id") == LONG_ID and "Request lost" in final["error"]["message"], final
    assert all(m.get("method") == "notifications/progress" for m in long_events[:-1])
    assert len(set(long_ids)) == len(long_ids)
    assert long_answered_at - killed_at <= INSTANCE_TTL + 2 * HEARTBEAT + 1, long_answered_at - killed_at
    assert long_stream_ended_at - long_answered_at < 1.0
    check_logs(cluster, [survivor_a, survivor_b])


# --- 2. Redis outage ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class Attempt:
    phase: str
    instance: int
    session_born: str
    sent: float
    latency: float = 0.0
    status: int | None = None
    jsonrpc_error: bool = False
    ok: bool = False
    error: str = ""
    resumed: bool = False
    """Its POST answer was an SSE stream that ended without the response; the status is the resumption's."""
    done: bool = False


async def test_redis_stop_and_restart_during_a_run(redis_server: RedisServer, cluster: Cluster) -> None:
    urls = cluster.urls
    attempts: list[Attempt] = []
    phase = "before"
    turn = 0
    finished = trio.Event()
    reinitialized = 0
    health_during_outage: list[tuple[int, int, float, dict[str, Any]]] = []

    def next_instance() -> int:
        nonlocal turn
        turn += 1
        return turn % len(urls)

    async def worker(http: httpx.AsyncClient, slots: int) -> None:
        """A client with `slots` sessions, calling echo in turn; a 404 makes it initialize again."""
        nonlocal reinitialized
        sessions: list[tuple[str, dict[str, str]] | None] = [None] * slots
        count = 0
        while not finished.is_set():
            slot = count % slots
            count += 1
            instance = next_instance()
            url = f"{urls[instance]}/mcp"
            current = sessions[slot]
            attempt = Attempt(phase, instance, current[0] if current else "-", trio.current_time())
            attempts.append(attempt)
            with trio.move_on_after(CALL_BOUND) as bound:
                try:
                    if current is None:
                        born = phase
                        init = rpc("initialize", 0, **INIT_PARAMS)
                        response = await http.post(url, json=init, headers=POST_HEADERS)
                        if response.status_code == 200:
                            headers = {
                                **POST_HEADERS,
                                "Mcp-Session-Id": response.headers["mcp-session-id"],
                                "MCP-Protocol-Version": "2025-11-25",
                            }
                            note = rpc("notifications/initialized")
                            response = await http.post(url, json=note, headers=headers)
                            if response.status_code == 202:
                                sessions[slot] = (born, headers)
                                attempt.ok = True
                                reinitialized += born != "before"
                    else:
                        message = secrets.token_hex(8)
                        response = await http.post(url, json=echo_call(count, message), headers=current[1])
                        attempt.ok = echo_texts(response) == [f"Echo: {message}"]
                        last_event_id = None if attempt.ok else resumption_id(response)
                        if last_event_id is not None:
                            # An SSE answer that ended without the response: resume it, as MCP clients do.
                            attempt.resumed = True
                            resumed = {**current[1], "Last-Event-ID": last_event_id}
                            response = await http.get(f"{urls[next_instance()]}/mcp", headers=resumed)
                            attempt.ok = echo_texts(response) == [f"Echo: {message}"]
                        if response.status_code == 404:
                            sessions[slot] = None
                    attempt.status = response.status_code
                    attempt.jsonrpc_error = is_jsonrpc_error(response)
                    if not attempt.ok:
                        attempt.error = response.text[:300]
                except httpx.TransportError as exc:
                    attempt.error = f"{type(exc).__name__}: {exc}"
            attempt.latency = trio.current_time() - attempt.sent
            if bound.cancelled_caught:
                attempt.error = "no answer in time"
            attempt.done = True
            # A real sleep: a client's pause between calls, so three workers are a steady load, not a flood.
            await trio.sleep(0.05)

    async def health(http: httpx.AsyncClient, instance: int) -> tuple[int, float, dict[str, Any]]:
        started = trio.current_time()
        with trio.fail_after(CALL_BOUND):
            response = await http.get(f"{urls[instance]}/health")
        return response.status_code, trio.current_time() - started, response.json()

    async def all_healthy(http: httpx.AsyncClient) -> bool:
        for instance in range(len(urls)):
            status, _, _ = await health(http, instance)
            if status != 200:
                return False
        return True

    def done_in(phase: str) -> list[Attempt]:
        return [a for a in attempts if a.phase == phase and a.done]

    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=CLIENT_LIMITS) as http:
        with trio.fail_after(75):
            # A GET stream open when Redis goes: it must end properly (with `retry:`), not break off.
            watch = StreamWatch(await watch_session(http, urls[0]))
            new_sessions_during_outage: list[tuple[int, float, str]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_until_cut, http, urls[0], watch)
                for _ in range(3):
                    nursery.start_soon(worker, http, 2)
                # Every worker has its two sessions and has used them (2 x 3 initializations, as many calls).
                await wait_until(
                    lambda: watch.updates >= 2 and sum(a.ok for a in done_in("before")) >= 12,
                    10,
                    "the stream's updates and the workers' sessions",
                )
                assert watch.updates >= 2 and watch.ended_at is None, watch
                phase = "stopping"
                stopping_at = trio.current_time()
                await trio.to_thread.run_sync(redis_server.stop)
                phase = "outage"
                # Real sleeps, here and after the probes: the outage's length under load is the case under test
                # (it spans heartbeats and the bus's reconnection attempts); nothing marks "long enough".
                await trio.sleep(2.0)
                for instance in range(len(urls)):
                    status, latency, document = await health(http, instance)
                    health_during_outage.append((instance, status, latency, document))
                    # What needs Redis (a new session) is refused at once with a JSON-RPC error body.
                    started_at = trio.current_time()
                    refused = await http.post(
                        f"{urls[instance]}/mcp", json=rpc("initialize", 0, **INIT_PARAMS), headers=POST_HEADERS
                    )
                    new_sessions_during_outage.append(
                        (refused.status_code, trio.current_time() - started_at, refused.text)
                    )
                await trio.sleep(1.0)
                phase = "restarting"
                restart_begun = trio.current_time()
                await trio.to_thread.run_sync(redis_server.start)
                restarted = trio.current_time()
                await wait_until(lambda: all_healthy(http), 15, "every instance healthy again")
                recovered_after = trio.current_time() - restarted
                phase = "recovering"  # old sessions answer 404 and are replaced
                await wait_until(lambda: reinitialized >= 6, 15, "every worker's two sessions replaced")
                phase = "after"
                await wait_until(lambda: len(done_in("after")) >= 30, 15, "30 calls after the recovery")
                finished.set()

    by_phase: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        if attempt.phase == "outage" and attempt.sent + attempt.latency >= restart_begun:
            attempt.phase = "restarting"  # Redis came back while it was being served
        by_phase.setdefault(attempt.phase, []).append(attempt)
    outage = by_phase.get("outage", [])
    print(
        f"\nRedis outage: {len(attempts)} requests; "
        + "; ".join(
            f"{name}: {Counter(a.status for a in group)} max {max(a.latency for a in group):.2f}s"
            for name, group in by_phase.items()
        )
        + f"; healthy {recovered_after:.1f}s after the restart; {reinitialized} sessions initialized again; "
        + f"{sum(a.resumed for a in attempts)} answers resumed with Last-Event-ID; "
        + f"{sum(a.ok for a in outage)} answered during the outage"
    )
    for instance, status, latency, document in health_during_outage:
        print(f"  /health on instance {instance} during the outage: {status} in {latency:.2f}s {document}")
    stream_end = None if watch.ended_at is None else round(watch.ended_at - stopping_at, 2)
    print(f"  the GET stream open at the stop ended {stream_end}s after it: {watch.cut}")

    def show(group: list[Attempt]) -> str:
        return "\n".join(
            f"  {a.phase} i{a.instance} {a.status}{' (resumed)' if a.resumed else ''} {a.latency:.2f}s {a.error[:200]}"
            for a in group[:20]
        )

    assert watch.cut == "ended by the server", watch.cut  # not a transfer broken off mid-stream
    assert stream_end is not None and stream_end < CALL_BOUND, stream_end
    assert b"retry:" in watch.tail.rsplit(b"\n\n", 2)[-2], watch.tail
    slow = [a for a in attempts if a.latency >= CALL_BOUND or a.error == "no answer in time"]
    assert not slow, show(slow)
    assert not [a for a in attempts if a.status == 500], show([a for a in attempts if a.status == 500])
    assert not [a for a in attempts if a.status is None], show([a for a in attempts if a.status is None])
    assert all(a.ok for a in by_phase["before"]), show(by_phase["before"])
    # During the outage: refused with 503 and a JSON-RPC error body, each within the bound, or answered
    # correctly by an instance that can do without Redis for a session it holds (a plain JSON answer).
    for status, latency, text in new_sessions_during_outage:
        assert status == 503 and '"error"' in text and latency < CALL_BOUND, (status, latency, text)
    wrong = [a for a in outage if not a.ok and (a.status != 503 or not a.jsonrpc_error)]
    assert not wrong, show(wrong)
    # Calls that saw Redis go or come back: answered, or refused like during the outage, or 404.
    for attempt in by_phase.get("stopping", []) + by_phase.get("restarting", []):
        assert attempt.ok or (attempt.status in (404, 503) and attempt.jsonrpc_error), show([attempt])
    for instance, status, _latency, document in health_during_outage:
        assert status == 503, (instance, document)
        assert document["status"] == "degraded" and document["backend"]["state"] == "unavailable", document
    # After the restart: old sessions are gone (404, JSON-RPC error), new ones work; nothing else.
    old = ("before", "stopping")
    for attempt in by_phase["recovering"] + by_phase["after"]:
        gone = attempt.status == 404 and attempt.jsonrpc_error and attempt.session_born in old
        assert attempt.ok or gone, show([attempt])
    assert reinitialized >= 6
    assert sum(a.ok for a in by_phase["after"]) >= 10
    assert all(a.ok for a in by_phase["after"] if a.session_born not in old), show(by_phase["after"])
    check_logs(cluster, [0, 1, 2])


# --- 3. SIGTERM --------------------------------------------------------------------------------------


async def idle_keep_alive_connection(port: int) -> trio.SocketStream:
    """A connection that made one request (GET /health) and is kept open, idle, as clients pool them."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += await stream.receive_some()
    return stream


async def test_graceful_shutdown_of_one_instance_during_load(cluster: Cluster) -> None:
    urls = cluster.urls
    leaving = 2
    survivors = [0, 1]
    process = cluster.instances[leaving].process
    assert process is not None
    load = Load(urls, sessions=12, calls=50, resume_cut_streams=True)
    sigterm_at = 0.0
    watches: list[StreamWatch] = []
    exit_code: int | None = None
    exited_after = 0.0
    idle_closed_after: float | None = None

    def on_failure(outcome: Outcome) -> None:
        # What a load balancer does: an instance answering 503 or refusing connections leaves the rotation.
        if outcome.instance == leaving:
            load.take_out(leaving)

    load.on_failure = on_failure

    async def stream_then_resume(http: httpx.AsyncClient, watch: StreamWatch, survivor: int) -> None:
        await follow_until_cut(http, urls[leaving], watch)
        await resume(http, urls[survivor], watch, updates=3)

    async def idle_connection_closed(idle: trio.SocketStream) -> None:
        """The server must close an idle keep-alive connection when shutdown starts, not hold it open."""
        nonlocal idle_closed_after
        async with idle:
            with contextlib.suppress(trio.BrokenResourceError):  # reset rather than closed: as late
                while await idle.receive_some():
                    pass
        assert sigterm_at > 0, "the server closed an idle connection before its keep-alive timeout"
        idle_closed_after = trio.current_time() - sigterm_at

    async def terminator() -> None:
        nonlocal sigterm_at, exit_code, exited_after
        await wait_until(lambda: load.completed >= load.total // 3, 60, "a third of the load")
        sigterm_at = trio.current_time()
        process.send_signal(signal.SIGTERM)
        exit_code = await trio.to_thread.run_sync(process.wait, 15)
        exited_after = trio.current_time() - sigterm_at

    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=CLIENT_LIMITS) as http:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(3):
                    watch = StreamWatch(await watch_session(http, urls[index]))
                    watches.append(watch)
                    nursery.start_soon(stream_then_resume, http, watch, survivors[index % 2])
                await wait_until(lambda: all(w.updates >= 2 for w in watches), 10, "updates on every GET stream")
                idle = await idle_keep_alive_connection(port_of(urls[leaving]))
                await load.open_sessions(http)
                async with trio.open_nursery() as load_nursery:
                    load_nursery.start_soon(terminator)
                    load_nursery.start_soon(idle_connection_closed, idle)
                    await load.run(http)

    failures = load.failures()
    served_after = [o for o in load.outcomes if o.instance == leaving and o.sent > sigterm_at and o.ok]
    recorded = await trio.to_thread.run_sync(recorded_events, cluster.redis)
    kinds = Counter(
        f"{o.status or (o.transport_error.__name__ if o.transport_error else o.error)}"
        f" in {(o.ended or 0) - o.sent:.1f}s"
        for o in failures
    )
    print(
        f"\nSIGTERM: {load.total} calls; ok {load.total - len(failures)} ({load.resumed} of them resumed on another "
        f"instance after their stream was ended with retry:); failures {len(failures)} {dict(kinds)}; "
        f"answered by the leaving instance after SIGTERM {len(served_after)}; duplicates {load.duplicates}; "
        f"cross-talk {len(load.crosstalk)}; GET streams ended "
        f"{[round((w.ended_at or 0) - sigterm_at, 2) for w in watches]}s after SIGTERM; idle keep-alive "
        f"connection closed after {idle_closed_after}s; exit code {exit_code} after {exited_after:.1f}s"
    )
    assert load.crosstalk == [] and load.duplicates == 0
    for outcome in failures:
        described = load.describe([outcome])
        # Only calls to the leaving instance that were not answered by SIGTERM (sent after it, or still
        # waiting to be accepted), refused with a documented answer.
        assert outcome.instance == leaving and outcome.ended is not None and outcome.ended >= sigterm_at, described
        if outcome.status is not None:
            assert outcome.status == 503 and outcome.jsonrpc_error and "shutting down" in outcome.body, described
        else:
            # No connection, or one the stopping instance never read (reset as it exited): never executed,
            # so the client may safely send it elsewhere.
            assert outcome.transport_error in (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError), (
                described
            )
            assert outcome.message not in recorded, f"executed, yet refused: {described}"
            # Refused at once (the listening socket is shut at drain), not left in its backlog until the exit.
            assert outcome.ended - outcome.sent < 2.0, described
    # Idle connections are closed at once: the instance does not sit out Hypercorn's graceful_timeout (5 s)
    # for them while new connections queue, unanswered, in its listening socket's backlog.
    assert idle_closed_after is not None and idle_closed_after < 2.0, idle_closed_after
    assert exit_code == 0, cluster.instances[leaving].log()[-3000:]
    # Nothing holds the worker until Hypercorn's graceful_timeout (5 s): answers during the drain close their
    # connections, and a request that still raced Hypercorn closing a kept-alive one no longer parks its reader
    # for good (refserver/hypercorn_workarounds.py).
    assert exited_after < 3.0, exited_after
    # Every session went on, on the other instances, without a single error there.
    for session in range(load.sessions):
        later = [o for o in load.outcomes if o.session == session and o.sent > sigterm_at and o.instance != leaving]
        assert later and all(o.ok for o in later), f"session {session}: {load.describe(later)}"
    for watch in watches:
        assert watch.cut == "ended by the server", watch.cut
        assert watch.ended_at is not None
        assert watch.ended_at - sigterm_at < 3.0, watch.ended_at - sigterm_at
        assert b"retry:" in watch.tail.rsplit(b"\n\n", 2)[-2], watch.tail
        check_resumption(watch)
    check_logs(cluster, [0, 1, 2])


# --- 4. A request that has said nothing yet -------------------------------------------------------------


async def test_a_silent_request_is_followed_elsewhere_and_declared_lost_with_its_instance(cluster: Cluster) -> None:
    """A tool silent for longer than the heartbeat (no progress yet): its POST stream stays open, another
    instance resumes it from the priming id, and when its instance dies the follower gets the error."""
    urls = cluster.urls
    victim, survivor = 0, 1
    process = cluster.instances[victim].process
    assert process is not None
    body = long_call(LONG_ID, duration=60, steps=1)  # first (and only) progress after 60 s
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=CLIENT_LIMITS) as http:
        headers = await open_session(http, urls[victim])
        with trio.fail_after(WAIT_SILENT):
            async with http.stream("POST", f"{urls[victim]}/mcp", json=body, headers=headers) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                decoder = SSEDecoder()
                chunks = response.aiter_bytes()
                with trio.move_on_after(3 * HEARTBEAT):  # the answer turned into SSE after one heartbeat
                    async for chunk in chunks:
                        decoder.feed(chunk)
                    pytest.fail(f"the POST stream ended with nothing but its priming event {decoder.last_event_id}")
            priming = decoder.last_event_id
            assert priming is not None and priming.endswith(".0"), priming
            resumed = {**headers, "Last-Event-ID": priming}
            events: list[dict[str, Any]] = []
            async with http.stream("GET", f"{urls[survivor]}/mcp", headers=resumed) as response:
                assert response.status_code == 200, (await response.aread()).decode()
                killed_at = trio.current_time()
                os.killpg(process.pid, signal.SIGKILL)
                async for event in sse_events(response, SSEDecoder()):
                    events.append(json.loads(event.data))
            ended_after = trio.current_time() - killed_at
    print(f"\nsilent request on the killed instance: follower answered and closed {ended_after:.1f}s after the kill")
    assert [e.get("id") for e in events] == [LONG_ID], events
    assert "Request lost" in events[0]["error"]["message"], events
    assert ended_after <= INSTANCE_TTL + 2 * HEARTBEAT + 1, ended_after


# --- 5. A slow Redis -----------------------------------------------------------------------------------


async def test_a_stream_outlasts_a_redis_stall_shorter_than_its_patience(
    redis_server: RedisServer, make_server: Any
) -> None:
    """A listener whose read misses Redis's 2 s bound (Redis stalled, or only busy, as when thousands of streams
    open at once) tries again instead of ending its stream; updates flow on the same response afterwards."""
    server = make_server(
        redis_url=redis_server.url,
        heartbeat_interval=HEARTBEAT,
        subscription_update_interval=SUBSCRIPTION_INTERVAL,
        log_message_interval=3600,
    )
    # A real stall: longer than one read's bound (Redis's 2 s, a constant), shorter than the listener's patience
    # (3 reads).
    stall = 3.0
    async with httpx.AsyncClient(timeout=30) as http:
        watch = StreamWatch(await watch_session(http, server.url))
        decoder = SSEDecoder()
        with trio.fail_after(20):
            redis_server.pause()  # the stream's first read (right after its priming event) must wait for Redis
            try:
                async with http.stream("GET", f"{server.url}/mcp", headers=watch.headers) as response:
                    assert response.status_code == 200, await response.aread()
                    await trio.sleep(stall)
                    redis_server.resume()
                    async for chunk in response.aiter_bytes():
                        for event in decoder.feed(chunk):
                            if event.data:
                                watch.take(event, resumed=False)
                        if watch.updates >= 3:
                            break
                    else:
                        pytest.fail(f"the server ended the stream after a {stall} s stall: {decoder.last_event_id}")
            finally:
                redis_server.resume()
    assert watch.updates >= 3
    assert "Traceback" not in server.log()

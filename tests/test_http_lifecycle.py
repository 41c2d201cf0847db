"""Cancellation, expiry, disconnects, resumption and shutdown over real HTTP against real Hypercorn.

State is checked after each cancel (through /health and follow-up requests), not only the error.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

from refserver.protocol.sse import SSEDecoder, SSEEvent
from tests.conftest import POST_HEADERS, ServerProcess, initialize, session_headers, wait_until

WAIT = 15.0


async def sse_events(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    decoder = SSEDecoder()
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            yield event


def long_call(request_id: int | str, duration: float, steps: int, token: str | None = "tok") -> dict[str, Any]:
    params: dict[str, Any] = {"name": "longRunningOperation", "arguments": {"duration": duration, "steps": steps}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def health(http: httpx.AsyncClient, server: ServerProcess) -> dict[str, Any]:
    response = await http.get(f"{server.url}/health")
    document: dict[str, Any] = response.json()
    return document


async def test_cancelled_notification_ends_exactly_that_request(
    shared_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    session_id = await initialize(http, shared_server.mcp_url)
    headers = session_headers(session_id)
    received: list[dict[str, Any]] = []

    async def run_long_call() -> None:
        async with http.stream("POST", shared_server.mcp_url, json=long_call(1, 30, 30), headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for event in sse_events(r):
                if event.data:
                    received.append(json.loads(event.data))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_long_call)
            await wait_until(lambda: len(received) >= 1, WAIT, "the first progress notification")
            # A request with the other type of the same id is a different request: untouched.
            quick = await http.post(shared_server.mcp_url, json=long_call("1", 0.2, 1, None), headers=headers)
            assert quick.json()["id"] == "1"
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
            accepted = await http.post(shared_server.mcp_url, json=cancel, headers=headers)
            assert accepted.status_code == 202
    # The stream ended without a response: only progress notifications were sent.
    assert received and all(m.get("method") == "notifications/progress" for m in received)
    # The session is intact and idle.
    ping = await http.post(shared_server.mcp_url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers)
    assert ping.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}


async def test_delete_cancels_work_and_closes_streams(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server()
    session_id = await initialize(http, server.mcp_url)
    headers = session_headers(session_id)
    ended: list[str] = []

    async def follow(kind: str, method: str, body: dict[str, Any] | None) -> None:
        async with http.stream(method, server.mcp_url, headers=headers, json=body) as r:
            assert r.status_code == 200
            async for _ in sse_events(r):
                pass
        ended.append(kind)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, "post", "POST", long_call(1, 60, 60))
            nursery.start_soon(follow, "get", "GET", None)
            await wait_until(lambda: _in_flight(http, server, 1), WAIT, "one request in flight")
            deleted = await http.delete(server.mcp_url, headers={"Mcp-Session-Id": session_id})
            assert deleted.status_code == 204
    assert sorted(ended) == ["get", "post"]
    state = await health(http, server)
    assert state["sessions"] == 0 and state["inFlightRequests"] == 0
    again = await http.post(server.mcp_url, json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=headers)
    assert again.status_code == 404


async def _in_flight(http: httpx.AsyncClient, server: ServerProcess, count: int) -> bool:
    return (await health(http, server))["inFlightRequests"] == count


async def test_idle_session_expires_and_then_gets_404(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(session_idle_ttl=1)
    session_id = await initialize(http, server.mcp_url)
    headers = session_headers(session_id)
    assert (await health(http, server))["sessions"] == 1
    await wait_until(lambda: _sessions(http, server, 0), WAIT, "no session left")
    expired = await http.post(server.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
    assert expired.status_code == 404
    # A client recovers by initializing again.
    await initialize(http, server.mcp_url)


async def _sessions(http: httpx.AsyncClient, server: ServerProcess, count: int) -> bool:
    return (await health(http, server))["sessions"] == count


async def test_client_disconnect_mid_request_then_resume_on_the_same_stream(
    shared_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    session_id = await initialize(http, shared_server.mcp_url)
    headers = session_headers(session_id)
    first_part: list[SSEEvent] = []
    with trio.fail_after(WAIT):
        async with http.stream("POST", shared_server.mcp_url, json=long_call(7, 2, 4), headers=headers) as r:
            async for event in sse_events(r):
                first_part.append(event)
                if len(first_part) == 2:  # the priming event and the first progress notification
                    break
    priming, progress = first_part
    assert priming.data == "" and priming.id and priming.retry
    assert json.loads(progress.data)["params"]["progress"] == 1

    # The work went on without a listener; resuming from the last seen id gives exactly the rest.
    rest: list[dict[str, Any]] = []
    with trio.fail_after(WAIT):
        async with http.stream(
            "GET", shared_server.mcp_url, headers={**headers, "Last-Event-ID": str(progress.id)}
        ) as resumed:
            assert resumed.status_code == 200
            async for event in sse_events(resumed):
                if event.data:
                    rest.append(json.loads(event.data))
    progress_values = [m["params"]["progress"] for m in rest if m.get("method") == "notifications/progress"]
    assert progress_values == [2, 3, 4]
    assert rest[-1]["id"] == 7 and "result" in rest[-1]

    # Replaying from the priming event gives the whole stream, and nothing of any other stream.
    with trio.fail_after(WAIT):
        async with http.stream(
            "GET", shared_server.mcp_url, headers={**headers, "Last-Event-ID": str(priming.id)}
        ) as r:
            everything = [json.loads(e.data) async for e in sse_events(r) if e.data]
    assert [m.get("params", {}).get("progress") for m in everything[:4]] == [1, 2, 3, 4]
    assert everything[-1]["id"] == 7
    assert all(m.get("id", 7) == 7 for m in everything)


async def test_resuming_a_stream_of_another_session_is_refused(
    shared_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    owner = await initialize(http, shared_server.mcp_url)
    other = await initialize(http, shared_server.mcp_url)
    with trio.fail_after(WAIT):
        async with http.stream(
            "POST", shared_server.mcp_url, json=long_call(1, 0.2, 1), headers=session_headers(owner)
        ) as r:
            ids = [e.id async for e in sse_events(r)]
    response = await http.get(shared_server.mcp_url, headers={**session_headers(other), "Last-Event-ID": str(ids[0])})
    assert response.status_code == 404


async def test_shutdown_closes_streams_with_retry_before_the_graceful_timeout(
    make_server: Any, http: httpx.AsyncClient
) -> None:
    server = make_server()
    session_id = await initialize(http, server.mcp_url)
    headers = session_headers(session_id)
    events: list[SSEEvent] = []
    with trio.fail_after(WAIT):
        async with http.stream("GET", server.mcp_url, headers=headers) as stream:
            assert stream.status_code == 200
            decoder = SSEDecoder()
            chunks = stream.aiter_bytes()
            events.extend(decoder.feed(await chunks.__anext__()))  # the priming event
            started = time.monotonic()
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            async for chunk in chunks:
                events.extend(decoder.feed(chunk))
            closed_after = time.monotonic() - started
    # hypercorn.toml's graceful_timeout is 5 s: the stream was closed by refserver well before that.
    assert closed_after < 3.0, closed_after
    assert decoder.retry == 1000
    assert await trio.to_thread.run_sync(server.process.wait, 10) == 0
    assert "draining" in server.log()


async def test_answers_during_the_drain_close_their_connections(make_server: Any, http: httpx.AsyncClient) -> None:
    """Once shutdown has begun, answers carry `Connection: close`: the client's next request goes to another
    instance instead of racing Hypercorn closing the kept-alive connection (which held the worker's exit)."""
    server = make_server()
    session_id = await initialize(http, server.mcp_url)
    headers = session_headers(session_id)
    before = await http.post(server.mcp_url, json=long_call(1, 0.01, 1, token=None), headers=headers)
    assert before.status_code == 200 and before.headers.get("connection") != "close"
    answers: list[httpx.Response] = []

    async def slow_call() -> None:
        answers.append(await http.post(server.mcp_url, json=long_call(2, 1.0, 1, token=None), headers=headers))

    async def call_running() -> bool:
        return bool((await http.get(f"{server.url}/health")).json()["inFlightRequests"] == 1)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call)
            await wait_until(call_running, WAIT, "the slow call to be running")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
    [during] = answers
    assert during.status_code == 200 and during.json()["id"] == 2 and "result" in during.json()
    assert during.headers["connection"] == "close"
    assert await trio.to_thread.run_sync(server.process.wait, 10) == 0


async def test_new_get_stream_supersedes_the_old_one(shared_server: ServerProcess, http: httpx.AsyncClient) -> None:
    session_id = await initialize(http, shared_server.mcp_url)
    headers = session_headers(session_id)
    with trio.fail_after(WAIT):
        async with http.stream("GET", shared_server.mcp_url, headers=headers) as first:
            chunks = first.aiter_bytes()
            await chunks.__anext__()
            async with http.stream("GET", shared_server.mcp_url, headers=headers) as second:
                assert second.status_code == 200
                rest = b"".join([chunk async for chunk in chunks])  # the first stream ends
    assert b"retry:" in rest


def test_post_headers_constant_is_what_clients_send() -> None:
    assert "text/event-stream" in POST_HEADERS["Accept"]

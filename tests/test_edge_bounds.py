"""The time bounds on the HTTP edge, through a real Hypercorn over real sockets.

A client that sends its request head and then stalls is answered 408 and its connection is closed; a client that
stops reading a stream is dropped after the write stall limit and its session is reaped like any idle one. Both
are the slow-loris shapes: without the bounds, each such client holds a task, buffers and (for a stream) its
session for as long as it likes.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import h11
import httpx
import pytest
import trio

from tests.conftest import POST_HEADERS, initialize, session_headers, wait_until
from tests.test_observability import scrape, value

SHORT_BODY_TIMEOUT = 0.5
"""The body read timeout the tests configure: long enough for any honest body here, short for the test."""
SHORT_STALL_LIMIT = 0.5
SHORT_IDLE_TTL = 1.0
RESPONSE_WAIT = 20.0
"""Seconds a test waits for the server to answer or close (a guard against a hang, not a timing assertion)."""
QUIET_SETTINGS = {"log_message_interval": 3600, "subscription_update_interval": 3600}
PARTIAL_BODY = b'{"jsonrpc":"2.0","id":1,'
DECLARED_LENGTH = 100
SUBSCRIBED_RESOURCES = 100
"""Each one is a `notifications/resources/updated` on the GET stream per update round."""
TINY_RECEIVE_BUFFER = 4096
TINY_SEGMENT = 536
"""The client's MSS: the server's send buffer is sized from it, so a few kB fill the whole path."""


async def read_response(stream: trio.SocketStream, conn: h11.Connection) -> tuple[h11.Response, bytes]:
    """One complete response, then the connection's end: the server must close it (the body was never read)."""
    response: h11.Response | None = None
    body = b""
    with trio.fail_after(RESPONSE_WAIT):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        assert conn.their_state is h11.MUST_CLOSE, "a refusal of an unread body must close the connection"
        while await stream.receive_some(65536):
            pass  # EOF: the server closed its side
    assert response is not None
    return response, body


async def send_stalled_head(port: int, target: str, headers: dict[str, str]) -> tuple[h11.Response, bytes]:
    """Send a request head and part of its body, then nothing more; return the server's answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        head = h11.Request(method="POST", target=target, headers=[("Host", f"127.0.0.1:{port}"), *headers.items()])
        await stream.send_all(conn.send(head) + conn.send(h11.Data(data=PARTIAL_BODY)))
        return await read_response(stream, conn)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_that_stalls_after_its_head_gets_408_and_leaves_nothing(
    make_server: Any, http: httpx.AsyncClient, framing: str
) -> None:
    server = make_server(body_read_timeout=SHORT_BODY_TIMEOUT, metrics="on", **QUIET_SETTINGS)
    length = {"Content-Length": str(DECLARED_LENGTH)} if framing == "content-length" else {}
    framing_header = length or {"Transfer-Encoding": "chunked"}
    response, body = await send_stalled_head(server.port, "/mcp", {**POST_HEADERS, **framing_header})

    assert response.status_code == 408, body
    error = json.loads(body)["error"]
    assert error["code"] == -32600 and "did not arrive" in error["message"], error
    samples = await scrape(http, f"{server.url}/metrics")
    assert value(samples, "refserver_http_requests_in_flight") == 1  # the scrape itself
    assert value(samples, "refserver_http_open_streams") == 0
    assert value(samples, "refserver_sessions") == 0
    assert value(samples, "refserver_sessions_created_total") == 0
    assert value(samples, "refserver_mcp_requests_in_flight") == 0
    assert value(samples, "refserver_http_requests_total", method="POST", route="/mcp", status="408") == 1


async def test_an_oauth_form_that_stalls_gets_408_from_the_same_reader(make_server: Any) -> None:
    server = make_server(auth_mode="embedded", body_read_timeout=SHORT_BODY_TIMEOUT, **QUIET_SETTINGS)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(DECLARED_LENGTH)}
    response, body = await send_stalled_head(server.port, "/token", headers)
    assert response.status_code == 408, body
    assert json.loads(body)["error"] == "invalid_request"


def tiny_window_socket() -> trio.socket.SocketType:
    """A client socket whose receive window is a few kB: a server writing to it blocks as soon as it is full."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY_RECEIVE_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, TINY_SEGMENT)
    return sock


async def test_a_get_stream_that_is_not_read_is_dropped_and_its_session_reaped(
    make_server: Any, http: httpx.AsyncClient
) -> None:
    server = make_server(
        write_stall_limit=SHORT_STALL_LIMIT,
        session_idle_ttl=SHORT_IDLE_TTL,
        subscription_update_interval=0.05,
        log_message_interval=3600,
        metrics="on",
    )
    metrics_url = f"{server.url}/metrics"
    session_id = await initialize(http, server.mcp_url)
    headers = session_headers(session_id)
    for number in range(1, SUBSCRIBED_RESOURCES + 1):
        subscribe = {
            "jsonrpc": "2.0",
            "id": number,
            "method": "resources/subscribe",
            "params": {"uri": f"test://static/resource/{number}"},
        }
        assert (await http.post(server.mcp_url, json=subscribe, headers=headers)).status_code == 200

    sock = tiny_window_socket()
    await sock.connect(("127.0.0.1", server.port))
    async with trio.SocketStream(sock) as stream:
        conn = h11.Connection(h11.CLIENT)
        get_headers = {
            "Host": f"127.0.0.1:{server.port}",
            "Accept": "text/event-stream",
            "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": "2025-11-25",
        }
        get = h11.Request(method="GET", target="/mcp", headers=list(get_headers.items()))
        await stream.send_all(conn.send(get) + conn.send(h11.EndOfMessage()))
        # The client never reads while the server streams: its window fills, the server's writes block.

        async def session_reaped() -> bool:
            samples = await scrape(http, metrics_url)
            return (
                value(samples, "refserver_sessions") == 0
                and value(samples, "refserver_sessions_reaped_idle_total") == 1
                and value(samples, "refserver_http_open_streams") == 0
            )

        await wait_until(session_reaped, RESPONSE_WAIT, "the stalled stream dropped and its session reaped")

        # What the server had sent is still in the buffers; after it, the server's side is closed.
        received = b""
        with trio.fail_after(RESPONSE_WAIT):
            while chunk := await stream.receive_some(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    assert b"notifications/resources/updated" in received
    samples = await scrape(http, metrics_url)
    assert value(samples, "refserver_http_stalled_connections_dropped_total") == 1
    assert value(samples, "refserver_http_pending_writes") == 0
    log = server.log()
    assert '"event": "http.write_stalled"' in log and "Traceback" not in log, log
    gone = await http.post(server.mcp_url, json={"jsonrpc": "2.0", "id": 0, "method": "ping"}, headers=headers)
    assert gone.status_code == 404

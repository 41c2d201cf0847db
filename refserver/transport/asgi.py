"""Plain ASGI for the hot endpoint: a request read straight from the scope, answers written straight to `send`.

`/mcp` carries nearly all MCP traffic. Served through Quart, every call paid for a request and an app context,
Werkzeug headers, URL routing, before/after hooks and a nursery with two tasks (one only to watch for the
client leaving). Here a request is one dictionary of headers and a body reader; a client that leaves is only
watched for while an SSE stream is open, the one case where nothing else would notice.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Final

import attrs
import trio

from refserver.request_body import read_bounded_body
from refserver.web.asgi_types import Receive, Scope, Send

AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Headers = list[tuple[bytes, bytes]]

JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"


class ClientDisconnected(Exception):
    """The client left before its request was read: there is nobody to answer."""


class HttpRequest:
    """One HTTP request: method, path, headers (lowercase names, the first value of each) and its body."""

    __slots__ = ("_receive", "body_complete", "headers", "method", "path", "query_string", "rpc_id", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope.get("query_string", b"")
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            # Hypercorn hands over lowercase names; werkzeug's `get` also returns the first of repeated headers.
            headers.setdefault(bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        self.headers = headers
        self.body_complete = False
        self.rpc_id: int | str | None = None
        """The id of the request in the body, once read: a refusal after that point echoes it."""

    def header(self, name: str) -> str | None:
        """A request header by its lowercase name."""
        return self.headers.get(name)

    @property
    def has_body(self) -> bool:
        length = self.headers.get("content-length", "").strip()
        return "transfer-encoding" in self.headers or length not in ("", "0")

    async def read_body(self, limit: int, time_limit: float) -> bytes:
        """The whole body, refused (413) as soon as it is known to exceed `limit` bytes, or (408) if it has not
        arrived within `time_limit` seconds."""
        async with aclosing(self._body_chunks()) as chunks:
            body = await read_bounded_body(
                chunks, self.headers.get("content-length"), limit=limit, time_limit=time_limit
            )
        self.body_complete = True
        return body

    async def _body_chunks(self) -> AsyncGenerator[bytes, None]:
        while True:
            message = await self._receive()
            if message["type"] != "http.request":
                raise ClientDisconnected
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    async def wait_for_disconnect(self) -> None:
        """Return once the client has gone (anything it still sends is discarded)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass


@attrs.frozen
class HttpResponse:
    """A complete answer (`body`) or a streamed one (`stream`, sent chunk by chunk as it is produced)."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON
    headers: Iterable[tuple[str, str]] = ()
    stream: AsyncGenerator[bytes, None] | None = None


def encode_headers(response: HttpResponse, extra: Iterable[tuple[str, str]]) -> Headers:
    headers: Headers = []
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type.encode("latin-1")))
    if response.stream is None:
        headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    for name, value in response.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    for name, value in extra:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return headers


async def send_response(
    request: HttpRequest, send: Send, response: HttpResponse, headers: Headers, work: trio.Nursery | None = None
) -> None:
    """Write `response`; a stream is followed until it ends or the client leaves (or stops reading: then
    `web/write_stall.py` ends the connection, and this sees the client leave).

    `work`: the nursery of the request's own work, if it has one (a 2026 request), which ends with its answer.
    The watcher for the client leaving then runs in it, rather than in a nursery of its own: an open stream
    (a `subscriptions/listen`, 10,000 of them at once) pays for one nursery, not two.
    """
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    del headers  # sent: Hypercorn has its own copy
    if response.stream is None:
        await send({"type": "http.response.body", "body": response.body})
        return
    # A stream may be open for hours: the decoded request headers were for deciding how to answer, not for that.
    request.headers = {}
    async with aclosing(response.stream) as chunks:
        if work is not None:
            await _send_chunks(request, send, chunks, work)
            return
        async with trio.open_nursery() as nursery:
            await _send_chunks(request, send, chunks, nursery)


async def _send_chunks(request: HttpRequest, send: Send, chunks: AsyncIterator[bytes], nursery: trio.Nursery) -> None:
    """Send every chunk; `nursery` is cancelled when they end or the client leaves (what else runs in it belongs
    to this response)."""

    async def end_when_client_leaves() -> None:
        await request.wait_for_disconnect()
        nursery.cancel_scope.cancel()

    nursery.start_soon(end_when_client_leaves)
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    nursery.cancel_scope.cancel()

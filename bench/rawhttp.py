"""A minimal HTTP/1.1 client on raw Trio sockets, cheap enough to hold 10,000 SSE streams in one process.

It speaks exactly what the benchmark needs: keep-alive requests with a small body, responses framed
by Content-Length or chunked transfer coding, and a streamed (chunked) body read incrementally. It is
not a general client: no redirects, no compression, no TLS, no pipelining.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Final

import attrs
import trio

RECEIVE_BYTES: Final = 65536
"""Largest single read; an SSE event or a small JSON answer fits in one."""
MAX_HEAD_BYTES: Final = 65536
"""A response head larger than this is an error (refserver's are well under 1 KiB)."""


class HttpError(Exception):
    """The server closed the connection or sent something this client does not understand."""


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Connection:
    """One keep-alive connection to `host:port`; requests on it are sequential.

    A response with `Connection: close` (Hypercorn sends one after `keep_alive_max_requests`, 1000 by
    default) is honoured: the next request goes on a new connection, as a browser or wrk would do.
    """

    def __init__(self, stream: trio.SocketStream, host: str, port: int, authority: str) -> None:
        self._stream = stream
        self._host = host
        self._port = port
        self._authority = authority
        self._buffer = bytearray()
        self._must_reconnect = False
        self.reconnects = 0

    @classmethod
    async def open(cls, host: str, port: int, authority: str | None = None) -> Connection:
        stream = await trio.open_tcp_stream(host, port)
        return cls(stream, host, port, authority or f"{host}:{port}")

    async def _reconnect_if_told(self) -> None:
        if self._must_reconnect:
            await self._stream.aclose()
            self._stream = await trio.open_tcp_stream(self._host, self._port)
            self._buffer.clear()
            self._must_reconnect = False
            self.reconnects += 1

    async def aclose(self) -> None:
        await self._stream.aclose()

    def _encode(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> RawResponse:
        await self._reconnect_if_told()
        await self._stream.send_all(self._encode(method, path, headers or {}, body))
        status, response_headers = await self._read_head()
        self._must_reconnect = response_headers.get("connection", "").lower() == "close"
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = [chunk async for chunk in self._chunks()]
            return RawResponse(status, response_headers, b"".join(chunks))
        length = int(response_headers.get("content-length", "0"))
        return RawResponse(status, response_headers, await self._read_exactly(length))

    async def open_stream(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str]]:
        """Send a request whose answer is a stream; read only its head. Then iterate `stream_chunks()`."""
        await self._reconnect_if_told()
        await self._stream.send_all(self._encode(method, path, headers or {}, body))
        return await self._read_head()

    def stream_chunks(self) -> AsyncIterator[bytes]:
        """The body of a chunked response, chunk by chunk, as the server sends it."""
        return self._chunks()

    async def _fill(self) -> None:
        data = await self._stream.receive_some(RECEIVE_BYTES)
        if not data:
            raise HttpError("connection closed by the server")
        self._buffer += data

    async def _read_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise HttpError("line too long")
            await self._fill()

    async def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            await self._fill()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def _read_head(self) -> tuple[int, dict[str, str]]:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise HttpError("response head too large")
            await self._fill()
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"bad status line {head[0]!r}")
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            size_line = await self._read_line()
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while await self._read_line():  # trailers, then the empty line
                    pass
                return
            data = await self._read_exactly(size + 2)
            yield data[:-2]

"""Server-Sent Events, sans-IO: encoding for the server, an incremental decoder for clients and tests.

The decoder follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; a line starting with
`:` is a comment; an empty line dispatches the event; `id` with a NUL is ignored; `retry` must be digits.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

HEARTBEAT: Final = b": ping\n\n"
_BOM: Final = b"\xef\xbb\xbf"
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
MAX_LINE_BYTES: Final = 1024 * 1024
"""A decoder refuses a single line above this (protects test clients from a runaway stream)."""


def _field_lines(name: str, value: str) -> str:
    # A value with line breaks becomes several `data:` lines; the receiver joins them with "\n".
    # CR and CRLF end a line on the wire too, so they are split on as well (and arrive as "\n").
    return "".join(f"{name}: {line}\n" for line in _LINE_BREAK.split(value))


def encode_event(
    data: str | None,
    *,
    event_id: str | None = None,
    event: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One event. `data=""` gives an empty data field (the priming event of the transport spec)."""
    parts: list[str] = []
    if event_id is not None:
        if "\n" in event_id or "\r" in event_id or "\0" in event_id:
            raise ValueError("event id must not contain newlines or NUL")
        parts.append(f"id: {event_id}\n")
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("event type must not contain newlines")
        parts.append(f"event: {event}\n")
    if retry_ms is not None:
        parts.append(f"retry: {int(retry_ms)}\n")
    if data is not None:
        parts.append(_field_lines("data", data) if data else "data:\n")
    parts.append("\n")
    return "".join(parts).encode()


def encode_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


@attrs.frozen
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


@attrs.define
class SSEDecoder:
    """Feed bytes in any chunking; complete events come out in order."""

    last_event_id: str | None = None
    retry: int | None = None
    comments: int = 0
    _buffer: bytes = b""
    _data: list[str] = attrs.field(factory=list)
    _event: str = ""
    _saw_field: bool = False
    _pending_cr: bool = False
    _bom_checked: bool = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        self._buffer += chunk
        if not self._bom_checked:
            # The stream may start with a UTF-8 BOM, which is not part of the first line.
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return events
            if self._buffer.startswith(_BOM):
                self._buffer = self._buffer[len(_BOM) :]
            self._bom_checked = True
        while True:
            line, found = self._take_line()
            if not found:
                if len(self._buffer) > MAX_LINE_BYTES:
                    raise ValueError("SSE line too long")
                return events
            event = self._process_line(line)
            if event is not None:
                events.append(event)

    def _take_line(self) -> tuple[str, bool]:
        buf = self._buffer
        if self._pending_cr and buf:
            # Only a following byte settles whether the CR was half of a CRLF.
            if buf[:1] == b"\n":
                buf = buf[1:]
            self._pending_cr = False
        for index, byte in enumerate(buf):
            if byte == 0x0A or byte == 0x0D:
                line = buf[:index]
                rest = buf[index + 1 :]
                if byte == 0x0D:
                    if rest[:1] == b"\n":
                        rest = rest[1:]
                    elif not rest:
                        self._pending_cr = True  # the LF of a CRLF may come in the next chunk
                self._buffer = rest
                return line.decode("utf-8", errors="replace"), True
        self._buffer = buf
        return "", False

    def _process_line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._saw_field = True
        elif name == "event":
            self._event = value
            self._saw_field = True
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
            self._saw_field = True
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            # An id-only event (such as the priming event) updates last_event_id without a message.
            self._event = ""
            self._saw_field = False
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self.last_event_id,
            retry=self.retry,
        )
        self._data = []
        self._event = ""
        self._saw_field = False
        return event

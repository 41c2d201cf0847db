"""Which request and which session the running task works for, carried in a context variable.

Trio copies the spawning task's context into every new task, so tasks started while a request is handled (its
MCP request tasks in the session's nursery) log with that request's id. The context object is mutable and shared
by those tasks: when a handler learns the session id (an `initialize` creates the session), every task of the
request sees it at once.
"""

from __future__ import annotations

import itertools
import re
import secrets
from contextvars import ContextVar, Token
from typing import Final

import attrs

REQUEST_ID_HEADER: Final = "X-Request-ID"
MAX_REQUEST_ID_LENGTH: Final = 64
"""An incoming X-Request-ID longer than this is replaced by our own (it goes into every log line)."""
MAX_SESSION_ID_LENGTH: Final = 128
"""Session ids are 43 characters; a longer header value is logged truncated (it is attacker-controlled)."""
REQUEST_ID_PREFIX_BYTES: Final = 6
"""48 random bits per process: generated ids of different instances (and restarts) do not collide."""


@attrs.define(slots=True)
class LogContext:
    request_id: str | None = None
    session_id: str | None = None
    route: str | None = None
    """The matched URL rule (e.g. `/mcp`), set once routing is done; the metrics label."""
    trace_id: str | None = None
    parent_span_id: str | None = None
    """From the W3C `traceparent` a 2026 request carries in `_meta`: log lines join the caller's trace."""

    def join_trace(self, traceparent: str | None) -> None:
        ids = traceparent_ids(traceparent)
        if ids is not None:
            self.trace_id, self.parent_span_id = ids


_CURRENT: ContextVar[LogContext | None] = ContextVar("refserver_log_context", default=None)


def current() -> LogContext | None:
    return _CURRENT.get()


def enter(context: LogContext | None) -> Token[LogContext | None]:
    """Make `context` current in this task (and the tasks it starts from now on); returns the reset token."""
    return _CURRENT.set(context)


def leave(token: Token[LogContext | None]) -> None:
    _CURRENT.reset(token)


_VISIBLE_ASCII: Final = re.compile(r"[\x21-\x7e]+")
_PROCESS_PREFIX: Final = secrets.token_hex(REQUEST_ID_PREFIX_BYTES)
_sequence = itertools.count(1)


def sane_request_id(value: str | None) -> str | None:
    """The client's X-Request-ID if it is 1-64 visible ASCII characters, else None."""
    if value and len(value) <= MAX_REQUEST_ID_LENGTH and _VISIBLE_ASCII.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    """A random per-process prefix and a counter: unique across instances, and no system call per request."""
    return f"{_PROCESS_PREFIX}-{next(_sequence):x}"


def loggable_session_id(value: str | None) -> str | None:
    """A session id as it may appear in a log: visible ASCII, bounded length (it comes from the client)."""
    if not value:
        return None
    value = value[:MAX_SESSION_ID_LENGTH]
    return value if _VISIBLE_ASCII.fullmatch(value) else None


_TRACEPARENT: Final = re.compile(r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}")


def traceparent_ids(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a valid W3C `traceparent` (Trace Context, level 1), else None."""
    found = _TRACEPARENT.fullmatch(value.strip().lower()) if value else None
    if found is None or found["version"] == "ff":
        return None
    trace, span = found["trace"], found["span"]
    if trace == "0" * 32 or span == "0" * 16:
        return None  # the all-zero ids are invalid by definition
    return trace, span

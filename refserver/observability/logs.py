"""One JSON line per log record, with the request id and session id, and redaction as a last line of defence.

Nothing in refserver logs a token, a code, a secret or an Authorization header on purpose; the redaction here is
the safety net for a mistake: values of fields named like a credential are masked, and so are JWT-shaped strings,
`Bearer`/`Basic` credentials and `token=...`-style pairs inside any message, field or traceback.

Cost: formatting happens only for records that pass the level check, so a disabled DEBUG call costs one
`isEnabledFor` (callers on hot paths check it before building their fields).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from refserver.observability import context
from refserver.observability.tracing import TRACING

REDACTED: Final = "[REDACTED]"
ACCESS_LOGGER: Final = "refserver.access"
HYPERCORN_ERROR_LOGGER: Final = "hypercorn.error"
HYPERCORN_ACCESS_LOGGER: Final = "hypercorn.access"
MAX_FIELD_DEPTH: Final = 4
"""Nested extra fields deeper than this are logged as a placeholder (a log line stays small and finite)."""

_TOKEN_CHARS: Final = r"A-Za-z0-9_\-"
_JWT: Final = re.compile(
    rf"(?<![{_TOKEN_CHARS}])(?:eyJ[{_TOKEN_CHARS}]*|[{_TOKEN_CHARS}]{{8,}})\.[{_TOKEN_CHARS}]{{8,}}\.[{_TOKEN_CHARS}]{{8,}}"
    rf"|(?<![{_TOKEN_CHARS}])eyJ[{_TOKEN_CHARS}]*\.[{_TOKEN_CHARS}]*\.[{_TOKEN_CHARS}]*"
)
"""Three base64url segments (a JWS compact serialization), or anything starting like a JWT header (`eyJ`)."""
_AUTH_CREDENTIALS: Final = re.compile(r"(?i)\b(?:bearer|basic|dpop)\s+(?:<[^>\s]*>|[A-Za-z0-9\-._~+/]{8,}=*)")
"""An Authorization header value (RFC 6750 b64token, RFC 7617 credentials), or its `<token>` placeholder."""
_KEY_VALUE: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9_])"
    r"((?:access_|refresh_|id_|subject_|device_)?token|code|code_verifier|client_secret|secret|password|passwd"
    r"|assertion|authorization|cookie|api_?key)"
    r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)"
    r"([^\s\"'&,;}\\]+)"
)
"""`token=...`, `"code": "..."`, `client_secret: ...`: a query string, a form or a JSON document in a message."""
_NUMBER: Final = re.compile(r"-?\d+")
_SENSITIVE_KEY: Final = re.compile(
    r"(?i)token|secret|passw|authoriz|cookie|verifier|credential|assertion|api_?key|(?:^|_)code$"
)
"""Names of extra fields whose value is never logged."""
_NOT_SENSITIVE_KEYS: Final = frozenset({"status_code"})

_STANDARD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_CONTEXT_ATTRS: Final = ("event", "request_id", "session_id", "trace_id", "span_id", "parent_span_id")

KNOWN_EVENTS: Final[Mapping[tuple[str, str], tuple[str, tuple[str, ...]]]] = {
    ("refserver.registry", "session %s closed here (%s)"): ("session.closed", ("session_id", "reason")),
    ("refserver.registry", "draining: %d sessions"): ("server.draining", ("sessions",)),
    ("refserver.backend.redis.bus", "redis bus disconnected (%s); reconnecting"): (
        "redis.bus.disconnected",
        ("error",),
    ),
    ("refserver.backend.redis.events", "stream %s of session %s abandoned by instance %s: closed"): (
        "stream.abandoned",
        ("stream_id", "session_id", "instance_id"),
    ),
    ("refserver.oauth.remote_verifier", "authorization server %s is %s: %s"): (
        "auth_server.state",
        ("issuer", "state", "why"),
    ),
    ("refserver.oauth.clients", "registered client %s (%s)"): ("oauth.client_registered", ("client", "auth_method")),
    ("refserver.oauth.token_endpoint", "authorization code replayed: grant %s revoked"): (
        "oauth.code_replayed",
        ("grant",),
    ),
    ("refserver.oauth.token_endpoint", "refresh token reused: grant %s revoked"): ("oauth.refresh_reused", ("grant",)),
    ("refserver.session", "request %s (%s) failed"): ("mcp.request_failed", ("rpc_id", "method")),
    ("refserver.tool_calls", "tool %s failed"): ("tool.failed", ("tool",)),
    ("refserver.tasks.runner", "task %s: its run was lost with its instance; running it again"): (
        "task.rerun",
        ("task",),
    ),
    ("refserver.tasks.runner", "task %s not run again: %s"): ("task.lost", ("task", "reason")),
    ("refserver.tasks.runner", "task %s: lease taken over, stopping this run"): ("task.lease_taken", ("task",)),
    ("refserver.tasks.runner", "task leases not renewable (%s): stopping %d runs"): (
        "task.leases_unrenewable",
        ("reason", "runs"),
    ),
    ("refserver.web.errors", "unhandled error"): ("error.unhandled", ()),
}
"""Existing log calls (in modules that predate structured logging) get an event name and their arguments as fields."""


# --- redaction -------------------------------------------------------------------------------------------------


def _mask_pair(match: re.Match[str]) -> str:
    key, separator, value = match.groups()
    if key.lower() == "code" and _NUMBER.fullmatch(value):
        return match.group(0)  # a JSON-RPC or HTTP error code, not an authorization code
    if value == REDACTED:
        return match.group(0)
    return f"{key}{separator}{REDACTED}"


def redact_text(text: str) -> str:
    """`text` with every credential-looking part replaced by [REDACTED]."""
    if len(text) < 8:
        return text
    text = _AUTH_CREDENTIALS.sub(REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    return _KEY_VALUE.sub(_mask_pair, text)


def sensitive_key(key: str) -> bool:
    return key not in _NOT_SENSITIVE_KEYS and _SENSITIVE_KEY.search(key) is not None


def redact(value: Any, key: str | None = None, depth: int = 0) -> Any:
    """A JSON-ready copy of `value` with credentials masked (by field name and by shape)."""
    if key is not None and value is not None and sensitive_key(key):
        return REDACTED
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth >= MAX_FIELD_DEPTH:
        return "..."
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v, None, depth + 1) for v in value]
    return redact_text(str(value))


# --- records ---------------------------------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Adds the current request id and session id (and, for known messages, an event name and fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        known = KNOWN_EVENTS.get((record.name, record.msg)) if isinstance(record.msg, str) else None
        if known is not None and not hasattr(record, "event"):
            event, names = known
            record.event = event
            args = record.args if isinstance(record.args, tuple) else ()
            for name, value in zip(names, args, strict=False):
                setattr(record, name, value)
        current = context.current()
        if not hasattr(record, "request_id"):
            record.request_id = current.request_id if current else None
        if getattr(record, "session_id", None) is None:
            record.session_id = current.session_id if current else None
        if not hasattr(record, "trace_id"):
            if (traced := TRACING.current_trace_id()) is not None:
                record.trace_id = traced  # our own span's trace: the caller's, or a new one
                record.span_id = TRACING.current_span_id()
            elif current is not None and current.trace_id is not None:
                record.trace_id = current.trace_id
                record.parent_span_id = current.parent_span_id
        return True


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "event", "message", "request_id", "session_id", ...extra fields, "exc"}."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        if event is not None:
            document["event"] = str(event)
        document["message"] = redact_text(record.getMessage())
        for name in ("request_id", "session_id", "trace_id", "span_id", "parent_span_id"):
            value = getattr(record, name, None)
            if value is not None:
                document[name] = redact(value)
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key in _CONTEXT_ATTRS or key.startswith("_"):
                continue
            document[key] = redact(value, key)
        if record.exc_info:
            document["exc"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            document["exc"] = redact_text(record.exc_text)
        if record.stack_info:
            document["stack"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """The human format (REFSERVER_LOG_FORMAT=text): one line, ids appended, the same redaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{name}={getattr(record, name)}" for name in _CONTEXT_ATTRS if getattr(record, name, None)]
        if ids:
            first, newline, rest = line.partition("\n")
            line = f"{first} [{' '.join(ids)}]{newline}{rest}"
        return redact_text(line)


# --- set-up ----------------------------------------------------------------------------------------------------


class _RefserverHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our handler on the root logger (a marker class, so configuring twice replaces it instead of adding one)."""


def configure_logging(level: str, log_format: str = "json") -> logging.Handler:
    """Send every log record (ours, Hypercorn's, Quart's, warnings) through one redacting handler on stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _RefserverHandler):
            root.removeHandler(handler)
    handler = _RefserverHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request it makes at INFO (JWKS, metadata, introspection): detail for DEBUG only.
    logging.getLogger("httpx").setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)
    adopt_hypercorn_loggers()
    return handler


def _hypercorn_worker_config() -> Any:
    """The Hypercorn `Config` of this worker process (None when not a Hypercorn worker)."""
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None) or {}
    config = kwargs.get("config")
    return config if hasattr(config, "errorlog") and hasattr(config, "accesslog") else None


def adopt_hypercorn_loggers() -> None:
    """Hypercorn's own lines go through our handler as JSON; its access log is replaced by ours.

    Hypercorn builds its loggers lazily, after the app is imported, and gives each a plain-text handler of its
    own (`errorlog = "-"`, `accesslog = "-"`). A `logging.Logger` given as its target is used as it is, so the
    worker's config is pointed at the `hypercorn.error` logger (which propagates to the root handler) and its
    access log is switched off: REFSERVER_ACCESS_LOG writes one JSON line per request instead.
    """
    config = _hypercorn_worker_config()
    if config is not None:
        config.errorlog = logging.getLogger(HYPERCORN_ERROR_LOGGER)
        config.accesslog = None
    error_logger = logging.getLogger(HYPERCORN_ERROR_LOGGER)
    error_logger.handlers.clear()
    error_logger.propagate = True
    access_logger = logging.getLogger(HYPERCORN_ACCESS_LOGGER)
    access_logger.handlers.clear()
    access_logger.propagate = False
    access_logger.disabled = True

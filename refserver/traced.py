"""The request core, traced: one SERVER span per MCP request (and per run of a task), when tracing is on.

A subclass, chosen at start-up only when `OTEL_TRACES_EXPORTER` asks for spans, so that with tracing off the core
is the plain one and costs nothing extra. Spans follow the OpenTelemetry MCP semantic conventions: the name
`{mcp.method.name} {target}` (the tool or prompt name), the method, the JSON-RPC id, the protocol version (and
our era), the tool / prompt / resource named, the outcome; never a token, an argument or a result. The parent is
the request's own `_meta` trace context (SEP-414) when it carries one, else whatever the HTTP request's
`traceparent` header made current, else a new trace; a task's run takes the trace of the request that created
it, whichever instance runs it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs
from opentelemetry.trace import Span, Status, StatusCode

from refserver.call_context import Emitter
from refserver.dispatch import RequestCore, RequestSpan
from refserver.observability import context
from refserver.observability.tracing import TRACING, carried_fields
from refserver.protocol.core import Complete, CoreRequest, Failed, InputRequired, Outcome
from refserver.protocol.envelope import STATELESS_VERSIONS

NAMED_TARGET: Final = {"tools/call": "gen_ai.tool.name", "prompts/get": "gen_ai.prompt.name"}
"""Methods whose span name ends in a low-cardinality target, and the attribute that holds it."""
URI_METHODS: Final = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})
SESSION_ID_SHOWN: Final = 16
"""Hex digits of a session id's SHA-256 in `mcp.session.id`: a session id is a credential, its digest is not."""


class TracedCore(RequestCore):
    @contextlib.contextmanager
    def request_span(self, request: CoreRequest) -> Iterator[OutcomeRecorder]:
        name, attributes = describe(request)
        with TRACING.server_span(name, attributes, carrier=_carrier(request)) as span:
            yield OutcomeRecorder(span)

    async def run_task(self, request: CoreRequest, emitter: Emitter) -> Outcome:
        name, attributes = describe(request)
        attributes["refserver.task"] = True
        with TRACING.server_span(name, attributes, carrier=_carrier(request)) as span:
            outcome = await super().run_task(request, emitter)
            if span is not None:
                record_outcome(span, outcome)
            return outcome


def _carrier(request: CoreRequest) -> Mapping[str, str] | None:
    trace = request.meta.trace
    if trace is not None:
        return carried_fields(attrs.asdict(trace))
    params = request.params or {}
    meta = params.get("_meta")
    return carried_fields(meta) if isinstance(meta, Mapping) else None


def describe(request: CoreRequest) -> tuple[str, dict[str, Any]]:
    """The span name and attributes of a request: what it is, never what it carries."""
    method, params = request.method, request.params or {}
    version = request.meta.protocol_version
    attributes: dict[str, Any] = {
        "mcp.method.name": method,
        "jsonrpc.request.id": str(request.id),
        "mcp.protocol.version": version,
        "refserver.era": "2026" if version in STATELESS_VERSIONS else "2025",
        "network.transport": "tcp",
    }
    name = method
    target_attribute = NAMED_TARGET.get(method)
    target = params.get("name")
    if target_attribute is not None and isinstance(target, str):
        attributes[target_attribute] = target
        name = f"{method} {target}"
        if method == "tools/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
    uri = params.get("uri")
    if method in URI_METHODS and isinstance(uri, str):
        attributes["mcp.resource.uri"] = uri
    log_context = context.current()
    if log_context is not None and log_context.session_id:
        digest = hashlib.sha256(log_context.session_id.encode()).hexdigest()
        attributes["mcp.session.id"] = digest[:SESSION_ID_SHOWN]
    return name, attributes


@attrs.frozen
class OutcomeRecorder(RequestSpan):
    span: Span | None

    def record(self, outcome: Outcome) -> None:
        if self.span is not None:
            record_outcome(self.span, outcome)


def record_outcome(span: Span, outcome: Outcome) -> None:
    if isinstance(outcome, Complete):
        span.set_attribute("refserver.outcome", "complete")
        if outcome.result.get("isError") is True:
            span.set_attribute("error.type", "tool_error")  # the semantic conventions' word for an isError result
    elif isinstance(outcome, InputRequired):
        span.set_attribute("refserver.outcome", "input_required")
        asked = sorted({request.method for request in outcome.input_requests.values()})
        span.add_event("mcp.input_required", {"mcp.input_request.methods": asked})
    elif isinstance(outcome, Failed):
        code = str(outcome.error.jsonrpc_code)
        span.set_attribute("refserver.outcome", "failed")
        span.set_attribute("error.type", code)
        span.set_attribute("rpc.response.status_code", code)
        span.set_status(Status(StatusCode.ERROR, outcome.error.message))

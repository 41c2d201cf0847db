"""The 2026-era adapter: one self-contained POST in, one answer out, no session, no shared store on the way.

Each request carries its metadata in `_meta` (checked by `protocol/envelope.py`). Its handler runs as a task of
the HTTP request's own nursery and hands what it produces to the answer through a bounded channel: if the
result comes before anything else, the answer is plain JSON with the status the error table gives; the first
notification (or a handler silent for a heartbeat interval) turns it into an SSE stream that ends with the
result. Closing that stream is how a 2026 client cancels: the request's nursery ends and the handler with it.

A handler that needs the client answers `InputRequired`: the client gets an `InputRequiredResult` with the input
requests and a sealed `requestState`, and retries with `inputResponses`, on this instance or any other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

import attrs
import trio

from refserver.backend.kv import KeyValueStore
from refserver.backend.messages import ListenNotice
from refserver.backend.shared_secret import load_or_create_secret
from refserver.call_context import Emitter
from refserver.dispatch import RequestCore
from refserver.errors import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    InternalError,
    InvalidParams,
    InvalidRequest,
    RefserverError,
    ServiceUnavailable,
)
from refserver.oauth.models import AccessInfo
from refserver.observability import context
from refserver.observability.tracing import TRACING, carried_fields
from refserver.protocol.core import CallerToken, Complete, CoreRequest, Failed, InputRequired, RequestMeta, TraceContext
from refserver.protocol.envelope import (
    check_mirrored_schema,
    check_param_headers,
    input_required_result,
    mirrored_params,
    read_envelope,
)
from refserver.protocol.jsonrpc import ErrorResponse, Notification, ParsedBody, Request, Response, encode_message
from refserver.protocol.lifecycle import log_level_allows
from refserver.protocol.request_state import RequestStateSeal, derive_key
from refserver.protocol.sse import HEARTBEAT, encode_event
from refserver.transport.asgi import EVENT_STREAM, HttpRequest, HttpResponse
from refserver.transport.listen import RESOURCE_UPDATE, Listener, ListenFilter, ListenHub, listen_stream
from refserver.transport.sse_stream import SSE_HEADERS

logger = logging.getLogger(__name__)

STATUS_FOR_CODE: Final[Mapping[int, int]] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}
"""The HTTP status of a 2026 error answer, by JSON-RPC code (streamable-http.mdx); any other code is 200, where
the error is the request's answer rather than a refusal of it, unless the server failed (5xx)."""

FRAME_BUFFER: Final = 32
"""Notifications a handler may get ahead of a slow client before its own sends wait (backpressure)."""
MAX_INPUT_RESPONSES: Final = 32
MAX_INPUT_RESPONSES_BYTES: Final = 256 * 1024
"""An `inputResponses` map beyond these is refused: no handler here asks for more than a few answers."""
LISTEN: Final = "subscriptions/listen"
REQUEST_STATE_SECRET: Final = "request-state-key"
INPUT_METHODS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})
"""The requests that may answer `InputRequiredResult` (mrtr.mdx, "Supported Requests")."""


def status_for(error: RefserverError) -> int:
    if error.jsonrpc_code in STATUS_FOR_CODE:
        return STATUS_FOR_CODE[error.jsonrpc_code]
    # A server-side failure (internal error 500, no room for a listener 503) keeps its status.
    return error.http_status if error.http_status >= 500 else 200


def error_answer(request_id: int | str | None, error: RefserverError) -> HttpResponse:
    body = encode_message(ErrorResponse(request_id, error.jsonrpc_code, error.message, error.data))
    return HttpResponse(status_for(error), body.encode())


@attrs.frozen
class _Final:
    """The request's last message: its result or its error."""

    body: str
    error: RefserverError | None = None


class StatelessEmitter(Emitter):
    """What one 2026 request sends while it runs goes onto its own response, as SSE events."""

    def __init__(self, meta: RequestMeta, frames: trio.MemorySendChannel[str | _Final], hub: ListenHub) -> None:
        self._meta = meta
        self._frames = frames
        self._hub = hub

    async def send(self, notification: Notification) -> None:
        # The client closed the stream: the request is being cancelled, what it still says goes nowhere.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._frames.send(encode_message(notification))

    async def end_connection(self) -> None:
        """A 2026 response stream cannot be resumed: ending it would cancel the request, so it stays open."""

    async def resource_updated(self, uri: str) -> None:
        # Listeners learn of changes through `subscriptions/listen`, on whichever instance they listen.
        await self._hub.publish(ListenNotice(RESOURCE_UPDATE, uri))

    async def list_changed(self, kind: str) -> None:
        await self._hub.publish(ListenNotice(kind))

    def allows_log(self, level: str) -> bool:
        # No level in `_meta`: the client asked for no log messages at all (the revision has no default).
        return self._meta.log_level is not None and log_level_allows(self._meta.log_level, level)


class StatelessExchange:
    """Serves one 2026 POST body."""

    def __init__(
        self,
        core: RequestCore,
        hub: ListenHub,
        *,
        state_keys: tuple[str, ...],
        state_ttl: float,
        heartbeat_interval: float,
        max_in_flight: int,
    ) -> None:
        self._core = core
        self._max_in_flight = max_in_flight
        self.in_flight = 0
        self.hub = hub
        self._configured_keys = state_keys
        self._state_ttl = state_ttl
        self._heartbeat_interval = heartbeat_interval
        self._sealer: RequestStateSeal | None = None
        for name, tool in core.features.tools.items():
            check_mirrored_schema(name, tool.definition.input_schema)
        self._mirrored = {
            name: mirrored
            for name, tool in core.features.tools.items()
            if (mirrored := mirrored_params(tool.definition.input_schema))
        }
        """The tools with parameters mirrored in `Mcp-Param-*` headers, and those parameters."""

    async def load_keys(self, store: KeyValueStore) -> None:
        """The `requestState` keys: configured, or one shared through the store (see `backend/shared_secret.py`)."""
        secrets = [derive_key(key) for key in self._configured_keys]
        if not secrets:
            secrets = [derive_key(await load_or_create_secret(store, REQUEST_STATE_SECRET))]
        self._sealer = RequestStateSeal(secrets, self._state_ttl, time.time)

    @property
    def _seal(self) -> RequestStateSeal:
        if self._sealer is None:
            raise InternalError("request state keys are not loaded yet")
        return self._sealer

    async def answer(
        self,
        request: HttpRequest,
        parsed: ParsedBody,
        access: AccessInfo | None,
        caller: CallerToken | None,
        nursery: trio.Nursery,
    ) -> HttpResponse:
        subject = access.subject if access is not None else None
        if parsed.is_batch:
            raise InvalidRequest("Invalid Request: JSON-RPC batches are not part of protocol 2026-07-28")
        message = parsed.messages[0]
        if isinstance(message, Notification):
            # The revision defines no client notification that acts on anything here (cancelling is closing
            # the response stream); it is acknowledged and dropped.
            return HttpResponse(202, content_type="text/plain")
        if not isinstance(message, Request):
            raise InvalidRequest("Invalid Request: a 2026-07-28 client sends requests, not responses")
        try:
            meta = read_envelope(message.method, message.params, request.headers, subject)
            log_context = context.current()
            if log_context is not None and meta.trace is not None:
                log_context.join_trace(meta.trace.traceparent)
            if message.method == LISTEN:
                return await self._listen(message, meta, access)
            core_request = self._core_request(message, meta, request.headers, caller)
        except RefserverError as error:
            return error_answer(message.id, error)
        if self.in_flight >= self._max_in_flight:
            raise ServiceUnavailable("too many requests in flight on this instance; retry (elsewhere)")
        frames_in, frames_out = trio.open_memory_channel[str | _Final](FRAME_BUFFER)
        self.in_flight += 1
        nursery.start_soon(self._run, core_request, frames_in)
        first: str | _Final | None = None
        with trio.move_on_after(self._heartbeat_interval):
            try:
                first = await frames_out.receive()
            except trio.EndOfChannel:
                return error_answer(message.id, InternalError("the request ended without an answer"))
        if isinstance(first, _Final):
            frames_out.close()
            if first.error is not None:
                return HttpResponse(status_for(first.error), first.body.encode())
            return HttpResponse(200, first.body.encode())
        return HttpResponse(
            200, content_type=EVENT_STREAM, headers=tuple(SSE_HEADERS.items()), stream=self._stream(first, frames_out)
        )

    async def _listen(self, message: Request, meta: RequestMeta, access: AccessInfo | None) -> HttpResponse:
        wanted = ListenFilter.parse(message.params)
        tasks = self._core.tasks
        if wanted.task_ids:
            wanted = attrs.evolve(wanted, task_ids=await tasks.followable(wanted.task_ids, meta))
        owner = meta.subject or ""

        async def describe_task(task_id: str) -> dict[str, Any] | None:
            return await tasks.describe(task_id, owner)

        self.hub.admit()  # a 503 now, before the 200; the stream registers when it starts
        # Only the id of the request is kept for the stream's life, not the parsed request.
        listener = Listener(message.id, wanted, access, describe_task=describe_task)
        stream = listen_stream(
            listener, heartbeat_interval=self._heartbeat_interval, server_info=self._core.server_info, hub=self.hub
        )
        return HttpResponse(200, content_type=EVENT_STREAM, headers=tuple(SSE_HEADERS.items()), stream=stream)

    def _core_request(
        self, message: Request, meta: RequestMeta, headers: Mapping[str, str], caller: CallerToken | None
    ) -> CoreRequest:
        params = message.params or {}
        if message.method == "tools/call":
            mirrored = self._mirrored.get(str(params.get("name")))
            arguments = params.get("arguments")
            if mirrored and isinstance(arguments, Mapping):
                check_param_headers(mirrored, arguments, headers)
        responses = params.get("inputResponses")
        token = params.get("requestState")
        given = "inputResponses" in params or "requestState" in params
        if message.method not in INPUT_METHODS or not given:
            return CoreRequest(message.id, message.method, message.params, meta, caller_token=caller)
        if "inputResponses" not in params:
            responses = {}
        if not isinstance(responses, dict) or not all(isinstance(r, dict) for r in responses.values()):
            raise InvalidParams("inputResponses must map each input request key to the client's result object")
        if len(responses) > MAX_INPUT_RESPONSES or len(json.dumps(responses)) > MAX_INPUT_RESPONSES_BYTES:
            raise InvalidParams(
                f"inputResponses is too large (at most {MAX_INPUT_RESPONSES} answers "
                f"and {MAX_INPUT_RESPONSES_BYTES} bytes)"
            )
        state = None
        if "requestState" in params:  # a null one is refused like any other non-string, as a null inputResponses is
            state, sealed_trace = self._seal.open_traced(
                token, subject=meta.subject, method=message.method, params=params
            )
            if meta.trace is None and sealed_trace is not None:
                # A retry that names no trace of its own continues the one the first round was in.
                meta = attrs.evolve(meta, trace=TraceContext(**carried_fields(sealed_trace) or {}))
        return CoreRequest(message.id, message.method, message.params, meta, responses, state, caller)

    async def _run(self, request: CoreRequest, frames: trio.MemorySendChannel[str | _Final]) -> None:
        try:
            await self._answer_into(request, frames)
        finally:
            self.in_flight -= 1

    async def _answer_into(self, request: CoreRequest, frames: trio.MemorySendChannel[str | _Final]) -> None:
        # Closed without a checkpoint (`with`, not `async with`): the HTTP task, woken by the final frame, cancels
        # this request's work as soon as it has answered, and a checkpoint here would turn every answered request's
        # end into a Cancelled raised and caught.
        with frames:
            with self._core.request_span(request) as span:
                outcome = await self._core.handle(request, StatelessEmitter(request.meta, frames, self.hub))
                span.record(outcome)
                trace = TRACING.carrier()  # this round's span: what a retry's requestState carries on
            if isinstance(outcome, InputRequired) and request.method not in INPUT_METHODS:
                outcome = Failed(InternalError(f"{request.method} asked the client for input, which it cannot"))
            if isinstance(outcome, Complete):
                final = _Final(encode_message(Response(request.id, outcome.result)))
            elif isinstance(outcome, InputRequired):
                final = _Final(encode_message(Response(request.id, self._input_required(request, outcome, trace))))
            else:
                error = outcome.error
                final = _Final(
                    encode_message(ErrorResponse(request.id, error.jsonrpc_code, error.message, error.data)), error
                )
            with contextlib.suppress(trio.BrokenResourceError):
                try:
                    frames.send_nowait(final)  # the common case: room in the buffer, the HTTP task waiting
                except trio.WouldBlock:
                    await frames.send(final)  # a stream whose client reads slowly: wait for room

    def _input_required(
        self, request: CoreRequest, outcome: InputRequired, trace: Mapping[str, str] | None
    ) -> dict[str, Any]:
        version = request.meta.protocol_version
        input_requests = {
            key: {"method": asked.method, "params": asked.wire_params(version)}
            for key, asked in outcome.input_requests.items()
        }
        token = None
        if outcome.state:
            token = self._seal.seal(
                outcome.state, subject=request.meta.subject, method=request.method, params=request.params, trace=trace
            )
        return input_required_result(input_requests, token, self._core.server_info)

    async def _stream(
        self, first: str | _Final | None, frames: trio.MemoryReceiveChannel[str | _Final]
    ) -> AsyncGenerator[bytes, None]:
        with frames:
            if first is None:
                yield HEARTBEAT
            else:
                yield _event(first)
            while True:
                with trio.move_on_after(self._heartbeat_interval) as idle:
                    try:
                        frame = await frames.receive()
                    except trio.EndOfChannel:
                        return
                if idle.cancelled_caught:
                    yield HEARTBEAT
                    continue
                yield _event(frame)
                if isinstance(frame, _Final):
                    return


def _event(frame: str | _Final) -> bytes:
    return encode_event(frame.body if isinstance(frame, _Final) else frame)

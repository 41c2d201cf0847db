"""The 2025-era adapter between a session and the request core.

One request of a session goes through the core with the metadata its `initialize` established. When the core
answers `InputRequired`, the input requests go to the client as server-to-client requests on the request's own
stream, and the handler is called again with the answers: the multi-round-trip shape of the features becomes
the 2025 protocol's in-request dialogue. State changes the core reports are applied to the session's state,
and persisted when they changed something.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

import attrs
import trio

from refserver.call_context import Emitter
from refserver.dispatch import RequestCore
from refserver.errors import InternalError, SessionGone, StreamClosed
from refserver.observability.tracing import TRACING
from refserver.protocol.core import (
    CallerToken,
    Complete,
    CoreRequest,
    Failed,
    InputFailure,
    InputRequest,
    InputRequired,
    InputResponse,
)
from refserver.protocol.jsonrpc import ErrorResponse, Message, Notification, Request, RequestId, Response
from refserver.protocol.lifecycle import log_level_allows

if TYPE_CHECKING:
    from refserver.session import Session

OUTGOING_ID_BYTES: Final = 8
"""Server-to-client request ids: 64 random bits, unique across instances for the life of a session."""

CANCEL_NOTICE_TIMEOUT: Final = 1.0
"""How long a cancelled tool may spend telling the client to drop its pending sampling request."""

MAX_INPUT_ROUNDS: Final = 8
"""Rounds of client input one call may ask for: a handler that keeps asking is looping, not talking."""

Append = Callable[[str, Message], Awaitable[None]]


@attrs.define(eq=False)
class _Pending:
    method: str
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: Response | ErrorResponse | None = None


class ClientRequests:
    """The server-to-client requests of one session that wait on this instance for the client's answer."""

    def __init__(self, append: Append, timeout: float) -> None:
        self._append = append
        self._timeout = timeout
        self._pending: dict[RequestId, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    async def ask(
        self, stream_id: str, requests: Mapping[str, InputRequest], protocol_version: str
    ) -> dict[str, InputResponse]:
        """Send `requests` to the client on `stream_id` and wait (bounded) for every answer.

        A missing, failed or late answer comes back as an `InputFailure` that the handler reads as an error.
        """
        methods = sorted({request.method for request in requests.values()})
        name = methods[0] if len(methods) == 1 else "input requests"
        with TRACING.client_span(name, {"mcp.method.name": name, "refserver.input_requests": len(requests)}):
            return await self._ask(stream_id, requests, protocol_version)

    async def _ask(
        self, stream_id: str, requests: Mapping[str, InputRequest], protocol_version: str
    ) -> dict[str, InputResponse]:
        # Random, not a counter: several instances may send requests in one session, and an answer must
        # never match another instance's request.
        sent: dict[str, tuple[str, _Pending]] = {}
        trace = TRACING.carrier()  # the client's handler may join the trace (SEP-414: in `_meta`)
        try:
            for key, request in requests.items():
                outgoing_id = f"srv-{secrets.token_hex(OUTGOING_ID_BYTES)}"
                pending = _Pending(request.method)
                self._pending[outgoing_id] = pending
                sent[key] = (outgoing_id, pending)
                params = request.wire_params(protocol_version)
                if trace is not None:
                    params = {**params, "_meta": {**params.get("_meta", {}), **trace}}
                await self._append(stream_id, Request(outgoing_id, request.method, params))
            with trio.move_on_after(self._timeout):
                for _, pending in sent.values():
                    await pending.done.wait()
        except trio.Cancelled:
            await self._tell_client_cancelled(stream_id, sent.values(), "request cancelled")
            raise
        finally:
            for outgoing_id, _ in sent.values():
                del self._pending[outgoing_id]
        await self._tell_client_cancelled(stream_id, sent.values(), "timed out")
        return {key: _response_of(pending) for key, (_, pending) in sent.items()}

    def deliver(self, reply: Response | ErrorResponse) -> bool:
        """Hand the answer to the call waiting for it on this instance, if one does."""
        if reply.id is None:
            return False
        pending = self._pending.get(reply.id)
        if pending is None or pending.done.is_set():
            return False
        pending.reply = reply
        pending.done.set()
        return True

    def release_all(self) -> None:
        """The session is closing: every waiting call stops waiting (and reads a failure)."""
        for pending in self._pending.values():
            pending.done.set()

    async def _tell_client_cancelled(self, stream_id: str, sent: Iterable[tuple[str, _Pending]], reason: str) -> None:
        unanswered = [outgoing_id for outgoing_id, pending in sent if not pending.done.is_set()]
        if not unanswered:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_NOTICE_TIMEOUT):
            for outgoing_id in unanswered:
                notice = Notification("notifications/cancelled", {"requestId": outgoing_id, "reason": reason})
                with contextlib.suppress(SessionGone, StreamClosed):
                    await self._append(stream_id, notice)


def _response_of(pending: _Pending) -> InputResponse:
    reply = pending.reply
    if not pending.done.is_set():
        return InputFailure(f"client did not answer {pending.method} in time")
    if reply is None:
        return InputFailure("session closed before the client answered")
    if isinstance(reply, ErrorResponse):
        return InputFailure(f"client returned an error for {pending.method}: {reply.message}")
    return reply.result


class SessionEmitter(Emitter):
    """Where one request of a session sends what it emits: its own stream (resource updates: the GET stream)."""

    def __init__(self, session: Session, stream_id: str) -> None:
        self._session = session
        self._stream_id = stream_id

    def allows_log(self, level: str) -> bool:
        return log_level_allows(self._session.state.log_level, level)  # `logging/setLevel` applies to calls running

    async def send(self, notification: Notification) -> None:
        await self._session.append(self._stream_id, notification)

    async def end_connection(self) -> None:
        self._session.disconnect_listeners(self._stream_id)

    async def resource_updated(self, uri: str) -> None:
        if uri in self._session.state.subscriptions:
            await self._session.send_standalone(Notification("notifications/resources/updated", {"uri": uri}))

    async def list_changed(self, kind: str) -> None:
        await self._session.send_standalone(Notification(f"notifications/{kind}/list_changed"))


async def answer_request(
    core: RequestCore, session: Session, request: Request, stream_id: str, caller_token: CallerToken | None = None
) -> Message:
    """Run `request` through the core to its end; the reply to append to its stream."""
    session.state.lifecycle.check_request(request.method)
    meta = session.state.meta(session.owner)
    emitter = SessionEmitter(session, stream_id)
    responses: dict[str, InputResponse] = {}
    outcome: Complete | Failed = Failed(
        InternalError(f"{request.method} asked for input more than {MAX_INPUT_ROUNDS} times")
    )
    core_request = CoreRequest(request.id, request.method, request.params, meta, caller_token=caller_token)
    # One span for the request, its rounds and the server-to-client requests between them.
    with core.request_span(core_request) as span:
        for _ in range(MAX_INPUT_ROUNDS):
            round_outcome = await core.handle(core_request, emitter)
            if not isinstance(round_outcome, InputRequired):
                outcome = round_outcome
                break
            answers = await session.client_requests.ask(stream_id, round_outcome.input_requests, meta.protocol_version)
            responses = {**responses, **answers}
            core_request = CoreRequest(
                request.id, request.method, request.params, meta, responses, round_outcome.state, caller_token
            )
        span.record(outcome)
    if isinstance(outcome, Complete):
        before = copy.deepcopy(session.state) if outcome.changes else None
        changed = [session.state.apply(change) for change in outcome.changes]
        if any(changed):
            try:
                await session.persist()
            except BaseException:
                if before is not None and session.stored:
                    # Redis and the other instances keep the old state: so must this copy, or it would serve a
                    # change the client was told failed. (A new session is dropped by its caller instead.)
                    session.state = before
                raise
        return Response(request.id, outcome.result)
    error = outcome.error
    return ErrorResponse(request.id, error.jsonrpc_code, error.message, error.data)

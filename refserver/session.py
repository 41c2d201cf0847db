"""One MCP session on this instance: a nursery that owns the session's in-flight requests.

Each in-flight request runs in its own task with its own cancel scope, so that
`notifications/cancelled` cancels exactly that request, and closing the session (DELETE, idle expiry,
shutdown) cancels exactly the work the session owns. Everything a request emits (progress, logs,
server-to-client requests, its response) is appended to that request's own stream in the event log;
HTTP handlers only read streams, so a client disconnect never loses or blocks the work.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import attrs
import mcp_types as types
import trio

from refserver.backend.events import STANDALONE_STREAM, EventLog
from refserver.backend.messages import CancelRequest, ClientReply, StateChanged
from refserver.backend.sessions import Bus, LocalBus, LocalSessionStore, SessionRecord, SessionStore, TransportKind
from refserver.errors import (
    BackendUnavailable,
    ClientCapabilityMissing,
    ClientRequestFailed,
    InternalError,
    InvalidRequest,
    RefserverError,
    SessionGone,
    StreamClosed,
)
from refserver.protocol.jsonrpc import (
    ErrorResponse,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    encode_message,
    is_request_id,
    message_to_dict,
)
from refserver.protocol.lifecycle import Lifecycle, Phase, log_level_allows

logger = logging.getLogger(__name__)


REQUEST_STREAM_ID_BYTES: Final = 6
"""Request stream ids are random within a session (48 bits), so no counter has to be shared."""

OUTGOING_ID_BYTES: Final = 8
"""Server-to-client request ids: 64 random bits, unique across instances for the life of a session."""

CANCEL_NOTICE_TIMEOUT: Final = 1.0
"""How long a cancelled tool may spend telling the client to drop its pending sampling request."""


@attrs.define(eq=False)
class SessionState:
    """What the protocol remembers about a session; stored as a `SessionRecord` when sessions are shared."""

    lifecycle: Lifecycle = attrs.field(factory=Lifecycle)
    log_level: str | None = None
    subscriptions: set[str] = attrs.field(factory=set)

    def fingerprint(self) -> tuple[object, ...]:
        """Changes whenever something another instance must know changes."""
        lifecycle = self.lifecycle
        return (lifecycle.phase, lifecycle.protocol_version, self.log_level, frozenset(self.subscriptions))

    def to_record(self, session_id: str, kind: TransportKind, owner: str | None) -> SessionRecord:
        lifecycle = self.lifecycle
        return SessionRecord(
            session_id=session_id,
            kind=kind,
            owner=owner,
            phase=lifecycle.phase.value,
            protocol_version=lifecycle.protocol_version,
            client_capabilities=lifecycle.client_capabilities,
            client_info=lifecycle.client_info,
            log_level=self.log_level,
            subscriptions=sorted(self.subscriptions),
        )

    @classmethod
    def from_record(cls, record: SessionRecord) -> SessionState:
        lifecycle = Lifecycle(
            phase=Phase(record.phase),
            protocol_version=record.protocol_version,
            client_info=record.client_info,
            client_capabilities=record.client_capabilities,
        )
        return cls(lifecycle=lifecycle, log_level=record.log_level, subscriptions=set(record.subscriptions))


class RequestHandler(Protocol):
    async def __call__(self, session: Session, request: Request, context: RequestContext) -> dict[str, Any]: ...


@attrs.define(eq=False)
class InFlight:
    request: Request
    stream_id: str
    cancel_scope: trio.CancelScope
    cancelled_by_client: bool = False


@attrs.define(eq=False)
class PendingClientRequest:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: Response | ErrorResponse | None = None


class Session:
    """A session's state, its request tasks and its streams on this instance."""

    def __init__(
        self,
        session_id: str,
        kind: TransportKind,
        *,
        events: EventLog,
        handler: RequestHandler,
        client_request_timeout: float,
        owner: str | None = None,
        state: SessionState | None = None,
        store: SessionStore | None = None,
        bus: Bus | None = None,
        ttl: float = 300.0,
        now: Callable[[], float] = trio.current_time,
    ) -> None:
        self.id = session_id
        self.owner = owner
        self.kind: TransportKind = kind
        self.state = state or SessionState()
        self._store: SessionStore = store or LocalSessionStore()
        self._bus: Bus = bus or LocalBus()
        self._ttl = ttl
        self.events = events
        self._handler = handler
        self._client_request_timeout = client_request_timeout
        self._now = now
        self._nursery: trio.Nursery | None = None
        self._closed = trio.Event()
        self._finished = trio.Event()
        self.close_reason: str | None = None
        self._in_flight: dict[RequestId, InFlight] = {}
        self._pending: dict[RequestId, PendingClientRequest] = {}
        self._open_requests_per_stream: dict[str, int] = {}
        self._listeners = 0
        self._listener_generations: dict[str, int] = {}
        self._standalone_delivered = 0
        self.last_activity = now()

    # --- lifetime -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The session's nursery; returns once the session is closed and its work is cancelled."""
        await self.events.open_stream(self.id, STANDALONE_STREAM)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            # Cancelled from outside (the registry is shutting down) rather than closed by us.
            self.close("shutdown")
            self._nursery = None
            for pending in self._pending.values():
                pending.done.set()
            with trio.CancelScope(shield=True):
                await self.events.drop_session(self.id)
            self._finished.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self, reason: str) -> None:
        """Cancel everything the session owns; `run` finishes the cleanup."""
        if not self._closed.is_set():
            self.close_reason = reason
            self.state.lifecycle.close()
            self._closed.set()

    async def wait_closed(self) -> None:
        """Return once the session is closed and everything it owned is cancelled and released."""
        await self._finished.wait()

    def touch(self) -> None:
        self.last_activity = self._now()

    def record(self) -> SessionRecord:
        return self.state.to_record(self.id, self.kind, self.owner)

    async def persist(self) -> None:
        """Store the state and tell the other instances holding this session (no-op without Redis)."""
        if self._bus.distributed:
            record = self.record()
            await self._store.save(record, self._ttl)
            await self._bus.publish(self.id, StateChanged(record))

    def apply_record(self, record: SessionRecord) -> None:
        """Another instance changed the state: adopt it (`lifecycle.close` stays ours to decide)."""
        if not self.closed:
            self.state = SessionState.from_record(record)

    def active_since(self, moment: float) -> bool:
        return bool(self._in_flight) or self._listeners > 0 or self.last_activity >= moment

    def is_idle(self, ttl: float) -> bool:
        return not self._in_flight and self._listeners == 0 and self._now() - self.last_activity >= ttl

    # --- streams ----------------------------------------------------------------------------------

    def new_stream_id(self) -> str:
        return "r" + secrets.token_hex(REQUEST_STREAM_ID_BYTES)

    def attach_listener(self, stream_id: str) -> int:
        """Count an SSE connection as activity; return its generation on `stream_id`.

        The newest connection on a stream supersedes older ones (a resumed GET replaces the POST it
        resumes, a new GET the old one), so that a message is never delivered on two connections: the
        transport spec forbids broadcasting.
        """
        self._listeners += 1
        self.touch()
        generation = self._listener_generations.get(stream_id, 0) + 1
        self._listener_generations[stream_id] = generation
        return generation

    def detach_listener(self) -> None:
        self._listeners -= 1
        self.touch()

    def mark_delivered(self, stream_id: str, seq: int) -> None:
        # Only the standalone stream needs this: a fresh GET starts after what was already delivered.
        if stream_id == STANDALONE_STREAM and seq > self._standalone_delivered:
            self._standalone_delivered = seq

    @property
    def standalone_delivered(self) -> int:
        """The last standalone event handed to a connection (the transport cannot know more)."""
        return self._standalone_delivered

    def runs_stream(self, stream_id: str) -> bool:
        """True if this instance executes the requests writing to `stream_id`."""
        return stream_id in self._open_requests_per_stream

    def listener_generation(self, stream_id: str) -> int:
        return self._listener_generations.get(stream_id, 0)

    def listener_superseded(self, stream_id: str, generation: int) -> bool:
        current = self._listener_generations.get(stream_id)
        return current is not None and current != generation

    def disconnect_listeners(self, stream_id: str) -> None:
        """End the HTTP responses following `stream_id` (with `retry:`); the stream itself goes on.

        The client reconnects with `Last-Event-ID` and gets the rest: this is how a server sheds long
        connections (SEP-1699 polling) without losing a request's output.
        """
        self._listener_generations[stream_id] = self._listener_generations.get(stream_id, 0) + 1
        self.events.wake(self.id, stream_id)

    async def _append(self, stream_id: str, message: Message) -> None:
        await self.events.append(
            self.id,
            stream_id,
            encode_message(message),
            is_response=isinstance(message, (Response, ErrorResponse)),
        )

    async def send_standalone(self, message: Notification | Request) -> None:
        """A message tied to no request: it goes to the GET stream (or the legacy SSE stream)."""
        if not self.closed:
            await self._append(STANDALONE_STREAM, message)

    # --- incoming messages ------------------------------------------------------------------------

    async def start_requests(
        self, requests: list[Request], *, refusals: Sequence[ErrorResponse] = (), stream_id: str | None = None
    ) -> str:
        """Start each request in its own task; return the stream their output goes to.

        `refusals` are errors for batch elements that were not valid requests; they go on the same
        stream first, so a batch gets one answer per element.
        """
        if self._nursery is None or self.closed:
            raise InvalidRequest("session is closed")
        self.touch()
        if stream_id is None:
            stream_id = STANDALONE_STREAM if self.kind == "legacy" else self.new_stream_id()
        if stream_id != STANDALONE_STREAM:
            await self.events.open_stream(self.id, stream_id, [r.id for r in requests])
            self._open_requests_per_stream[stream_id] = len(requests) + 1  # +1 held until all are started
        for refusal in refusals:
            await self._append(stream_id, refusal)
        for request in requests:
            if request.id in self._in_flight:
                await self._append(
                    stream_id, _error(request.id, InvalidRequest(f"request id {request.id!r} is already in flight"))
                )
                await self._request_done(stream_id)
                continue
            # Registered before its task runs, so that a cancellation arriving first still finds it.
            entry = InFlight(request, stream_id, trio.CancelScope())
            self._in_flight[request.id] = entry
            self._nursery.start_soon(self._execute, entry)
        await self._request_done(stream_id)
        return stream_id

    async def _execute(self, entry: InFlight) -> None:
        request, stream_id = entry.request, entry.stream_id
        reply: Message | None = None
        with entry.cancel_scope:
            try:
                self.state.lifecycle.check_request(request.method)
                before = self.state.fingerprint()
                result = await self._handler(self, request, RequestContext(self, request, stream_id))
                if self.state.fingerprint() != before:
                    await self.persist()
                reply = Response(request.id, result)
            except RefserverError as exc:
                reply = _error(request.id, exc)
            except Exception:
                logger.exception("request %s (%s) failed", request.id, request.method)
                reply = _error(request.id, InternalError("internal error"))
            finally:
                del self._in_flight[request.id]
        # A cancelled request gets no response (the spec's rule for notifications/cancelled); for DELETE,
        # expiry and shutdown the session's streams are dropped anyway.
        with trio.CancelScope(shield=True):
            try:
                if reply is not None and not self.closed:
                    await self._append(stream_id, reply)
                await self._request_done(stream_id)
            except (BackendUnavailable, SessionGone, StreamClosed) as exc:
                # The backend is down or the session was deleted meanwhile: the answer cannot be stored,
                # and nobody can ask for it. The request is lost, not the instance.
                logger.warning("session %s: answer to %r not recorded: %s", self.id, request.id, exc)
                if isinstance(exc, SessionGone):
                    self.close("gone")  # the store no longer has it (deleted elsewhere, or Redis lost it)
        self.touch()

    async def _request_done(self, stream_id: str) -> None:
        if stream_id == STANDALONE_STREAM:
            return
        remaining = self._open_requests_per_stream[stream_id] - 1
        if remaining:
            self._open_requests_per_stream[stream_id] = remaining
        else:
            del self._open_requests_per_stream[stream_id]
            self._listener_generations.pop(stream_id, None)
            if not self.closed:  # a closed session's streams are gone: writing would resurrect them
                await self.events.close_stream(self.id, stream_id)

    async def receive_notification(self, notification: Notification) -> None:
        self.touch()
        if notification.method == "notifications/initialized":
            before = self.state.fingerprint()
            self.state.lifecycle.receive_initialized()
            if self.state.fingerprint() != before:
                await self.persist()
        elif notification.method == "notifications/cancelled":
            params = notification.params or {}
            request_id = params.get("requestId")
            if not self.cancel_request(request_id) and is_request_id(request_id) and self._bus.distributed:
                # The request may run on another instance: the bus carries the id with its JSON type.
                assert isinstance(request_id, (int, str))
                await self._bus.publish(self.id, CancelRequest(request_id))
        # Other client notifications (roots/list_changed, progress) need no action from this server.

    def cancel_request(self, request_id: object) -> bool:
        """Cancel exactly the in-flight request with this id here (type-sensitive: 1 is not "1")."""
        if not is_request_id(request_id):
            return False
        assert isinstance(request_id, (int, str))
        entry = self._in_flight.get(request_id)
        if entry is None or entry.request.method == "initialize":
            return False
        entry.cancelled_by_client = True
        entry.cancel_scope.cancel()
        return True

    async def receive_reply(self, reply: Response | ErrorResponse) -> bool:
        """A client's answer to one of our requests (sampling, elicitation), wherever it waits."""
        self.touch()
        if self.deliver_reply(reply):
            return True
        if reply.id is not None and self._bus.distributed:
            await self._bus.publish(self.id, ClientReply(message_to_dict(reply)))
        return False

    def deliver_reply(self, reply: Response | ErrorResponse) -> bool:
        """Hand the answer to the tool waiting for it in this instance, if one does."""
        if reply.id is None:
            return False
        pending = self._pending.get(reply.id)
        if pending is None or pending.done.is_set():
            return False
        pending.reply = reply
        pending.done.set()
        return True

    # --- server-to-client requests ----------------------------------------------------------------

    async def request_client(self, stream_id: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request to the client on `stream_id` and wait (bounded) for its answer."""
        # Random, not a counter: several instances may send requests in one session, and an answer must
        # never match another instance's request.
        outgoing_id = f"srv-{secrets.token_hex(OUTGOING_ID_BYTES)}"
        pending = PendingClientRequest()
        self._pending[outgoing_id] = pending
        try:
            await self._append(stream_id, Request(outgoing_id, method, params))
            with trio.fail_after(self._client_request_timeout):
                await pending.done.wait()
        except trio.TooSlowError:
            await self._tell_client_cancelled(stream_id, outgoing_id, "timed out")
            raise ClientRequestFailed(f"client did not answer {method} in time") from None
        except trio.Cancelled:
            await self._tell_client_cancelled(stream_id, outgoing_id, "request cancelled")
            raise
        finally:
            del self._pending[outgoing_id]
        reply = pending.reply
        if reply is None:
            raise ClientRequestFailed("session closed before the client answered")
        if isinstance(reply, ErrorResponse):
            raise ClientRequestFailed(f"client returned an error for {method}: {reply.message}")
        return reply.result

    async def _tell_client_cancelled(self, stream_id: str, outgoing_id: str, reason: str) -> None:
        if self.closed:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_NOTICE_TIMEOUT):
            notice = Notification("notifications/cancelled", {"requestId": outgoing_id, "reason": reason})
            with contextlib.suppress(SessionGone, StreamClosed):
                await self._append(stream_id, notice)

    def statistics(self) -> dict[str, Any]:
        return {
            "in_flight": len(self._in_flight),
            "pending_client_requests": len(self._pending),
            "listeners": self._listeners,
            "subscriptions": len(self.state.subscriptions),
            "phase": self.state.lifecycle.phase.value,
        }


def _error(request_id: RequestId, exc: RefserverError) -> ErrorResponse:
    return ErrorResponse(request_id, exc.jsonrpc_code, exc.message, exc.data)


class RequestContext:
    """The `FeatureContext` of one request: everything it sends goes on that request's stream."""

    def __init__(self, session: Session, request: Request, stream_id: str) -> None:
        self._session = session
        self._request = request
        self._stream_id = stream_id
        meta = (request.params or {}).get("_meta")
        self._progress_token = meta.get("progressToken") if isinstance(meta, dict) else None

    @property
    def request_id(self) -> RequestId:
        return self._request.id

    @property
    def session_id(self) -> str:
        return self._session.id

    @property
    def progress_token(self) -> str | int | None:
        token = self._progress_token
        return token if isinstance(token, (str, int)) and not isinstance(token, bool) else None

    @property
    def raw_params(self) -> dict[str, Any] | None:
        return self._request.params

    @property
    def session(self) -> Session:
        return self._session

    @property
    def client_capabilities(self) -> dict[str, Any]:
        return self._session.state.lifecycle.client_capabilities

    async def _send(self, notification: Notification) -> None:
        await self._session._append(self._stream_id, notification)

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self._progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._send(Notification("notifications/progress", params))

    async def log(self, level: types.LoggingLevel, data: Any, logger: str | None = None) -> None:
        if not log_level_allows(self._session.state.log_level, level):
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self._send(Notification("notifications/message", params))

    async def sample(self, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        if not self._session.state.lifecycle.client_supports("sampling"):
            raise ClientCapabilityMissing("the client did not declare the sampling capability")
        result = await self._session.request_client(
            self._stream_id,
            "sampling/createMessage",
            params.model_dump(by_alias=True, exclude_none=True, mode="json"),
        )
        return types.CreateMessageResult.model_validate(result)

    async def elicit(self, params: types.ElicitRequestFormParams) -> types.ElicitResult:
        if not self._session.state.lifecycle.client_supports("elicitation"):
            raise ClientCapabilityMissing("the client did not declare the elicitation capability")
        body = params.model_dump(by_alias=True, exclude_none=True, mode="json")
        if self._session.state.lifecycle.protocol_version != "2025-11-25":
            body.pop("mode", None)  # `mode` arrived with URL elicitation in 2025-11-25
        result = await self._session.request_client(self._stream_id, "elicitation/create", body)
        return types.ElicitResult.model_validate(result)

    async def close_sse_stream(self) -> None:
        self._session.disconnect_listeners(self._stream_id)

    async def notify_resource_updated(self, uri: str) -> None:
        if uri in self._session.state.subscriptions:
            await self._session.send_standalone(Notification("notifications/resources/updated", {"uri": uri}))


def is_ready(session: Session) -> bool:
    return session.state.lifecycle.phase in (Phase.INITIALIZING, Phase.READY)

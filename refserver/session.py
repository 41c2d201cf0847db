"""One MCP session on this instance: a nursery that owns the session's in-flight requests.

Each in-flight request (`initialize` excepted: see `Session.answer_initialize`) runs in its own task with its own
cancel scope, so that `notifications/cancelled` cancels exactly that request, and closing the session (DELETE, idle
expiry, shutdown) cancels exactly the work the session owns. Everything a request emits (progress, logs,
server-to-client requests, its response) is appended to that request's own stream in the event log;
HTTP handlers only read streams, so a client disconnect never loses or blocks the work.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from refserver.backend.events import STANDALONE_STREAM, EventLog
from refserver.backend.messages import CancelRequest, ClientReply
from refserver.backend.sessions import (
    Bus,
    LocalBus,
    LocalSessionStore,
    SessionRecord,
    SessionStore,
    TransportKind,
    state_from_record,
    state_to_record,
)
from refserver.errors import (
    BackendUnavailable,
    InternalError,
    InvalidRequest,
    RefserverError,
    SessionGone,
    StreamClosed,
)
from refserver.protocol.core import CallerToken
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
from refserver.protocol.session_state import SessionState
from refserver.session_calls import ClientRequests, answer_request

if TYPE_CHECKING:
    from refserver.dispatch import RequestCore

logger = logging.getLogger(__name__)


INITIALIZE_STREAM: Final = "initialize"
"""The stream `initialize` would write to: never opened, as it writes nothing but its answer (`answer_initialize`)."""
REQUEST_STREAM_ID_BYTES: Final = 6
"""Request stream ids are random within a session (48 bits), so no counter has to be shared."""


@attrs.define(eq=False)
class InFlight:
    request: Request
    stream_id: str
    cancel_scope: trio.CancelScope
    caller_token: CallerToken | None = None
    cancelled_by_client: bool = False


class Session:
    """A session's state, its request tasks and its streams on this instance."""

    def __init__(
        self,
        session_id: str,
        kind: TransportKind,
        *,
        events: EventLog,
        core: RequestCore,
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
        self._in_store = state is not None
        """False until the first save (at `initialize`'s answer); an adopted session came from the store."""
        self._store: SessionStore = store or LocalSessionStore()
        self._bus: Bus = bus or LocalBus()
        self._ttl = ttl
        self.events = events
        self._core = core
        self.client_requests = ClientRequests(self.append, client_request_timeout)
        self._now = now
        self._nursery: trio.Nursery | None = None
        self._closed = trio.Event()
        self._finished: trio.Event | None = None
        """Made by the first `wait_closed` (few sessions are ever waited for: most only expire)."""
        self._done = False
        self.close_reason: str | None = None
        self._in_flight: dict[RequestId, InFlight] = {}
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
            self.client_requests.release_all()
            with trio.CancelScope(shield=True):
                await self.events.drop_session(self.id)
            self._done = True
            if self._finished is not None:
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
        if self._done:
            await trio.lowlevel.checkpoint()
            return
        if self._finished is None:
            self._finished = trio.Event()
        await self._finished.wait()

    def touch(self) -> None:
        self.last_activity = self._now()

    def record(self) -> SessionRecord:
        return state_to_record(self.state, self.id, self.kind, self.owner)

    @property
    def stored(self) -> bool:
        """Any instance can find the session (always, without Redis: there is no other instance)."""
        return self._in_store or not self._bus.distributed

    async def persist(self) -> None:
        """Store the state and tell the other instances holding this session (no-op without Redis)."""
        if not self._bus.distributed:
            return
        if self._in_store:
            await self._store.save(self.record(), self._ttl)
        else:
            # Nobody else can hold the session yet: its first record joins this instance to its holders.
            await self._store.save_first(self.record(), self._ttl)
            self._in_store = True

    def apply_record(self, record: SessionRecord) -> None:
        """Another instance changed the state: adopt it (`lifecycle.close` stays ours to decide)."""
        if not self.closed:
            self.state = state_from_record(record)

    def active_since(self, moment: float) -> bool:
        return bool(self._in_flight) or self._listeners > 0 or self.last_activity >= moment

    def is_idle(self, ttl: float) -> bool:
        return not self._in_flight and self._listeners == 0 and self._now() - self.last_activity >= ttl

    # --- streams ----------------------------------------------------------------------------------

    def new_stream_id(self) -> str:
        return "r" + secrets.token_hex(REQUEST_STREAM_ID_BYTES)

    def listening(self, stream_id: str) -> Listener:
        """An HTTP response follows `stream_id` while this is entered (`with`); it counts as activity.

        The newest connection on a stream supersedes older ones (a resumed GET replaces the POST it
        resumes, a new GET the old one), so that a message is never delivered on two connections: the
        transport spec forbids broadcasting.
        """
        return Listener(self, stream_id)

    def _listen(self, stream_id: str) -> int:
        self._listeners += 1
        self.touch()
        generation = self._listener_generations.get(stream_id, 0) + 1
        self._listener_generations[stream_id] = generation
        return generation

    def _unlisten(self) -> None:
        self._listeners -= 1
        self.touch()

    def _delivered(self, stream_id: str, seq: int) -> None:
        # Only the standalone stream needs this: a fresh GET starts after what was already delivered.
        if stream_id == STANDALONE_STREAM and seq > self._standalone_delivered:
            self._standalone_delivered = seq

    @property
    def standalone_delivered(self) -> int:
        """The last standalone event handed to a connection (the transport cannot know more)."""
        return self._standalone_delivered

    def _superseded(self, stream_id: str, generation: int) -> bool:
        current = self._listener_generations.get(stream_id)
        return current is not None and current != generation

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

    async def append(self, stream_id: str, message: Message) -> None:
        await self.events.append(
            self.id,
            stream_id,
            encode_message(message),
            is_response=isinstance(message, (Response, ErrorResponse)),
        )

    async def send_standalone(self, message: Notification | Request) -> None:
        """A message tied to no request: it goes to the GET stream (or the legacy SSE stream)."""
        if not self.closed:
            await self.append(STANDALONE_STREAM, message)

    # --- incoming messages ------------------------------------------------------------------------

    async def start_requests(
        self,
        requests: list[Request],
        *,
        refusals: Sequence[ErrorResponse] = (),
        stream_id: str | None = None,
        caller_token: CallerToken | None = None,
    ) -> str:
        """Start each request in its own task; return the stream their output goes to.

        `refusals` are errors for batch elements that were not valid requests; they go on the same
        stream first, so a batch gets one answer per element. `caller_token` is the HTTP request's bearer
        token, for the features' token exchange.
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
            await self.append(stream_id, refusal)
        for request in requests:
            if request.id in self._in_flight:
                await self.append(
                    stream_id, _error(request.id, InvalidRequest(f"request id {request.id!r} is already in flight"))
                )
                await self._request_done(stream_id)
                continue
            # Registered before its task runs, so that a cancellation arriving first still finds it.
            entry = InFlight(request, stream_id, trio.CancelScope(), caller_token)
            self._in_flight[request.id] = entry
            self._nursery.start_soon(self._execute, entry)
        await self._request_done(stream_id)
        return stream_id

    async def answer_initialize(self, request: Request) -> str:
        """`initialize`, answered in the calling task; its encoded answer.

        Not a task of the session's like other requests: nothing can cancel it on its own (`cancel_request` refuses
        it, and no other request of the session can exist before its id is told), it emits nothing but its answer,
        and a client gone before the answer loses a session nobody knows of. So no task, cancel scope, stream or
        reader is made for it: the cost of a new session is what it is for.
        """
        if self._nursery is None or self.closed:
            raise InvalidRequest("session is closed")
        self.touch()
        reply: Message
        try:
            reply = await answer_request(self._core, self, request, INITIALIZE_STREAM)
        except RefserverError as exc:
            reply = _error(request.id, exc)
        except Exception:
            logger.exception("request %s (%s) failed", request.id, request.method)
            reply = _error(request.id, InternalError("internal error"))
        self.touch()
        return encode_message(reply)

    async def _execute(self, entry: InFlight) -> None:
        request, stream_id = entry.request, entry.stream_id
        reply: Message | None = None
        with entry.cancel_scope:
            try:
                reply = await answer_request(self._core, self, request, stream_id, entry.caller_token)
            except RefserverError as exc:
                reply = _error(request.id, exc)
            except Exception:
                # The core turns a feature's failure into an outcome; this is the adapter's own (the stream).
                logger.exception("request %s (%s) failed", request.id, request.method)
                reply = _error(request.id, InternalError("internal error"))
            finally:
                del self._in_flight[request.id]
        # A cancelled request gets no response (the spec's rule for notifications/cancelled); for DELETE,
        # expiry and shutdown the session's streams are dropped anyway.
        with trio.CancelScope(shield=True):
            try:
                if reply is not None and not self.closed:
                    await self.append(stream_id, reply)
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
            # Not saved on its own: `initializing` and `ready` serve alike (`SessionState.ready`), so the stored
            # record may say `initializing` until the next save carries the phase along.
            self.state.receive_initialized()
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
        """Hand the answer to the call waiting for it on this instance, if one does."""
        return self.client_requests.deliver(reply)

    def statistics(self) -> dict[str, Any]:
        return {
            "in_flight": len(self._in_flight),
            "pending_client_requests": len(self.client_requests),
            "listeners": self._listeners,
            "subscriptions": len(self.state.subscriptions),
            "phase": self.state.lifecycle.phase.value,
        }


@attrs.define(eq=False)
class Listener:
    """What a response following one stream of a session may ask of it; registered while entered.

    Its own context manager (not a `contextlib.contextmanager` generator): an open stream holds one small object.
    """

    session: Session
    stream_id: str
    generation: int = 0

    def __enter__(self) -> Listener:
        self.generation = self.session._listen(self.stream_id)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session._unlisten()

    @property
    def superseded(self) -> bool:
        """A newer connection follows the stream, or the work asked for this one to end."""
        return self.session._superseded(self.stream_id, self.generation)

    @property
    def writers_run_here(self) -> bool:
        """True if this instance executes the requests writing to the stream."""
        return self.stream_id in self.session._open_requests_per_stream

    def delivered(self, seq: int) -> None:
        self.session._delivered(self.stream_id, seq)


def _error(request_id: RequestId, exc: RefserverError) -> ErrorResponse:
    return ErrorResponse(request_id, exc.jsonrpc_code, exc.message, exc.data)

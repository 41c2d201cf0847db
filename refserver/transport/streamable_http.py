"""Streamable HTTP on `/mcp`: POST (JSON or SSE answers), GET (the standalone stream), DELETE.

The handlers are thin: they check headers, parse, hand messages to the session and then only read
the session's streams. Whether a POST is answered with JSON or SSE is decided by what the request
produces: a plain result becomes JSON; the first notification or server-to-client request (or a
result slower than the heartbeat interval) turns the answer into an SSE stream.

This is the hot path, so it is plain ASGI in front of the Quart app (see `transport/asgi.py`): every other
path, and the CORS preflight of this one, goes on to Quart.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Final

import trio

from refserver.backend.events import STANDALONE_STREAM, format_event_id, parse_event_id
from refserver.errors import (
    BackendUnavailable,
    BadRequest,
    InvalidRequest,
    MethodNotAllowed,
    MissingSessionId,
    RefserverError,
    ServiceUnavailable,
    SessionNotFound,
)
from refserver.observability.http import note_route
from refserver.protocol.core import CallerToken
from refserver.protocol.envelope import Era, body_meta, era_of
from refserver.protocol.jsonrpc import (
    Notification,
    ParsedBody,
    Request,
    parse_body,
)
from refserver.protocol.lifecycle import Phase, batch_allowed, check_protocol_version_header
from refserver.protocol.sse import encode_event
from refserver.session import Session
from refserver.transport.admission import admit_access, admit_headers, admit_operations, caller_token
from refserver.transport.asgi import (
    EVENT_STREAM,
    ClientDisconnected,
    HttpRequest,
    HttpResponse,
    encode_headers,
    send_response,
)
from refserver.transport.guards import check_json_content_type, check_post_accept, check_sse_accept
from refserver.transport.refusals import RefusalPolicy
from refserver.transport.routing import submit_body
from refserver.transport.services import Services
from refserver.transport.sse_stream import SSE_HEADERS, follow_stream
from refserver.transport.stream_reader import StreamReader
from refserver.web import response_headers
from refserver.web.asgi_types import Receive, Scope, Send
from refserver.web.errors import error_parts, unexpected_exception_body

logger = logging.getLogger(__name__)

MCP_PATH: Final = "/mcp"
SESSION_HEADER: Final = "Mcp-Session-Id"
VERSION_HEADER: Final = "Mcp-Protocol-Version"
HANDLED_ELSEWHERE: Final = frozenset({"OPTIONS"})
"""The CORS preflight is answered by the Quart app, with the other paths' preflights."""


def drain_headers(http_version: str) -> tuple[tuple[str, str], ...]:
    """Once shutdown has begun, every HTTP/1 answer ends its connection: the client's next request opens a new one,
    which goes to another instance, instead of racing Hypercorn closing the kept-alive connection at shutdown (where
    it is dropped unanswered; see refserver/hypercorn_workarounds.py for what that race used to cost). (HTTP/2
    forbids the header: its streams end on their own.)"""
    return (("Connection", "close"),) if http_version in ("1.0", "1.1") else ()


_NO_CONTENT: Final = HttpResponse(204, content_type="text/plain")
_ACCEPTED: Final = HttpResponse(202, content_type="text/plain")


class StreamableHttpEndpoint:
    """ASGI: `/mcp` here, everything else to `inner` (the Quart app)."""

    def __init__(self, inner: Callable[..., Awaitable[Any]], services: Services, refusals: RefusalPolicy) -> None:
        self._inner = inner
        self._services = services
        self._settings = services.settings
        self._registry = services.registry
        self._refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MCP_PATH or scope["method"] in HANDLED_ELSEWHERE:
            await self._inner(scope, receive, send)
            return
        note_route(MCP_PATH)
        request = HttpRequest(scope, receive)
        if request.header("mcp-session-id"):
            # A session's request: its work belongs to the session, nothing runs in this request's task (the hot
            # path of the 2025 era pays for no nursery).
            await self._serve(request, send, None)
            return
        # Perhaps a 2026 request: its handler runs in here, so that it ends with the answer (a closed stream
        # cancels it).
        async with trio.open_nursery() as request_work:
            await self._serve(request, send, request_work)
            request_work.cancel_scope.cancel()

    async def _serve(self, request: HttpRequest, send: Send, request_work: trio.Nursery | None) -> None:
        try:
            response = await self._handle(request, request_work)
        except RefserverError as exc:
            response = self._refusal(request, exc)
        except ClientDisconnected:
            return  # the client left while its body was being read: nobody to answer
        except Exception as exc:
            response = HttpResponse(500, unexpected_exception_body(exc).encode())
        origin = request.header("origin")
        # Passed on, not kept here: a stream's frame should not hold its response headers for hours.
        await send_response(
            request,
            send,
            response,
            encode_headers(
                response,
                [
                    *response_headers.security_headers(self._settings, response.content_type),
                    *response_headers.mcp_cors_headers(origin, self._services.origin_policy),
                    *(drain_headers(request.scope.get("http_version", "1.1")) if self._registry.draining else ()),
                ],
            ),
            request_work,
        )

    def _refusal(self, request: HttpRequest, exc: RefserverError) -> HttpResponse:
        status, body, headers = error_parts(exc, request.rpc_id)
        headers.update(self._refusals.headers_for(exc))
        if request.has_body and not request.body_complete:
            # Refused before its body was read: a client reusing the connection would send the rest as a new
            # request. HTTP/1.1 lets us close instead (RFC 9112 sec. 9.6).
            headers["Connection"] = "close"
        return HttpResponse(status, body.encode(), headers=tuple(headers.items()))

    async def _handle(self, request: HttpRequest, request_work: trio.Nursery | None) -> HttpResponse:
        if request.method == "POST":
            return await self._post(request, request_work)
        if request.method == "GET":
            return await self._get(request)
        if request.method == "DELETE":
            return await self._delete(request)
        self._services.origin_policy.check(request.header("host"), request.header("origin"))
        raise MethodNotAllowed("Method Not Allowed")

    async def _admit(self, request: HttpRequest) -> str | None:
        return await admit_headers(
            self._services, request.header("host"), request.header("origin"), request.header("authorization")
        )

    async def _session(self, request: HttpRequest, owner: str | None, *, for_delete: bool = False) -> Session:
        session_id = request.header("mcp-session-id")
        if not session_id and era_of(None, request.header("mcp-protocol-version"), None) is Era.STATELESS:
            # The 2026 revision has no GET stream and no session to delete (streamable-http.mdx, backward
            # compatibility): its clients listen with `subscriptions/listen`.
            raise MethodNotAllowed(f"Method Not Allowed: {request.method} is not part of protocol 2026-07-28")
        if not session_id:
            raise MissingSessionId("Bad Request: Mcp-Session-Id header is required")
        session = await self._registry.get(session_id, owner=owner)
        if session.kind != "streamable":
            raise SessionNotFound("Session not found")
        if not for_delete:
            check_protocol_version_header(
                request.header("mcp-protocol-version"), session.state.lifecycle.protocol_version
            )
        return session

    # --- POST -------------------------------------------------------------------------------------

    async def _post(self, request: HttpRequest, request_work: trio.Nursery | None) -> HttpResponse:
        access = await admit_access(
            self._services, request.header("host"), request.header("origin"), request.header("authorization")
        )
        owner = access.subject if access is not None else None
        check_post_accept(request.header("accept"))
        check_json_content_type(request.header("content-type"))
        parsed = parse_body(await request.read_body(self._settings.max_body_bytes, self._settings.body_read_timeout))
        first = parsed.messages[0]
        request.rpc_id = first.id if isinstance(first, Request) and not parsed.is_batch else None
        params = first.params if isinstance(first, Request | Notification) else None
        admit_operations(self._services, access, parsed)
        caller = caller_token(access, request.header("authorization"))
        session_id = request.header("mcp-session-id")
        if era_of(session_id, request.header("mcp-protocol-version"), body_meta(params)) is Era.STATELESS:
            assert request_work is not None  # only a request without a session id is 2026-era
            return await self._services.stateless.answer(request, parsed, access, caller, request_work)
        if not session_id:
            return await self._initialize(parsed, owner)
        session = await self._session(request, owner)
        return await self._deliver(session, parsed, caller)

    async def _initialize(self, parsed: ParsedBody, owner: str | None) -> HttpResponse:
        first = parsed.messages[0]
        if parsed.is_batch or not isinstance(first, Request) or first.method != "initialize":
            if isinstance(first, Request) and first.method == "initialize":
                raise InvalidRequest("Invalid Request: initialize must not be part of a batch")
            raise MissingSessionId("Bad Request: Mcp-Session-Id header is required (initialize first)")
        registry = self._registry
        session = await registry.create_session("streamable", owner)
        try:
            reply = await session.answer_initialize(first)
        except BaseException:
            session.close("initialize abandoned")  # cancelled (the client left, or shutdown): nobody knows its id
            raise
        refused = session.state.lifecycle.phase is Phase.NEW
        if refused or not session.stored or session.closed:
            # initialize was refused (bad params), its record could not be stored, or shutdown began meanwhile: the
            # half-made session must not linger.
            if not session.closed:
                await registry.delete(session.id, owner=owner)
            if refused:
                return HttpResponse(400, reply.encode())
            if not session.stored:
                # Only Redis can fail to store a session (the memory backend has nothing to store).
                raise BackendUnavailable("Redis unavailable: the new session could not be stored; retry")
            raise ServiceUnavailable("the new session was closed before its initialize was answered; retry")
        return HttpResponse(200, reply.encode(), headers=((SESSION_HEADER, session.id),))

    async def _deliver(self, session: Session, parsed: ParsedBody, caller: CallerToken | None) -> HttpResponse:
        version = session.state.lifecycle.protocol_version
        if parsed.is_batch and not batch_allowed(version):
            raise InvalidRequest(f"Invalid Request: JSON-RPC batches are not supported in protocol {version}")
        stream_id = await submit_body(session, parsed, initialize_allowed=False, caller_token=caller)
        if stream_id is None:
            return _ACCEPTED
        return await self._answer(session, stream_id, batch=parsed.is_batch)

    async def _answer(self, session: Session, stream_id: str, *, batch: bool) -> HttpResponse:
        """JSON if the requests produced nothing but their results, else an SSE stream."""
        settings = self._settings
        seen_data: list[str] = []
        generation = session.listener_generation(stream_id)
        reader = StreamReader(self._registry.events, session.id, stream_id)
        with trio.move_on_after(settings.heartbeat_interval), reader:
            while True:
                if session.listener_generation(stream_id) != generation:
                    # The work asked for this connection to end before it said anything: prime the
                    # stream and close it; the client resumes with Last-Event-ID, on any instance, so the
                    # stream must be in the shared log before its id reaches the client.
                    with contextlib.suppress(BackendUnavailable):
                        await self._registry.events.persist(session.id, stream_id)
                    return _sse(_primed_and_closed(stream_id, settings.sse_retry_ms))
                read = await reader.read()
                if session.close_reason == "gone" and not read.events and not read.closed:
                    raise SessionNotFound("Session not found: it expired, was deleted, or never existed")
                if any(not e.is_response for e in read.events):
                    break
                seen_data.extend(e.data for e in read.events)
                if read.closed or not read.exists:
                    if not seen_data:
                        # Every request was cancelled: nothing is owed, an empty stream says so.
                        return _sse(_empty())
                    body = f"[{','.join(seen_data)}]" if batch else seen_data[0]
                    return HttpResponse(200, body.encode())
                await reader.wait()
        return _sse(
            follow_stream(
                self._registry,
                session,
                stream_id,
                after_seq=0,
                heartbeat_interval=settings.heartbeat_interval,
                retry_ms=settings.sse_retry_ms,
            )
        )

    # --- GET and DELETE ---------------------------------------------------------------------------

    async def _get(self, request: HttpRequest) -> HttpResponse:
        owner = await self._admit(request)
        check_sse_accept(request.header("accept"))
        session = await self._session(request, owner)
        settings = self._settings
        # A fresh GET gets what was never delivered on the standalone stream, nothing twice.
        stream_id, after_seq = STANDALONE_STREAM, session.standalone_delivered
        last_event_id = request.header("last-event-id")
        resuming = bool(last_event_id)
        if last_event_id:
            parsed = parse_event_id(last_event_id)
            if parsed is None:
                raise BadRequest("Bad Request: malformed Last-Event-ID")
            stream_id, after_seq = parsed
            read = await self._registry.events.read_after(session.id, stream_id, after_seq)
            if not read.exists:
                raise SessionNotFound("No such stream to resume in this session")
        return _sse(
            follow_stream(
                self._registry,
                session,
                stream_id,
                after_seq=after_seq,
                heartbeat_interval=settings.heartbeat_interval,
                retry_ms=settings.sse_retry_ms,
                # A resumed stream already has its ids: only the reconnection delay is repeated.
                prime=not resuming,
                preamble=(encode_event(None, retry_ms=settings.sse_retry_ms),) if resuming else (),
            )
        )

    async def _delete(self, request: HttpRequest) -> HttpResponse:
        owner = await self._admit(request)
        session = await self._session(request, owner, for_delete=True)
        await self._registry.delete(session.id, owner=owner)
        return _NO_CONTENT


def _sse(body: AsyncGenerator[bytes, None]) -> HttpResponse:
    return HttpResponse(200, content_type=EVENT_STREAM, headers=tuple(SSE_HEADERS.items()), stream=body)


async def _primed_and_closed(stream_id: str, retry_ms: int) -> AsyncGenerator[bytes, None]:
    yield encode_event("", event_id=format_event_id(stream_id, 0), retry_ms=retry_ms)


async def _empty() -> AsyncGenerator[bytes, None]:
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk

"""Streamable HTTP on `/mcp`: POST (JSON or SSE answers), GET (the standalone stream), DELETE.

The handlers are thin: they check headers, parse, hand messages to the session and then only read
the session's streams. Whether a POST is answered with JSON or SSE is decided by what the request
produces: a plain result becomes JSON; the first notification or server-to-client request (or a
result slower than the heartbeat interval) turns the answer into an SSE stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import trio
from quart import Blueprint, Response, request

from refserver.backend.events import STANDALONE_STREAM, format_event_id, parse_event_id
from refserver.errors import (
    INVALID_REQUEST,
    BadRequest,
    InvalidRequest,
    MethodNotAllowed,
    MissingSessionId,
    SessionNotFound,
)
from refserver.protocol.jsonrpc import (
    ErrorResponse,
    Invalid,
    Notification,
    ParsedBody,
    Request,
    parse_body,
)
from refserver.protocol.jsonrpc import (
    Response as RpcResponse,
)
from refserver.protocol.lifecycle import Phase, batch_allowed, check_protocol_version_header
from refserver.protocol.sse import encode_event
from refserver.session import Session
from refserver.transport.admission import admit
from refserver.transport.errors import error_response
from refserver.transport.guards import check_json_content_type, check_post_accept, check_sse_accept, read_body
from refserver.transport.services import Services
from refserver.transport.sse_stream import follow_stream, sse_response

SESSION_HEADER: Final = "Mcp-Session-Id"
VERSION_HEADER: Final = "Mcp-Protocol-Version"


def create_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("streamable_http", __name__)
    settings = services.settings
    registry = services.registry

    async def session_from_headers(owner: str | None, *, for_delete: bool = False) -> Session:
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            raise MissingSessionId("Bad Request: Mcp-Session-Id header is required")
        session = await registry.get(session_id, owner=owner)
        if session.kind != "streamable":
            raise SessionNotFound("Session not found")
        if not for_delete:
            check_protocol_version_header(request.headers.get(VERSION_HEADER), session.state.lifecycle.protocol_version)
        return session

    async def answer(session: Session, stream_id: str, *, batch: bool, headers: dict[str, str]) -> Response:
        """JSON if the requests produced nothing but their results, else an SSE stream."""
        events = registry.events
        cursor = 0
        seen_data: list[str] = []
        generation = session.listener_generation(stream_id)
        with trio.move_on_after(settings.heartbeat_interval), events.watching(session.id, stream_id):
            while True:
                if session.listener_generation(stream_id) != generation:
                    # The work asked for this connection to end before it said anything: prime the
                    # stream and close it; the client resumes with Last-Event-ID.
                    return sse_response(_primed_and_closed(stream_id, settings.sse_retry_ms), headers)
                read = await events.read_after(session.id, stream_id, cursor)
                if session.close_reason == "gone" and not read.events and not read.closed:
                    raise SessionNotFound("Session not found: it expired, was deleted, or never existed")
                if any(not e.is_response for e in read.events):
                    break
                seen_data.extend(e.data for e in read.events)
                cursor = read.events[-1].seq if read.events else cursor
                if read.closed or not read.exists:
                    if not seen_data:
                        # Every request was cancelled: nothing is owed, an empty stream says so.
                        return sse_response(_empty(), headers)
                    body = f"[{','.join(seen_data)}]" if batch else seen_data[0]
                    return Response(body, content_type="application/json", headers=headers)
                await events.wait_for_events(session.id, stream_id, cursor)
        return sse_response(
            follow_stream(
                registry,
                session,
                stream_id,
                after_seq=0,
                heartbeat_interval=settings.heartbeat_interval,
                retry_ms=settings.sse_retry_ms,
            ),
            headers,
        )

    @blueprint.post("/mcp")
    async def post_mcp() -> Response:
        owner = await admit(services)
        check_post_accept(request.headers.get("Accept"))
        check_json_content_type(request.headers.get("Content-Type"))
        parsed = parse_body(await read_body(request, settings.max_body_bytes))
        if not request.headers.get(SESSION_HEADER):
            return await initialize(parsed, owner)
        session = await session_from_headers(owner)
        return await deliver(session, parsed)

    async def initialize(parsed: ParsedBody, owner: str | None) -> Response:
        first = parsed.messages[0]
        if parsed.is_batch or not isinstance(first, Request) or first.method != "initialize":
            if isinstance(first, Request) and first.method == "initialize":
                raise InvalidRequest("Invalid Request: initialize must not be part of a batch")
            raise MissingSessionId("Bad Request: Mcp-Session-Id header is required (initialize first)")
        session = await registry.create_session("streamable", owner)
        stream_id = await session.start_requests([first])
        reply = await _wait_closed(session, stream_id)
        if session.state.lifecycle.phase is Phase.NEW:
            # initialize was refused (bad params): the half-made session must not linger.
            await registry.delete(session.id, owner=owner)
            if not reply:
                raise InvalidRequest("initialize was cancelled")
            return Response(reply, content_type="application/json", status=400)
        return Response(reply, content_type="application/json", headers={SESSION_HEADER: session.id})

    async def _wait_closed(session: Session, stream_id: str) -> str:
        cursor = 0
        data = ""
        with registry.events.watching(session.id, stream_id):
            while True:
                read = await registry.events.read_after(session.id, stream_id, cursor)
                for event in read.events:
                    data = event.data
                    cursor = event.seq
                if read.closed or not read.exists:
                    return data
                await registry.events.wait_for_events(session.id, stream_id, cursor)

    async def deliver(session: Session, parsed: ParsedBody) -> Response:
        version = session.state.lifecycle.protocol_version
        if parsed.is_batch and not batch_allowed(version):
            raise InvalidRequest(f"Invalid Request: JSON-RPC batches are not supported in protocol {version}")
        refusals = [
            ErrorResponse(m.id, INVALID_REQUEST, f"Invalid Request: {m.reason}")
            for m in parsed.messages
            if isinstance(m, Invalid)
        ]
        requests: list[Request] = []
        for message in parsed.messages:
            if isinstance(message, Request):
                if message.method == "initialize":
                    raise InvalidRequest("Invalid Request: session is already initialized", data={"id": message.id})
                requests.append(message)
            elif isinstance(message, Notification):
                await session.receive_notification(message)
            elif isinstance(message, (RpcResponse, ErrorResponse)):
                await session.receive_reply(message)
        if not requests and not refusals:
            return Response("", status=202, content_type="text/plain")
        stream_id = await session.start_requests(requests, refusals=refusals)
        return await answer(session, stream_id, batch=parsed.is_batch, headers={})

    @blueprint.get("/mcp")
    async def get_mcp() -> Response:
        owner = await admit(services)
        check_sse_accept(request.headers.get("Accept"))
        session = await session_from_headers(owner)
        # A fresh GET gets what was never delivered on the standalone stream, nothing twice.
        stream_id, after_seq = STANDALONE_STREAM, session.standalone_delivered
        last_event_id = request.headers.get("Last-Event-ID")
        resuming = bool(last_event_id)
        if last_event_id:
            parsed = parse_event_id(last_event_id)
            if parsed is None:
                raise BadRequest("Bad Request: malformed Last-Event-ID")
            stream_id, after_seq = parsed
            read = await registry.events.read_after(session.id, stream_id, after_seq)
            if not read.exists:
                raise SessionNotFound("No such stream to resume in this session")
        return sse_response(
            follow_stream(
                registry,
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

    @blueprint.delete("/mcp")
    async def delete_mcp() -> Response:
        owner = await admit(services)
        session = await session_from_headers(owner, for_delete=True)
        await registry.delete(session.id, owner=owner)
        return Response("", status=204, content_type="text/plain")

    @blueprint.route("/mcp", methods=["PUT", "PATCH"])
    async def other_methods() -> Response:
        services.origin_policy.check(request.headers.get("Host"), request.headers.get("Origin"))
        raise MethodNotAllowed("Method Not Allowed")

    @blueprint.errorhandler(MethodNotAllowed)
    async def method_not_allowed(exc: MethodNotAllowed) -> Response:
        return error_response(exc)

    return blueprint


async def _primed_and_closed(stream_id: str, retry_ms: int) -> AsyncIterator[bytes]:
    yield encode_event("", event_id=format_event_id(stream_id, 0), retry_ms=retry_ms)


async def _empty() -> AsyncIterator[bytes]:
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk

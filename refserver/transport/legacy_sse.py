"""The legacy HTTP+SSE transport (protocol 2024-11-05) for old clients: `GET /sse` + `POST /message`.

A legacy session lives exactly as long as its SSE connection: every response, notification and
server-to-client request of the session travels on that one stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import trio
from quart import Blueprint, Response, request

from refserver.backend.events import STANDALONE_STREAM
from refserver.errors import BackendUnavailable, InvalidRequest, MissingSessionId, SessionNotFound
from refserver.protocol.jsonrpc import parse_body
from refserver.protocol.lifecycle import batch_allowed
from refserver.protocol.sse import encode_event
from refserver.registry import SessionRegistry
from refserver.session import Session
from refserver.transport.admission import admit, admit_operations, caller_token
from refserver.transport.guards import check_json_content_type, check_sse_accept, read_body
from refserver.transport.routing import submit_body
from refserver.transport.services import Services
from refserver.transport.sse_stream import follow_stream, sse_response

STREAM_END_CLEANUP_TIMEOUT: Final = 2.0
"""A legacy session ends with its stream; deleting it everywhere may take this long at most."""


def create_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("legacy_sse", __name__)
    settings = services.settings
    registry = services.registry

    @blueprint.get("/sse")
    async def open_stream() -> Response:
        access = await admit(services)
        owner = access.subject if access is not None else None
        check_sse_accept(request.headers.get("Accept"))
        session = await registry.create_session("legacy", owner)
        endpoint = encode_event(f"/message?sessionId={session.id}", event="endpoint")
        return sse_response(_session_stream(registry, session, endpoint, settings.heartbeat_interval))

    async def _session_stream(
        registry: SessionRegistry, session: Session, endpoint: bytes, heartbeat: float
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in follow_stream(
                registry,
                session,
                STANDALONE_STREAM,
                after_seq=0,
                heartbeat_interval=heartbeat,
                retry_ms=settings.sse_retry_ms,
                preamble=(endpoint,),
                prime=False,
            ):
                yield chunk
        finally:
            with trio.move_on_after(STREAM_END_CLEANUP_TIMEOUT, shield=True):
                try:
                    await registry.delete(session.id, owner=session.owner)
                except (SessionNotFound, BackendUnavailable):
                    session.close("stream closed")

    @blueprint.post("/message")
    async def post_message() -> Response:
        access = await admit(services)
        owner = access.subject if access is not None else None
        check_json_content_type(request.headers.get("Content-Type"))
        session_id = request.args.get("sessionId")
        if not session_id:
            raise MissingSessionId("Bad Request: sessionId query parameter is required")
        # Another user's session id gets 404 like an unknown one: nothing is delivered into it.
        session = await registry.get(session_id, owner=owner)
        if session.kind != "legacy":
            raise SessionNotFound("Session not found")
        parsed = parse_body(await read_body(request, settings.max_body_bytes, settings.body_read_timeout))
        admit_operations(services, access, parsed)
        if parsed.is_batch and not batch_allowed(session.state.lifecycle.protocol_version or "2024-11-05"):
            raise InvalidRequest("Invalid Request: batches are not supported in this protocol version")
        await submit_body(
            session,
            parsed,
            initialize_allowed=True,
            caller_token=caller_token(access, request.headers.get("Authorization")),
        )
        return Response("Accepted", status=202, content_type="text/plain")

    return blueprint

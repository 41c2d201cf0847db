"""One routing loop for both transports: a parsed body's messages to where each belongs in a session.

Notifications and the client's replies to our requests are handed to the session at once; requests (with an
error for every batch element that was not a valid message) are submitted together, so that their answers
share one stream, and the stream's id is returned (None when the body held no request).
"""

from __future__ import annotations

from refserver.errors import INVALID_REQUEST, InvalidRequest
from refserver.protocol.core import CallerToken
from refserver.protocol.jsonrpc import ErrorResponse, Invalid, Notification, ParsedBody, Request, Response
from refserver.session import Session


async def submit_body(
    session: Session, parsed: ParsedBody, *, initialize_allowed: bool, caller_token: CallerToken | None = None
) -> str | None:
    refusals = [
        ErrorResponse(m.id, INVALID_REQUEST, f"Invalid Request: {m.reason}")
        for m in parsed.messages
        if isinstance(m, Invalid)
    ]
    requests: list[Request] = []
    for message in parsed.messages:
        if isinstance(message, Request):
            if message.method == "initialize" and not initialize_allowed:
                raise InvalidRequest("Invalid Request: session is already initialized", data={"id": message.id})
            requests.append(message)
        elif isinstance(message, Notification):
            await session.receive_notification(message)
        elif isinstance(message, (Response, ErrorResponse)):
            await session.receive_reply(message)
    if not requests and not refusals:
        return None
    return await session.start_requests(requests, refusals=refusals, caller_token=caller_token)

"""The one place where exceptions become wire responses (JSON-RPC error bodies with HTTP statuses)."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from refserver.errors import RefserverError
from refserver.protocol.jsonrpc import RequestId, encode_json

logger = logging.getLogger(__name__)


def jsonrpc_error_body(code: int, message: str, request_id: RequestId | None = None, data: Any = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode_json({"jsonrpc": "2.0", "id": request_id, "error": error})


def _close_if_body_unread(response: Response) -> Response:
    """Tell an HTTP/1.x client to close the connection when its request carried a body.

    Most refusals (Host/Origin, Accept, Content-Type, size, routing, an unknown legacy session) are sent
    before the body has been read to the end. Hypercorn 0.18 under quart-trio then neither recycles nor
    closes the connection (quart-trio cancels the task in which Hypercorn does that bookkeeping), so a
    client reusing the connection would wait forever. `Connection: close` makes it open a fresh one.
    """
    if has_request_context() and request.http_version in ("1.0", "1.1"):
        complete = getattr(request.body, "_complete", None)  # Quart's "whole body received" event
        if complete is not None and complete.is_set():
            return response
        length = (request.headers.get("Content-Length") or "").strip()
        if "Transfer-Encoding" in request.headers or length not in ("", "0"):
            response.headers["Connection"] = "close"
    return response


def error_response(exc: RefserverError, request_id: RequestId | None = None) -> Response:
    status = exc.http_status if exc.http_status >= 400 else 400
    data = exc.data
    if isinstance(data, dict) and set(data) == {"id"}:
        # The parser's way of saying which request was invalid: echo that id (JSON-RPC 2.0, section 5).
        if request_id is None:
            request_id = data["id"]
        data = None
    response = Response(
        jsonrpc_error_body(exc.jsonrpc_code, exc.message, request_id, data),
        status=status,
        content_type="application/json",
    )
    if status == 405:
        response.headers["Allow"] = "GET, POST, DELETE"
    return _close_if_body_unread(response)


def http_exception_response(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = Response(
        jsonrpc_error_body(-32600 if status < 500 else -32603, exc.description or exc.name),
        status=status,
        content_type="application/json",
    )
    valid_methods = getattr(exc, "valid_methods", None)
    if status == 405 and valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)  # RFC 9110: a 405 MUST list the allowed methods
    return _close_if_body_unread(response)


def unexpected_exception_response(exc: BaseException) -> Response:
    logger.error("unhandled error", exc_info=exc)
    return Response(jsonrpc_error_body(-32603, "Internal server error"), status=500, content_type="application/json")

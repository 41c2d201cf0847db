"""The one place where exceptions become wire responses (JSON-RPC error bodies with HTTP statuses)."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response
from werkzeug.exceptions import HTTPException

from refserver.errors import RefserverError
from refserver.protocol.jsonrpc import RequestId, encode_json

logger = logging.getLogger(__name__)


def jsonrpc_error_body(code: int, message: str, request_id: RequestId | None = None, data: Any = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode_json({"jsonrpc": "2.0", "id": request_id, "error": error})


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
    return response


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
    return response


def unexpected_exception_response(exc: BaseException) -> Response:
    logger.error("unhandled error", exc_info=exc)
    return Response(jsonrpc_error_body(-32603, "Internal server error"), status=500, content_type="application/json")

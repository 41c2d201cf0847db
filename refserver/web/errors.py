"""The one place where exceptions become wire responses (JSON-RPC error bodies with HTTP statuses)."""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

from quart import Response, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from refserver.errors import RefserverError
from refserver.protocol.jsonrpc import RequestId, encode_json

logger = logging.getLogger(__name__)

ALLOWED_MCP_METHODS: Final = "GET, POST, DELETE"
INTERNAL_ERROR_MESSAGE: Final = "Internal server error"


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


def error_parts(exc: RefserverError, request_id: RequestId | None = None) -> tuple[int, str, dict[str, str]]:
    """(status, JSON-RPC error body, headers) for a refusal; both the Quart app and the plain ASGI endpoint use it."""
    status = exc.http_status if exc.http_status >= 400 else 400
    data = exc.data
    if isinstance(data, dict) and set(data) == {"id"}:
        # The parser's way of saying which request was invalid: echo that id (JSON-RPC 2.0, section 5).
        if request_id is None:
            request_id = data["id"]
        data = None
    headers = {"Allow": ALLOWED_MCP_METHODS} if status == 405 else {}
    return status, jsonrpc_error_body(exc.jsonrpc_code, exc.message, request_id, data), headers


def error_response(exc: RefserverError, request_id: RequestId | None = None) -> Response:
    status, body, headers = error_parts(exc, request_id)
    return _close_if_body_unread(Response(body, status=status, content_type="application/json", headers=headers))


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


def unexpected_exception_body(exc: BaseException) -> str:
    """Log a failure nobody anticipated; the client learns only that it happened."""
    logger.error("unhandled error", exc_info=exc)
    return jsonrpc_error_body(-32603, INTERNAL_ERROR_MESSAGE)


def unexpected_exception_response(exc: BaseException) -> Response:
    return Response(unexpected_exception_body(exc), status=500, content_type="application/json")


class Refusals(Protocol):
    """The headers a refused request carries besides its JSON-RPC error (the MCP endpoints' challenges)."""

    def headers_for(self, exc: RefserverError) -> dict[str, str]: ...


def register_error_handlers(app: QuartTrio, refusals: Refusals | None = None) -> None:
    """Every failure of `app` becomes a JSON-RPC error body; `refusals` adds the MCP endpoints' own headers."""
    if refusals is not None:
        policy = refusals

        @app.errorhandler(RefserverError)
        async def on_refserver_error(exc: RefserverError) -> Response:
            response = error_response(exc)
            response.headers.update(policy.headers_for(exc))
            return response

    @app.errorhandler(HTTPException)
    async def on_http_exception(exc: HTTPException) -> Response:
        return http_exception_response(exc)

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        return unexpected_exception_response(exc)

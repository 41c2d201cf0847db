"""One exception tree for refserver: every error knows its JSON-RPC code and its HTTP status.

Adapters (Quart handlers, the Redis backend) map foreign exceptions to these; exactly one place,
`refserver.web.errors`, turns them into wire responses.
"""

from __future__ import annotations

from typing import Any, ClassVar

# JSON-RPC 2.0 standard codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000..-32019).
SERVER_ERROR = -32000
RESOURCE_NOT_FOUND = -32002  # what MCP servers have used for unknown resource URIs since 2024-11-05
# The 2026-07-28 revision's own codes.
HEADER_MISMATCH = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022


class RefserverError(Exception):
    """Base of every error refserver raises on purpose."""

    jsonrpc_code: ClassVar[int] = INTERNAL_ERROR
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


# --- JSON-RPC level: the message was read, the request is answered with an error object ---


class ParseError(RefserverError):
    jsonrpc_code = PARSE_ERROR
    http_status = 400


class InvalidRequest(RefserverError):
    jsonrpc_code = INVALID_REQUEST
    http_status = 400


class MethodNotFound(RefserverError):
    jsonrpc_code = METHOD_NOT_FOUND
    http_status = 200


class InvalidParams(RefserverError):
    jsonrpc_code = INVALID_PARAMS
    http_status = 200


class ResourceNotFound(RefserverError):
    jsonrpc_code = RESOURCE_NOT_FOUND
    http_status = 200


class InternalError(RefserverError):
    jsonrpc_code = INTERNAL_ERROR
    http_status = 500


class ToolCallFailed(RefserverError):
    """Raised by a tool whose call must end in this JSON-RPC error rather than an `isError` result the model reads
    (a task ends `failed` with it)."""


class TokenExchangeUnavailable(RefserverError):
    """A feature asked for a downstream token where none can be had (no exchange set up, no caller token)."""

    jsonrpc_code = INTERNAL_ERROR
    http_status = 200


class TokenExchangeRefused(RefserverError):
    """The authorization server refused a token exchange (its `error` and description in the message)."""

    jsonrpc_code = INTERNAL_ERROR
    http_status = 200


class RequestCancelled(RefserverError):
    """The request was cancelled (by the client, DELETE, expiry or shutdown); no response is owed."""

    jsonrpc_code = SERVER_ERROR
    http_status = 200


class ClientCapabilityMissing(RefserverError):
    """A feature needs a client capability (sampling, elicitation) that the client did not declare.

    A 2025 tool reports it as its own error result; in the 2026 era it becomes `MissingRequiredClientCapability`.
    """

    jsonrpc_code = INVALID_REQUEST
    http_status = 200

    def __init__(self, message: str, *, capability: str, mode: str | None = None) -> None:
        super().__init__(message)
        self.capability = capability
        self.mode = mode

    @property
    def required_capabilities(self) -> dict[str, dict[str, dict[str, object]]]:
        """As a ClientCapabilities object: `{"sampling": {}}`, or `{"elicitation": {"url": {}}}` for a mode."""
        return {self.capability: {self.mode: {}} if self.mode else {}}


class ClientRequestFailed(RefserverError):
    """The client answered a server-to-client request (sampling, elicitation) with an error."""

    jsonrpc_code = INTERNAL_ERROR
    http_status = 200


# --- HTTP level: refused before any JSON-RPC processing ---


class TransportError(RefserverError):
    jsonrpc_code = INVALID_REQUEST
    http_status = 400


class BadRequest(TransportError):
    http_status = 400


class NotAcceptable(TransportError):
    http_status = 406


class UnsupportedMediaType(TransportError):
    http_status = 415


class PayloadTooLarge(TransportError):
    http_status = 413


class RequestTimeout(TransportError):
    """The body did not arrive within REFSERVER_BODY_READ_TIMEOUT; the connection is closed after the answer."""

    http_status = 408


class MissingSessionId(TransportError):
    http_status = 400


class SessionNotFound(TransportError):
    """Unknown, expired, deleted or foreign session: all look the same from outside (404)."""

    jsonrpc_code = SERVER_ERROR
    http_status = 404


class BadProtocolVersionHeader(TransportError):
    """A 2025 session's request names a version in `MCP-Protocol-Version` that the server does not speak."""

    http_status = 400


class UnsupportedProtocolVersion(RefserverError):
    """A 2026 request's `_meta` names a version the server does not serve; `data` lists the ones it does."""

    jsonrpc_code = UNSUPPORTED_PROTOCOL_VERSION
    http_status = 400


class HeaderMismatch(RefserverError):
    """A 2026 request's routing headers (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`)
    disagree with its body, or are missing."""

    jsonrpc_code = HEADER_MISMATCH
    http_status = 400


class MissingRequiredClientCapability(RefserverError):
    """A 2026 request needs a client capability its `_meta` did not declare; `data.requiredCapabilities`
    names it as a ClientCapabilities object."""

    jsonrpc_code = MISSING_REQUIRED_CLIENT_CAPABILITY
    http_status = 400


class ForbiddenOrigin(TransportError):
    http_status = 403


class MisdirectedHost(TransportError):
    http_status = 421


class MethodNotAllowed(TransportError):
    http_status = 405


class Conflict(TransportError):
    """E.g. a second live GET stream on one session, which the transport spec forbids."""

    http_status = 409


class SessionGone(SessionNotFound):
    """The session no longer exists in the store (deleted elsewhere, expired, or Redis lost it): work that was
    still running for it has nowhere to write, and a client asking for it gets the same 404 as for any unknown
    session."""


# --- the event log ---


class StreamClosed(RefserverError):
    """An event was appended to a stream that is already closed (its requests are all answered)."""

    jsonrpc_code = INTERNAL_ERROR
    http_status = 500


class EventsGone(RefserverError):
    """A read or a `Last-Event-ID` resumption asked for events that the stream's bounded log has dropped.

    400, not 404: the session and the stream are alive (a 404 would tell the client to initialize again), only
    the replay it asked for is no longer possible. `first_kept` is the oldest seq still kept.
    """

    jsonrpc_code = INVALID_REQUEST
    http_status = 400

    def __init__(self, message: str, *, first_kept: int) -> None:
        super().__init__(message)
        self.first_kept = first_kept


class ServiceUnavailable(RefserverError):
    """A dependency (Redis, the authorization server) is down; the client may retry."""

    jsonrpc_code = SERVER_ERROR
    http_status = 503


class BackendUnavailable(ServiceUnavailable):
    pass


class BackendSlow(BackendUnavailable):
    """Redis did not answer within its bound: hung, or only overloaded (a connection error is not this)."""


class TooManySessions(ServiceUnavailable):
    pass


class TaskNotFound(InvalidParams):
    """No such task for this caller: unknown, expired, or another subject's (the same answer, so ids cannot be
    probed)."""


class TaskLimitReached(RefserverError):
    """A bound on tasks (per subject, or queued in total) is reached: nothing was created; retry later."""

    jsonrpc_code = SERVER_ERROR
    http_status = 429


class ConfigError(RefserverError):
    """Invalid settings; raised at start-up, never at request time."""


# --- OAuth: the authorization server's own errors (RFC 6749 sec. 5.2) and the resource server's ---


class OAuthError(RefserverError):
    """An RFC 6749 error: `error` is the registered code, the message its description."""

    http_status = 400

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status = status


class Unauthorized(RefserverError):
    """No, malformed, expired, revoked or foreign bearer token (RFC 6750 `invalid_token`): 401."""

    jsonrpc_code = SERVER_ERROR
    http_status = 401

    def __init__(self, message: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error


class InsufficientScope(RefserverError):
    jsonrpc_code = SERVER_ERROR
    http_status = 403

    def __init__(self, message: str, *, required: str) -> None:
        super().__init__(message)
        self.required = required


class AuthServerUnavailable(ServiceUnavailable):
    """The external authorization server cannot be reached: tokens cannot be checked right now."""


class RateLimited(RefserverError):
    jsonrpc_code = SERVER_ERROR
    http_status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

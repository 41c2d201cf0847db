"""MCP lifecycle, sans-IO: version negotiation, the per-session state machine, header rules.

State changes are synchronous and raise our errors; the caller does the I/O afterwards.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from refserver.errors import BadProtocolVersionHeader, InvalidRequest
from refserver.protocol.core import Initialized

SUPPORTED_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION: Final = SUPPORTED_VERSIONS[-1]
DEFAULT_HEADER_VERSION: Final = "2025-03-26"
"""What a Streamable HTTP request without `MCP-Protocol-Version` is assumed to speak (transport spec)."""
BATCH_VERSIONS: Final = frozenset({"2025-03-26"})
"""JSON-RPC batches were added in 2025-03-26 and removed again in 2025-06-18."""

LOG_LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
"""RFC 5424 severities, least severe first; `logging/setLevel` lets through this level and above."""


def negotiate_version(requested: object) -> str:
    """The spec's rule: echo a version we support, else offer our latest."""
    if isinstance(requested, str) and requested in SUPPORTED_VERSIONS:
        return requested
    return LATEST_VERSION


def check_protocol_version_header(header: str | None, negotiated: str | None) -> str:
    """Validate `MCP-Protocol-Version` on a request after initialization; return the version in force."""
    if header is None:
        return negotiated or DEFAULT_HEADER_VERSION
    if header not in SUPPORTED_VERSIONS:
        raise BadProtocolVersionHeader(
            f"Unsupported MCP-Protocol-Version {header!r}; supported: {', '.join(SUPPORTED_VERSIONS)}"
        )
    return header


def batch_allowed(version: str | None) -> bool:
    return version in BATCH_VERSIONS


def log_level_allows(threshold: str | None, level: str) -> bool:
    """True when a message at `level` passes a session whose threshold is `threshold`.

    No `logging/setLevel` yet means the client takes everything the server chooses to send.
    """
    if threshold is None:
        return True
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold)


def parse_initialize(params: dict[str, Any] | None) -> Initialized:
    """The client's offer in `initialize`, with the version we answer (its own JSON: capabilities may carry
    extensions the models drop)."""
    params = params or {}
    capabilities = params.get("capabilities")
    client_info = params.get("clientInfo")
    if not isinstance(capabilities, dict) or not isinstance(client_info, dict):
        raise InvalidRequest("initialize needs params.capabilities and params.clientInfo objects")
    return Initialized(negotiate_version(params.get("protocolVersion")), capabilities, client_info)


class Phase(enum.Enum):
    NEW = "new"
    INITIALIZING = "initializing"  # initialize answered, `notifications/initialized` not yet seen
    READY = "ready"
    CLOSED = "closed"


# Before `notifications/initialized` a client should send nothing but pings; in practice clients
# pipeline their first requests right behind it, so everything is accepted once initialize is answered.
_ALLOWED_WHILE_NEW: Final = frozenset({"initialize", "ping"})


@attrs.define
class Lifecycle:
    """The lifecycle of one MCP session, independent of transport and storage."""

    phase: Phase = Phase.NEW
    protocol_version: str | None = None
    client_info: dict[str, Any] | None = None
    client_capabilities: dict[str, Any] = attrs.field(factory=dict)

    def initialized_with(
        self, protocol_version: str, client_capabilities: dict[str, Any], client_info: dict[str, Any]
    ) -> None:
        """Initialize was answered with `protocol_version`: record the client's offer."""
        self.protocol_version = protocol_version
        self.client_capabilities = client_capabilities
        self.client_info = client_info
        self.phase = Phase.INITIALIZING

    def receive_initialized(self) -> None:
        if self.phase is Phase.INITIALIZING:
            self.phase = Phase.READY

    def check_request(self, method: str) -> None:
        if self.phase is Phase.CLOSED:
            raise InvalidRequest("session is closed")
        if method == "initialize" and self.phase is not Phase.NEW:
            raise InvalidRequest("session is already initialized")
        if self.phase is Phase.NEW and method not in _ALLOWED_WHILE_NEW:
            raise InvalidRequest(f"{method!r} before initialize")

    def close(self) -> None:
        self.phase = Phase.CLOSED

    def client_supports(self, capability: str, sub: str | None = None) -> bool:
        value = self.client_capabilities.get(capability)
        if value is None:
            return False
        if sub is None:
            return True
        return isinstance(value, dict) and sub in value

"""The request core's vocabulary, sans-IO: what goes into the core with a request, and what comes out.

Both protocol eras feed the same core. A request arrives with its `RequestMeta` (the per-request facts: the
protocol version in force, what the client can do, who it is) and, on a retry of a multi round-trip request,
the client's `input_responses`. The core answers with an `Outcome`:

- `Complete(result, changes)`: the wire-shaped result, and the session state changes it implies (initialize,
  `logging/setLevel`, subscriptions) as explicit values for the caller to apply and persist;
- `InputRequired(input_requests, state)`: the handler needs the client (sampling, elicitation) and must be
  called again with the answers; the 2025 adapter asks over server-to-client requests and re-enters, the 2026
  adapter sends an `InputRequiredResult`;
- `Failed(error)`: a JSON-RPC error.

Nothing here does I/O or imports an async library: the adapters do the I/O after the core has decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol, TypeAlias

import attrs

from refserver.errors import RefserverError

SAMPLING: Final = "sampling/createMessage"
ELICITATION: Final = "elicitation/create"
ROOTS: Final = "roots/list"
CAPABILITY_FOR_INPUT: Final[Mapping[str, str]] = {SAMPLING: "sampling", ELICITATION: "elicitation", ROOTS: "roots"}
"""The client capability each kind of input request needs (the spec forbids asking a client that lacks it)."""

ELICITATION_MODE_SINCE: Final = "2025-11-25"
"""`params.mode` arrived with URL elicitation; older clients reject the unknown field."""


@attrs.frozen
class TraceContext:
    """W3C trace context carried by a request (HTTP headers or `_meta`, SEP-414); kept opaque."""

    traceparent: str | None = None
    tracestate: str | None = None
    baggage: str | None = None


@attrs.frozen
class RequestMeta:
    """Everything the core may know about a request besides its method and params.

    The 2025 session builds it from its `initialize` and its `logging/setLevel`; a 2026 request carries it in
    `_meta`. `log_level` None means the client takes every log message the server chooses to send.
    """

    protocol_version: str
    client_capabilities: Mapping[str, Any] = attrs.field(factory=dict)
    client_info: Mapping[str, Any] | None = None
    log_level: str | None = None
    subject: str | None = None
    trace: TraceContext | None = None

    def client_supports(self, capability: str) -> bool:
        return self.client_capabilities.get(capability) is not None

    def client_supports_elicitation_mode(self, mode: str) -> bool:
        """An `elicitation` capability without modes means form mode only (the spec's compatibility rule)."""
        declared = self.client_capabilities.get("elicitation")
        if not isinstance(declared, Mapping):
            return False
        if not declared:
            return mode == "form"
        return isinstance(declared.get(mode), Mapping)


@attrs.frozen
class CallerToken:
    """The bearer token a request came with, kept only so a feature can exchange it for a downstream token.

    It is never logged (no repr), stored, forwarded over the bus, or sent anywhere but the authorization server.
    """

    value: str = attrs.field(repr=False)


class TokenExchanger(Protocol):
    """Trades the caller's token for one for another audience (RFC 8693); implemented in `oauth/`."""

    async def exchange(self, caller: CallerToken, audience: str, scopes: frozenset[str] | None) -> str:
        """An access token for `audience` with `scopes` (None: the caller's) or at most the caller's."""
        ...


@attrs.frozen
class InputRequest:
    """One thing the server asks of the client within a request (an `InputRequests` map's value)."""

    method: str
    params: Mapping[str, Any]

    def wire_params(self, protocol_version: str) -> dict[str, Any]:
        """The params as a client of `protocol_version` expects them."""
        params = dict(self.params)
        if self.method == ELICITATION and protocol_version < ELICITATION_MODE_SINCE:
            params.pop("mode", None)
        return params


@attrs.frozen
class InputFailure:
    """Stands in an input response where the client answered with an error or not in time (2025 era only)."""

    message: str


InputResponse: TypeAlias = Mapping[str, Any] | InputFailure
InputResponses: TypeAlias = Mapping[str, InputResponse]


@attrs.frozen
class CoreRequest:
    """A parsed client request as the core sees it: no session, no transport."""

    id: int | str
    method: str
    params: dict[str, Any] | None
    meta: RequestMeta
    input_responses: InputResponses = attrs.field(factory=dict)
    request_state: Mapping[str, Any] | None = None
    """What the handler kept in its previous `InputRequired` (already verified by the adapter)."""
    caller_token: CallerToken | None = None
    """The HTTP request's bearer token; None with authentication off and for a task run in the background."""


@attrs.frozen
class CacheHint:
    """How long a client (`private`) or any cache (`public`) may reuse a result (2026: `ttlMs`, `cacheScope`)."""

    ttl_ms: int
    scope: str = "public"

    def combined(self, other: CacheHint) -> CacheHint:
        """Both hints at once: the shorter lifetime, and private if either result is private."""
        scope = "private" if "private" in (self.scope, other.scope) else "public"
        return CacheHint(min(self.ttl_ms, other.ttl_ms), scope)


# --- session state changes --------------------------------------------------------------------------------


@attrs.frozen
class Initialized:
    protocol_version: str
    client_capabilities: Mapping[str, Any]
    client_info: Mapping[str, Any]


@attrs.frozen
class LogLevelSet:
    level: str


@attrs.frozen
class Subscribed:
    uri: str


@attrs.frozen
class Unsubscribed:
    uri: str


StateChange: TypeAlias = Initialized | LogLevelSet | Subscribed | Unsubscribed


# --- outcomes -----------------------------------------------------------------------------------------------


@attrs.frozen
class Complete:
    result: dict[str, Any]
    changes: tuple[StateChange, ...] = ()


@attrs.frozen
class InputRequired:
    """The handler needs answers from the client; call it again with them (and with `state`)."""

    input_requests: Mapping[str, InputRequest]
    state: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Failed:
    error: RefserverError


Outcome: TypeAlias = Complete | InputRequired | Failed

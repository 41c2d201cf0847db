"""What a feature sees of the server: a small context object, never the transport or the backend."""

from __future__ import annotations

from typing import Any, Protocol

import mcp_types as types

from refserver.protocol.jsonrpc import RequestId


class FeatureContext(Protocol):
    """Given to every tool, resource reader, prompt and completion call.

    Everything sent through it travels on the stream of the request being served, so that a client
    sees a request's progress, logs, sampling and elicitation on that request's own response stream.
    """

    @property
    def request_id(self) -> RequestId: ...

    @property
    def session_id(self) -> str: ...

    @property
    def progress_token(self) -> str | int | None:
        """The request's `_meta.progressToken`, with its JSON type, or None."""
        ...

    @property
    def client_capabilities(self) -> dict[str, Any]: ...

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send `notifications/progress` if the request carried a progress token; otherwise nothing."""
        ...

    async def log(self, level: types.LoggingLevel, data: Any, logger: str | None = None) -> None:
        """Send `notifications/message` if the session's log level lets `level` through."""
        ...

    async def sample(self, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        """Ask the client's LLM (`sampling/createMessage`); raises ClientCapabilityMissing without it."""
        ...

    async def elicit(self, params: types.ElicitRequestFormParams) -> types.ElicitResult:
        """Ask the user through the client (`elicitation/create`, form mode)."""
        ...

    async def close_sse_stream(self) -> None:
        """End the client's current connection to this request's stream; it resumes with Last-Event-ID."""
        ...

    async def notify_resource_updated(self, uri: str) -> None:
        """Tell the session (if subscribed to `uri`) that the resource changed."""
        ...

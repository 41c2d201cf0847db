"""What a feature sees of the server: a small context object, never the transport, the session or the backend.

Features are written once, in the multi-round-trip shape: a handler that needs the client (sampling,
elicitation) returns `InputRequired` (see `features/inputs.py`) and is called again with the client's
answers in `input_responses`. Which era it serves, and whether the answers came back over server-to-client
requests (2025) or in a retry (2026), it never knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import mcp_types as types

from refserver.protocol.core import InputResponses, RequestMeta


class FeatureContext(Protocol):
    """Given to every tool, resource reader, prompt and completion call.

    Everything sent through it travels on the stream of the request being served, so that a client
    sees a request's progress and logs on that request's own response stream.
    """

    @property
    def request_id(self) -> int | str: ...

    @property
    def meta(self) -> RequestMeta:
        """The request's protocol version, client capabilities and info, log level, subject."""
        ...

    @property
    def progress_token(self) -> str | int | None:
        """The request's `_meta.progressToken`, with its JSON type, or None."""
        ...

    @property
    def input_responses(self) -> InputResponses:
        """The client's answers to what this handler asked in an earlier round (empty on the first)."""
        ...

    @property
    def request_state(self) -> Mapping[str, Any] | None:
        """What this handler kept in its previous `InputRequired`, or None on the first round."""
        ...

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send `notifications/progress` if the request carried a progress token; otherwise nothing."""
        ...

    async def log(self, level: types.LoggingLevel, data: Any, logger: str | None = None) -> None:
        """Send `notifications/message` if the request's log level lets `level` through."""
        ...

    async def close_sse_stream(self) -> None:
        """End the client's current connection to this request's stream; it resumes with Last-Event-ID."""
        ...

    async def notify_resource_updated(self, uri: str) -> None:
        """Tell the client (if subscribed to `uri`) that the resource changed."""
        ...

    async def notify_list_changed(self, kind: str) -> None:
        """Announce that the list of `kind` (`tools`, `prompts` or `resources`) changed."""
        ...

    async def exchange_token(self, audience: str, scopes: frozenset[str] | None = None) -> str:
        """A short-lived access token for `audience` (a downstream API), from the caller's (RFC 8693).

        `scopes` may only narrow the caller's (None keeps them). The caller's own token is never handed
        out: pass this one downstream. Raises `TokenExchangeUnavailable` without authentication, for a task
        running in the background, or when the server has no exchange configured; `TokenExchangeRefused`
        when the authorization server says no.
        """
        ...

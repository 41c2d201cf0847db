"""The `FeatureContext` of one request, built by the request core from the request and an `Emitter`.

The emitter is the era adapter's side of the seam: where a request's notifications go (the 2025 session
appends them to the request's stream). The context decides what to send (progress only with a token, logs
only at the request's level); the emitter only delivers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import mcp_types as types

from refserver.errors import TokenExchangeUnavailable
from refserver.protocol.core import CoreRequest, InputResponses, RequestMeta, TokenExchanger
from refserver.protocol.jsonrpc import Notification


class Emitter(Protocol):
    """Delivers what a request sends while it runs; implemented by each era adapter."""

    async def send(self, notification: Notification) -> None:
        """On the request's own stream."""
        ...

    async def end_connection(self) -> None:
        """End the client's current connection to the request's stream (it resumes with Last-Event-ID)."""
        ...

    async def resource_updated(self, uri: str) -> None:
        """Tell the client that `uri` changed, if it subscribed to it."""
        ...

    async def list_changed(self, kind: str) -> None:
        """Tell whoever listens that the list of `kind` (`tools`, `prompts`, `resources`) changed."""
        ...

    def allows_log(self, level: str) -> bool:
        """Whether a log message at `level` goes to the client (a 2025 session's threshold may change while a
        call runs; a 2026 request gets log messages only if it asked, at the level it asked)."""
        ...


def _raw_progress_token(params: Mapping[str, Any] | None) -> object:
    meta = (params or {}).get("_meta")
    return meta.get("progressToken") if isinstance(meta, dict) else None


class CallContext:
    def __init__(self, request: CoreRequest, emitter: Emitter, exchanger: TokenExchanger | None = None) -> None:
        self._request = request
        self._emitter = emitter
        self._exchanger = exchanger
        # Echoed as the client sent it; only the typed view below is strict about its type.
        self._progress_token = _raw_progress_token(request.params)

    @property
    def request_id(self) -> int | str:
        return self._request.id

    @property
    def meta(self) -> RequestMeta:
        return self._request.meta

    @property
    def progress_token(self) -> str | int | None:
        token = self._progress_token
        return token if isinstance(token, (str, int)) and not isinstance(token, bool) else None

    @property
    def input_responses(self) -> InputResponses:
        return self._request.input_responses

    @property
    def request_state(self) -> Mapping[str, Any] | None:
        return self._request.request_state

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self._progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._emitter.send(Notification("notifications/progress", params))

    async def log(self, level: types.LoggingLevel, data: Any, logger: str | None = None) -> None:
        if not self._emitter.allows_log(level):
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self._emitter.send(Notification("notifications/message", params))

    async def close_sse_stream(self) -> None:
        await self._emitter.end_connection()

    async def notify_resource_updated(self, uri: str) -> None:
        await self._emitter.resource_updated(uri)

    async def notify_list_changed(self, kind: str) -> None:
        await self._emitter.list_changed(kind)

    async def exchange_token(self, audience: str, scopes: frozenset[str] | None = None) -> str:
        if self._exchanger is None:
            raise TokenExchangeUnavailable("token exchange is not configured on this server")
        caller = self._request.caller_token
        if caller is None:
            raise TokenExchangeUnavailable("this request carries no token to exchange")
        return await self._exchanger.exchange(caller, audience, scopes)

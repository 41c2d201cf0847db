"""What a refused MCP request carries besides its JSON-RPC error: the OAuth challenge, or when to retry."""

from __future__ import annotations

from typing import Final

from refserver.config import Settings
from refserver.errors import (
    AuthServerUnavailable,
    BackendUnavailable,
    InsufficientScope,
    RefserverError,
    Unauthorized,
)
from refserver.oauth.resource import challenge_for
from refserver.observability.metrics import Metrics
from refserver.observed import record_auth_failure

AUTH_RETRY_AFTER_SECONDS: Final = 5
"""Roughly the verifier's probe interval: by then a recovered authorization server is noticed."""
BACKEND_RETRY_AFTER_SECONDS: Final = 2
"""Redis away: a restarted single Redis is back within the bus's reconnect delay, a Redis Cluster failover lasts 2.5 to
3.5 s (docs/scaling.md); a client retrying after 2 s finds most outages over, and retries once more for the rest."""


class RefusalPolicy:
    """What a refused MCP request carries besides its JSON-RPC error, and the record auth refusals leave.

    401 and 403 carry the `WWW-Authenticate` challenge (RFC 6750, RFC 9728); a 503 because the authorization
    server or Redis cannot be asked carries `Retry-After`. Every auth refusal is counted and logged.
    """

    def __init__(self, settings: Settings, metrics: Metrics | None) -> None:
        self._settings = settings
        self._metrics = metrics

    def headers_for(self, exc: RefserverError) -> dict[str, str]:
        if isinstance(exc, (Unauthorized, InsufficientScope)):
            record_auth_failure(self._metrics, exc)
            return {"WWW-Authenticate": challenge_for(self._settings, exc)}
        if isinstance(exc, AuthServerUnavailable):
            record_auth_failure(self._metrics, exc)
            return {"Retry-After": str(AUTH_RETRY_AFTER_SECONDS)}
        if isinstance(exc, BackendUnavailable):
            return {"Retry-After": str(BACKEND_RETRY_AFTER_SECONDS)}
        return {}

"""What the 2025-era protocol remembers about a session, sans-IO: changed only by explicit `StateChange`s.

The core reports every change as a value (`Complete.changes`); `apply` is the one place that changes the
state, and it says whether anything another instance must know changed, so the caller persists exactly then.
"""

from __future__ import annotations

from typing import Any

import attrs

from refserver.protocol.core import (
    Initialized,
    LogLevelSet,
    RequestMeta,
    StateChange,
    Subscribed,
    TraceContext,
)
from refserver.protocol.lifecycle import LATEST_VERSION, Lifecycle, Phase


@attrs.define(eq=False)
class SessionState:
    lifecycle: Lifecycle = attrs.field(factory=Lifecycle)
    log_level: str | None = None
    subscriptions: set[str] = attrs.field(factory=set)

    @property
    def ready(self) -> bool:
        """Initialize was answered and the session is not closed: it may receive notifications."""
        return self.lifecycle.phase in (Phase.INITIALIZING, Phase.READY)

    def apply(self, change: StateChange) -> bool:
        """Apply one change; True when it changed something worth persisting."""
        if isinstance(change, Initialized):
            self.lifecycle.initialized_with(
                change.protocol_version, dict(change.client_capabilities), dict(change.client_info)
            )
            return True
        if isinstance(change, LogLevelSet):
            changed = self.log_level != change.level
            self.log_level = change.level
            return changed
        if isinstance(change, Subscribed):
            changed = change.uri not in self.subscriptions
            self.subscriptions.add(change.uri)
            return changed
        changed = change.uri in self.subscriptions
        self.subscriptions.discard(change.uri)
        return changed

    def receive_initialized(self) -> bool:
        """`notifications/initialized`; True when the phase moved."""
        before = self.lifecycle.phase
        self.lifecycle.receive_initialized()
        return self.lifecycle.phase is not before

    def meta(self, subject: str | None, trace: TraceContext | None = None) -> RequestMeta:
        """The per-request metadata of a request in this session (before initialize: our latest version)."""
        lifecycle = self.lifecycle
        return RequestMeta(
            protocol_version=lifecycle.protocol_version or LATEST_VERSION,
            client_capabilities=lifecycle.client_capabilities,
            client_info=lifecycle.client_info,
            log_level=self.log_level,
            subject=subject,
            trace=trace,
        )

    def summary(self) -> dict[str, Any]:
        return {"phase": self.lifecycle.phase.value, "subscriptions": len(self.subscriptions)}

"""What the HTTP adapters need, built once by `refserver.app.create_app`."""

from __future__ import annotations

import attrs

from refserver.config import Settings
from refserver.dispatch import RequestCore
from refserver.oauth.resource import ResourceGuard
from refserver.registry import SessionRegistry
from refserver.transport.stateless import StatelessExchange
from refserver.web.origins import OriginPolicy


@attrs.frozen
class Services:
    settings: Settings
    registry: SessionRegistry
    core: RequestCore
    origin_policy: OriginPolicy
    guard: ResourceGuard | None
    """None when REFSERVER_AUTH_MODE=none."""
    stateless: StatelessExchange
    """The 2026-era adapter."""

"""Revocations reach every verifier cache: in this process at once, in other instances over the bus."""

from __future__ import annotations

from refserver.backend.messages import BusResynced, GlobalMessage, TokenRevoked
from refserver.backend.sessions import Bus
from refserver.oauth.server import AuthorizationServer
from refserver.oauth.tokencache import VerifiedTokenCache


def connect_revocations(server: AuthorizationServer | None, cache: VerifiedTokenCache | None, bus: Bus) -> None:
    async def revoked_here(jti: str | None, grant_id: str | None) -> None:
        if cache is not None:
            cache.revoke(jti=jti, grant_id=grant_id)
        if bus.distributed:
            await bus.publish_global(TokenRevoked(jti, grant_id))

    async def from_the_bus(message: GlobalMessage) -> None:
        if cache is None:
            return
        match message:
            case TokenRevoked(jti, grant_id):
                cache.revoke(jti=jti, grant_id=grant_id)
            case BusResynced():
                cache.clear()  # a revocation may have been published while the bus was away

    if server is not None:
        server.revocation_listeners.append(revoked_here)
    bus.set_global_handler(from_the_bus)

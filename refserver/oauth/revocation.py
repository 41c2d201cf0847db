"""Revocation (RFC 7009) and how it spreads: every verifier cache forgets a revoked token, in this process
at once and in other instances over the bus."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from refserver.backend.messages import BusResynced, GlobalMessage, TokenRevoked
from refserver.backend.sessions import Bus
from refserver.errors import OAuthError
from refserver.oauth.access_tokens import AccessTokens
from refserver.oauth.clients import ClientCredentials, Clients
from refserver.oauth.crypto import token_hash
from refserver.oauth.store import OAuthStore
from refserver.oauth.tokencache import TokenCache

RevocationListener = Callable[[str | None, str | None], Awaitable[None]]
"""Told (jti, grant id) after each revocation."""


class Revoker:
    def __init__(
        self, *, store: OAuthStore, clients: Clients, access_tokens: AccessTokens, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._clients = clients
        self._access_tokens = access_tokens
        self._clock = clock
        self.listeners: list[RevocationListener] = []
        """Verifier caches and the bus to other instances (see `connect_revocations`)."""

    async def revoke(self, form: Mapping[str, str], credentials: ClientCredentials) -> None:
        """RFC 7009: the client must own the token. Unknown tokens are not an error (sec. 2.2)."""
        client = await self._clients.authenticate(credentials)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        refresh = await self._store.refresh(token_hash(token))
        if refresh is not None:
            if refresh.client_id != client.client_id:
                raise OAuthError("unauthorized_client", "the token was issued to another client")
            await self._store.delete_refresh(refresh.token_hash)
            await self.revoke_grant(refresh.grant_id)  # sec. 2.1: its access tokens go too
            return
        info = await self._access_tokens.decode(token)
        if info is None:
            return
        if info.client_id != client.client_id:
            raise OAuthError("unauthorized_client", "the token was issued to another client")
        await self._store.revoke_access_token(info.token_id, info.expires_at - int(self._clock()))
        await self._announce(jti=info.token_id, grant_id=None)

    async def revoke_grant(self, grant_id: str) -> None:
        """Every token of the grant dies, here and (through the listeners) in every verifier's cache."""
        await self._store.revoke_grant(grant_id)
        await self._announce(jti=None, grant_id=grant_id)

    async def _announce(self, *, jti: str | None, grant_id: str | None) -> None:
        for listener in self.listeners:
            await listener(jti, grant_id)


def connect_revocations(revoker: Revoker | None, cache: TokenCache | None, bus: Bus) -> None:
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

    if revoker is not None:
        revoker.listeners.append(revoked_here)
    bus.add_global_handler(from_the_bus)

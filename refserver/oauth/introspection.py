"""Token introspection (RFC 7662): resource servers may ask about any token, a client only about its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refserver.errors import OAuthError
from refserver.oauth.access_tokens import AccessTokens
from refserver.oauth.clients import ClientCredentials, Clients
from refserver.oauth.crypto import token_hash
from refserver.oauth.store import OAuthStore

INACTIVE: dict[str, Any] = {"active": False}


class Introspection:
    def __init__(self, *, issuer: str, store: OAuthStore, clients: Clients, access_tokens: AccessTokens) -> None:
        self._issuer = issuer
        self._store = store
        self._clients = clients
        self._access_tokens = access_tokens

    async def introspect(self, form: Mapping[str, str], credentials: ClientCredentials) -> dict[str, Any]:
        caller: str | None = None  # None: the resource server
        if not self._clients.is_resource_server(credentials):
            client = await self._clients.authenticate(credentials)
            if client.is_public:
                raise OAuthError("invalid_client", "introspection requires client authentication", status=401)
            caller = client.client_id
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        info = await self._access_tokens.decode(token)
        if info is not None and caller in (None, info.client_id):
            return {
                "active": True,
                "token_type": "Bearer",
                "scope": " ".join(sorted(info.scopes)),
                "client_id": info.client_id,
                "sub": info.subject,
                "aud": list(info.audience) if len(info.audience) > 1 else info.audience[0],
                "iss": self._issuer,
                "exp": info.expires_at,
                "jti": info.token_id,
            }
        refresh = await self._store.refresh(token_hash(token))
        if refresh is not None and caller in (None, refresh.client_id) and await self._store.grant(refresh.grant_id):
            return {
                "active": True,
                "token_type": "refresh_token",
                "scope": " ".join(sorted(refresh.scopes)),
                "client_id": refresh.client_id,
                "exp": refresh.expires_at,
                "iss": self._issuer,
            }
        return dict(INACTIVE)

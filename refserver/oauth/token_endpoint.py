"""The token endpoint: the authorization code grant (with PKCE) and refresh token rotation.

Every secret is single-use: a replayed code or a reused refresh token is treated as theft and revokes the
whole grant it belongs to, so the thief's tokens and the victim's die together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from refserver.errors import OAuthError
from refserver.oauth.access_tokens import AccessTokens
from refserver.oauth.clients import ClientCredentials, Clients
from refserver.oauth.crypto import new_token, pkce_matches, token_hash
from refserver.oauth.models import GRANT_TYPES, AuthorizationCode, Client, Grant, RefreshToken
from refserver.oauth.revocation import Revoker
from refserver.oauth.store import OAuthStore
from refserver.oauth.token_exchange import TOKEN_EXCHANGE_GRANT, TokenExchange

logger = logging.getLogger(__name__)


class TokenEndpoint:
    def __init__(
        self,
        *,
        store: OAuthStore,
        clients: Clients,
        access_tokens: AccessTokens,
        revoker: Revoker,
        exchange: TokenExchange,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._clients = clients
        self._access_tokens = access_tokens
        self._revoker = revoker
        self._exchange = exchange
        self._clock = clock

    async def token(self, form: Mapping[str, str], credentials: ClientCredentials) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == TOKEN_EXCHANGE_GRANT:
            return await self._exchange_token(form, credentials)
        client = await self._clients.authenticate(credentials)
        if grant_type not in client.grant_types:
            if grant_type in GRANT_TYPES:
                raise OAuthError("unauthorized_client", f"client may not use grant_type {grant_type}")
            raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
        if grant_type == "authorization_code":
            return await self._exchange_code(client, form)
        return await self._refresh(client, form)

    async def _exchange_token(self, form: Mapping[str, str], credentials: ClientCredentials) -> dict[str, Any]:
        """RFC 8693, for resource servers only: a client holding a token has no business minting others."""
        if not self._clients.is_resource_server(credentials):
            await self._clients.authenticate(credentials)  # 401 for bad credentials, before saying what is allowed
            if not self._exchange.enabled:
                raise OAuthError("unsupported_grant_type", "token exchange is not enabled on this server")
            raise OAuthError("unauthorized_client", "only a resource server's credentials may exchange tokens")
        assert credentials.client_id is not None  # is_resource_server checked it
        return await self._exchange.exchange_form(form, actor=credentials.client_id)

    async def _exchange_code(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        raw_code = form.get("code")
        verifier = form.get("code_verifier")
        if not raw_code or not verifier:
            raise OAuthError("invalid_request", "code and code_verifier are required")
        code_hash = token_hash(raw_code)
        code = await self._store.take_code(code_hash)
        if code is None:
            replayed_grant = await self._store.grant_of_used_code(code_hash)
            if replayed_grant:
                await self._revoker.revoke_grant(replayed_grant)
                logger.warning("authorization code replayed: grant %s revoked", replayed_grant[:8])
                raise OAuthError("invalid_grant", "authorization code already used; its tokens are revoked")
            raise OAuthError("invalid_grant", "authorization code is invalid or expired")
        mismatch = self._mismatch(code, client, verifier, form)
        if mismatch is not None:
            await self._revoker.revoke_grant(code.grant_id)  # the code is spent either way; its grant goes too
            raise mismatch
        grant = await self._store.grant(code.grant_id)
        if grant is None:
            raise OAuthError("invalid_grant", "the grant was revoked")
        return await self._issue(grant, code.scopes, with_refresh="refresh_token" in client.grant_types)

    def _mismatch(
        self, code: AuthorizationCode, client: Client, verifier: str, form: Mapping[str, str]
    ) -> OAuthError | None:
        """Why this code may not be exchanged by this request, if it may not."""
        if code.expires_at < int(self._clock()):
            return OAuthError("invalid_grant", "authorization code expired")
        if code.client_id != client.client_id:
            return OAuthError("invalid_grant", "authorization code was issued to another client")
        if form.get("redirect_uri", code.redirect_uri) != code.redirect_uri:
            return OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if not pkce_matches(verifier, code.code_challenge):
            return OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        resource = form.get("resource")
        if resource is not None and resource != code.resource:
            return OAuthError("invalid_target", "resource does not match the authorization request")
        return None

    async def _refresh(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        raw = form.get("refresh_token")
        if not raw:
            raise OAuthError("invalid_request", "refresh_token is required")
        digest = token_hash(raw)
        current = await self._store.refresh(digest)
        if current is not None and current.client_id != client.client_id:
            raise OAuthError("invalid_grant", "refresh token was issued to another client")
        requested = frozenset(form.get("scope", "").split())
        if current is not None and requested and not requested <= current.scopes:
            raise OAuthError("invalid_scope", "scope can only narrow on refresh")
        token = await self._store.take_refresh(digest)
        if token is None:
            reused_grant = await self._store.grant_of_used_refresh(digest)
            if reused_grant:
                await self._revoker.revoke_grant(reused_grant)
                logger.warning("refresh token reused: grant %s revoked", reused_grant[:8])
                raise OAuthError("invalid_grant", "refresh token already used; the grant is revoked")
            raise OAuthError("invalid_grant", "refresh token is invalid or expired")
        grant = await self._store.grant(token.grant_id)
        if grant is None:
            raise OAuthError("invalid_grant", "the grant was revoked")
        resource = form.get("resource")
        if resource is not None and resource != grant.resource:
            raise OAuthError("invalid_target", "resource does not match the grant")
        await self._store.save_grant(grant)  # a grant in use lives as long as its newest refresh token
        # The new refresh token keeps the grant's scope (RFC 6749 sec. 6); the access token may narrow it.
        return await self._issue(grant, requested or token.scopes, refresh_scopes=token.scopes)

    async def _issue(
        self,
        grant: Grant,
        scopes: frozenset[str],
        *,
        refresh_scopes: frozenset[str] | None = None,
        with_refresh: bool = True,
    ) -> dict[str, Any]:
        response: dict[str, Any] = {
            "access_token": self._access_tokens.sign(grant, scopes),
            "token_type": "Bearer",
            "expires_in": int(self._access_tokens.ttl),
            "scope": " ".join(sorted(scopes)),
        }
        if with_refresh:
            refresh = new_token()
            await self._store.save_refresh(
                RefreshToken(
                    token_hash=token_hash(refresh),
                    grant_id=grant.grant_id,
                    client_id=grant.client_id,
                    scopes=refresh_scopes or scopes,
                    expires_at=int(self._clock()) + int(self._store.refresh_ttl),
                )
            )
            response["refresh_token"] = refresh
        return response

"""The embedded authorization server (OAuth 2.1 with PKCE, RFC 7591, 7662, 7009, 8414, 8693, 8707,
9068, 9207; Client ID Metadata Documents).

One object per process, built from the endpoint pieces it wires together: `Clients` (registration, client
authentication), `AuthorizationEndpoint`, `TokenEndpoint`, `TokenExchange`, `Introspection`, `Revoker` and
`AccessTokens`.
Callers use the pieces directly (`server.tokens.token(...)`). No HTTP here: routes parse requests into
plain mappings and turn the outcomes (or `OAuthError`s and `AuthorizePageError`s) into responses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from refserver.oauth.access_tokens import AccessTokens
from refserver.oauth.authorization import AuthorizationEndpoint
from refserver.oauth.client_documents import ClientDocuments
from refserver.oauth.clients import Clients
from refserver.oauth.introspection import Introspection
from refserver.oauth.keys import SigningKeys
from refserver.oauth.models import AUTH_METHODS, GRANT_TYPES
from refserver.oauth.revocation import Revoker
from refserver.oauth.store import OAuthStore
from refserver.oauth.token_endpoint import TokenEndpoint
from refserver.oauth.token_exchange import TOKEN_EXCHANGE_GRANT, TokenExchange


class AuthorizationServer:
    def __init__(
        self,
        *,
        issuer: str,
        resources: Sequence[str],
        scopes_supported: Sequence[str],
        default_scopes: Sequence[str],
        store: OAuthStore,
        keys: SigningKeys,
        access_ttl: float,
        introspection_credentials: tuple[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        client_documents: ClientDocuments | None = None,
        exchange_audiences: Sequence[str] = (),
        exchange_ttl: float = 300.0,
    ) -> None:
        if store.access_ttl < access_ttl:
            # The grant-revoked marker must outlive every access token it is meant to kill.
            raise ValueError("the store's access TTL must be at least the access token lifetime")
        self.issuer = issuer
        self.resources = tuple(resources)
        self.scopes_supported = tuple(scopes_supported)
        self.store = store
        self.keys = keys
        self.clock = clock
        self.access_tokens = AccessTokens(issuer=issuer, keys=keys, store=store, ttl=access_ttl, clock=clock)
        self.clients = Clients(
            store=store,
            scopes_supported=scopes_supported,
            introspection_credentials=introspection_credentials,
            clock=clock,
            documents=client_documents,
        )
        self.authorization = AuthorizationEndpoint(
            issuer=issuer,
            resources=resources,
            scopes_supported=scopes_supported,
            default_scopes=frozenset(default_scopes),
            store=store,
            clock=clock,
            find_client=self.clients.find,
        )
        self.revoker = Revoker(store=store, clients=self.clients, access_tokens=self.access_tokens, clock=clock)
        self.exchange = TokenExchange(
            access_tokens=self.access_tokens,
            resources=resources,
            audiences=exchange_audiences,
            ttl=min(exchange_ttl, access_ttl),
            clock=clock,
        )
        self.tokens = TokenEndpoint(
            store=store,
            clients=self.clients,
            access_tokens=self.access_tokens,
            revoker=self.revoker,
            exchange=self.exchange,
            clock=clock,
        )
        self.introspection = Introspection(
            issuer=issuer, store=store, clients=self.clients, access_tokens=self.access_tokens
        )

    def metadata(self) -> dict[str, Any]:
        """RFC 8414."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "registration_endpoint": f"{base}/register",
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "scopes_supported": list(self.scopes_supported),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": list(GRANT_TYPES) + ([TOKEN_EXCHANGE_GRANT] if self.exchange.enabled else []),
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": self.clients.documents is not None,
        }

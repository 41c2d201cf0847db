"""Building the OAuth pieces from settings: the authorization server (shared by the MCP app and the standalone
AS app), its store, and the resource server's token verifier."""

from __future__ import annotations

import logging

import httpx

from refserver.backend.kv import KeyValueStore
from refserver.config import Settings
from refserver.errors import ConfigError
from refserver.oauth.client_documents import ClientDocuments
from refserver.oauth.embedded_verifier import EmbeddedVerifier
from refserver.oauth.exchange_client import CachingExchanger, EmbeddedExchange, RemoteExchange
from refserver.oauth.introspection_verifier import IntrospectionVerifier
from refserver.oauth.jwt_verifier import JwtVerifier
from refserver.oauth.keys import SigningKeys
from refserver.oauth.server import AuthorizationServer
from refserver.oauth.store import OAuthStore
from refserver.oauth.verifier import TokenVerifier
from refserver.protocol.core import TokenExchanger

logger = logging.getLogger(__name__)


def oauth_store(settings: Settings, kv: KeyValueStore) -> OAuthStore:
    return OAuthStore(
        kv,
        code_ttl=settings.code_ttl,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
    )


def authorization_server(settings: Settings, kv: KeyValueStore, *, issuer: str) -> AuthorizationServer:
    """Keys still have to be loaded (`await server.keys.load_or_create()`) before serving."""
    credentials = None
    if settings.introspection_client_id and settings.introspection_client_secret:
        credentials = (settings.introspection_client_id, settings.introspection_client_secret)
    default_scopes = [settings.required_scope] if settings.required_scope in settings.scopes_supported else []
    if settings.oauth_cimd_allow_loopback == "on":
        logger.warning(
            "REFSERVER_OAUTH_CIMD_ALLOW_LOOPBACK=on: client metadata documents are fetched from LOOPBACK addresses "
            "(http://127.0.0.1, http://localhost). For local development and tests only: never in production."
        )
    documents = ClientDocuments(
        kv=kv, scopes_supported=settings.scopes_supported, allow_loopback=settings.oauth_cimd_allow_loopback == "on"
    )
    return AuthorizationServer(
        issuer=issuer,
        resources=settings.resources,
        scopes_supported=settings.scopes_supported,
        default_scopes=default_scopes,
        store=oauth_store(settings, kv),
        keys=SigningKeys(kv),
        access_ttl=settings.access_token_ttl,
        introspection_credentials=credentials,
        client_documents=documents,
        exchange_audiences=settings.oauth_exchange_audiences,
        exchange_ttl=settings.oauth_exchange_token_ttl,
    )


def token_exchanger(
    settings: Settings, *, server: AuthorizationServer | None, http: httpx.AsyncClient
) -> TokenExchanger | None:
    """What `ctx.exchange_token` uses: our own authorization server when it exchanges tokens, an external one
    through the resource server's credentials, or nothing (the features are told exchange is unavailable)."""
    if settings.auth_mode == "embedded" and server is not None and server.exchange.enabled:
        return CachingExchanger(EmbeddedExchange(server.exchange, actor=settings.resource))
    client_id, secret = settings.introspection_client_id, settings.introspection_client_secret
    if settings.auth_mode in ("jwt", "introspection") and client_id and secret:
        return CachingExchanger(RemoteExchange(http, issuer=settings.issuer, client_id=client_id, client_secret=secret))
    return None


def create_verifier(
    settings: Settings,
    *,
    server: AuthorizationServer | None,
    store: OAuthStore | None,
    http: httpx.AsyncClient,
) -> TokenVerifier | None:
    """The verifier for `settings.auth_mode` (None for "none").

    `store` is used for revocation checks in jwt mode only when it can be shared with the authorization
    server, i.e. when it lives in Redis; an in-memory store never sees the other process's revocations.
    """
    mode = settings.auth_mode
    if mode == "none":
        return None
    if mode == "embedded":
        if server is None:
            raise ConfigError("auth mode embedded needs the embedded authorization server")
        return EmbeddedVerifier(server, resource=settings.resource)
    if mode == "jwt":
        shared = store if settings.redis_url else None
        return JwtVerifier(issuer=settings.issuer, resource=settings.resource, http=http, revocations=shared)
    if mode == "introspection":
        if not (settings.introspection_client_id and settings.introspection_client_secret):
            raise ConfigError(
                "auth mode introspection needs REFSERVER_INTROSPECTION_CLIENT_ID and "
                "REFSERVER_INTROSPECTION_CLIENT_SECRET"
            )
        return IntrospectionVerifier(
            issuer=settings.issuer,
            resource=settings.resource,
            http=http,
            introspection_url=None,
            client_id=settings.introspection_client_id,
            client_secret=settings.introspection_client_secret,
            cache_ttl=settings.introspection_cache_ttl,
        )
    raise ConfigError(f"unknown auth mode {mode!r}")

"""Building the authorization server from settings (shared by the MCP app and the standalone AS app)."""

from __future__ import annotations

from refserver.backend.kv import KeyValueStore
from refserver.config import Settings
from refserver.oauth.keys import SigningKeys
from refserver.oauth.server import AuthorizationServer
from refserver.oauth.store import OAuthStore


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
    return AuthorizationServer(
        issuer=issuer,
        resources=settings.resources,
        scopes_supported=settings.scopes_supported,
        default_scopes=default_scopes,
        store=oauth_store(settings, kv),
        keys=SigningKeys(kv),
        access_ttl=settings.access_token_ttl,
        introspection_credentials=credentials,
    )

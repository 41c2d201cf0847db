"""OAuth clients: dynamic registration (RFC 7591) and client authentication at our endpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from refserver.errors import OAuthError
from refserver.oauth.client_documents import ClientDocumentError, ClientDocuments, is_document_url
from refserver.oauth.crypto import new_token, same_secret, token_hash
from refserver.oauth.models import AUTH_METHODS, GRANT_TYPES, Client
from refserver.oauth.redirects import check_redirect_uris
from refserver.oauth.store import OAuthStore

logger = logging.getLogger(__name__)

MAX_REDIRECT_URIS: Final = 10
MAX_CLIENT_NAME: Final = 200


@attrs.frozen
class ClientCredentials:
    client_id: str | None
    client_secret: str | None
    via_basic: bool = False


class Clients:
    def __init__(
        self,
        *,
        store: OAuthStore,
        scopes_supported: Sequence[str],
        introspection_credentials: tuple[str, str] | None,
        clock: Callable[[], float],
        documents: ClientDocuments | None = None,
    ) -> None:
        self._store = store
        self.documents = documents
        """None: URL client ids are not supported (their ids are unknown, like any other)."""
        self._scopes_supported = tuple(scopes_supported)
        self._introspection_credentials = introspection_credentials
        self._clock = clock

    async def register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        redirect_uris = body.get("redirect_uris")
        if not isinstance(redirect_uris, list) or not redirect_uris or len(redirect_uris) > MAX_REDIRECT_URIS:
            raise OAuthError("invalid_redirect_uri", f"redirect_uris must be a list of 1-{MAX_REDIRECT_URIS} URIs")
        application_type = check_redirect_uris(redirect_uris, body.get("application_type"))
        method = body.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in AUTH_METHODS:
            raise OAuthError("invalid_client_metadata", f"unsupported token_endpoint_auth_method {method!r}")
        grant_types = body.get("grant_types", list(GRANT_TYPES))
        if (
            not isinstance(grant_types, list)
            or not grant_types
            or not all(isinstance(g, str) for g in grant_types)
            or not set(grant_types) <= set(GRANT_TYPES)
        ):
            raise OAuthError("invalid_client_metadata", f"grant_types must be a subset of {list(GRANT_TYPES)}")
        response_types = body.get("response_types", ["code"])
        if response_types != ["code"]:
            raise OAuthError("invalid_client_metadata", 'response_types must be ["code"]')
        scope = body.get("scope") or " ".join(self._scopes_supported)
        if not isinstance(scope, str) or not set(scope.split()) <= set(self._scopes_supported):
            raise OAuthError("invalid_client_metadata", f"scope must use only {' '.join(self._scopes_supported)}")
        name = body.get("client_name", "")
        if not isinstance(name, str) or len(name) > MAX_CLIENT_NAME:
            raise OAuthError("invalid_client_metadata", f"client_name must be a string of at most {MAX_CLIENT_NAME}")
        secret = None if method == "none" else new_token()
        client = Client(
            client_id=new_token(),
            client_name=name or "Unnamed client",
            redirect_uris=tuple(redirect_uris),
            token_endpoint_auth_method=method,
            grant_types=tuple(grant_types),
            scope=scope,
            secret_hash=token_hash(secret) if secret else None,
            issued_at=int(self._clock()),
            application_type=application_type,
        )
        await self._store.save_client(client)
        logger.info("registered client %s (%s)", client.client_id[:8], method)
        response: dict[str, Any] = {
            "client_id": client.client_id,
            "client_id_issued_at": client.issued_at,
            "client_name": client.client_name,
            "redirect_uris": list(client.redirect_uris),
            "token_endpoint_auth_method": method,
            "grant_types": list(client.grant_types),
            "response_types": ["code"],
            "scope": scope,
            "application_type": application_type,
        }
        if secret:
            response["client_secret"] = secret
            response["client_secret_expires_at"] = 0
        return response

    async def find(self, client_id: str) -> Client | None:
        """A registered client, or the one a URL client id's metadata document describes (raises
        ClientDocumentError when that document cannot be used)."""
        if self.documents is not None and is_document_url(client_id):
            return await self.documents.client(client_id)
        return await self._store.client(client_id)

    async def authenticate(self, credentials: ClientCredentials) -> Client:
        error = OAuthError("invalid_client", "client authentication failed", status=401)
        if not credentials.client_id:
            raise error
        try:
            client = await self.find(credentials.client_id)
        except ClientDocumentError as exc:
            raise OAuthError("invalid_client", str(exc), status=401) from None
        if client is None:
            raise error
        if client.is_public:
            if credentials.client_secret:
                raise error  # a public client has no secret; presenting one is a confused client
            return client
        if not credentials.client_secret or client.secret_hash is None:
            raise error
        if not same_secret(credentials.client_secret, client.secret_hash):
            raise error
        return client

    def is_resource_server(self, credentials: ClientCredentials) -> bool:
        """The configured introspection credentials: a resource server, not a registered client."""
        expected = self._introspection_credentials
        return bool(
            expected
            and credentials.client_id == expected[0]
            and credentials.client_secret is not None
            and same_secret(credentials.client_secret, token_hash(expected[1]))
        )

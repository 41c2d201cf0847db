"""The authorization server's logic (OAuth 2.1 with PKCE, RFC 7591, 7662, 7009, 8414, 8707, 9068, 9207).

No HTTP here: routes parse requests into plain mappings and turn the outcomes (or `OAuthError`s and
`AuthorizePageError`s) into responses. Every secret is single-use or rotated, and every reuse is treated
as theft: a replayed code or refresh token revokes the whole grant it belongs to.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import SplitResult, urlencode, urlsplit

import attrs
from joserfc import jws, jwt
from joserfc.errors import JoseError

from refserver.errors import OAuthError
from refserver.oauth.crypto import PKCE_CHALLENGE, new_token, pkce_matches, same_secret, token_hash
from refserver.oauth.keys import ALGORITHM, SigningKeys
from refserver.oauth.models import (
    AUTH_METHODS,
    AccessInfo,
    AuthorizationCode,
    Client,
    Grant,
    PendingAuthorization,
    RefreshToken,
)
from refserver.oauth.store import OAuthStore

logger = logging.getLogger(__name__)

LOOPBACK_REDIRECT_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
"""RFC 8252 sec. 7.3: native apps listen on a loopback port chosen at run time."""
MAX_REDIRECT_URIS: Final = 10
MAX_CLIENT_NAME: Final = 200
SUBJECT_PATTERN: Final = re.compile(r"[A-Za-z0-9._@+\-]{1,64}")
"""User ids the mock identity provider accepts (what ends up in `sub`)."""
GRANT_TYPES: Final = ("authorization_code", "refresh_token")
ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
"""RFC 9068 sec. 2.1: an ID token or other JWT signed by the same key is not an access token."""


RevocationListener = Callable[[str | None, str | None], Awaitable[None]]


class AuthorizePageError(Exception):
    """An /authorize failure that must NOT redirect (unknown client, bad redirect URI, bad state)."""


@attrs.frozen
class ClientCredentials:
    client_id: str | None
    client_secret: str | None
    via_basic: bool = False


def split_uri(uri: str) -> SplitResult | None:
    """`urlsplit` plus what it leaves unchecked: a host, and a port that is a number in range."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return None
    return parts if parts.hostname else None


def is_loopback_http(uri: str) -> bool:
    parts = split_uri(uri)
    return parts is not None and parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_REDIRECT_HOSTS


def redirect_uri_matches(registered: str, presented: str) -> bool:
    """Exact match, except that a loopback redirect may use any port (RFC 8252 sec. 7.3)."""
    if presented == registered:
        return split_uri(presented) is not None
    if not (is_loopback_http(registered) and is_loopback_http(presented)):
        return False
    a, b = urlsplit(registered), urlsplit(presented)
    return (a.hostname, a.path, a.query) == (b.hostname, b.path, b.query) and not b.fragment


def _valid_redirect_uri(uri: str) -> bool:
    parts = split_uri(uri)
    if parts is None or parts.fragment:
        return False
    return parts.scheme == "https" or is_loopback_http(uri)


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
    ) -> None:
        self.issuer = issuer
        self.resources = tuple(resources)
        self.scopes_supported = tuple(scopes_supported)
        self.default_scopes = frozenset(default_scopes)
        self.store = store
        self.keys = keys
        if store.access_ttl < access_ttl:
            # The grant-revoked marker must outlive every access token it is meant to kill.
            raise ValueError("the store's access TTL must be at least the access token lifetime")
        self.access_ttl = access_ttl
        self._introspection_credentials = introspection_credentials
        self._clock = clock
        self.clock = clock
        self.revocation_listeners: list[RevocationListener] = []
        """Told (jti, grant id) after each revocation: verifier caches, the bus to other instances."""

    def _now(self) -> int:
        return int(self._clock())

    # --- metadata (RFC 8414) ---------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
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
            "grant_types_supported": list(GRANT_TYPES),
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": False,
        }

    # --- dynamic registration (RFC 7591) -------------------------------------------------------------

    async def register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        redirect_uris = body.get("redirect_uris")
        if (
            not isinstance(redirect_uris, list)
            or not redirect_uris
            or len(redirect_uris) > MAX_REDIRECT_URIS
            or not all(isinstance(u, str) for u in redirect_uris)
        ):
            raise OAuthError("invalid_redirect_uri", f"redirect_uris must be a list of 1-{MAX_REDIRECT_URIS} URIs")
        bad = [u for u in redirect_uris if not _valid_redirect_uri(u)]
        if bad:
            raise OAuthError("invalid_redirect_uri", f"redirect URIs must be https or loopback http: {bad[0]}")
        method = body.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in AUTH_METHODS:
            raise OAuthError("invalid_client_metadata", f"unsupported token_endpoint_auth_method {method!r}")
        grant_types = body.get("grant_types", ["authorization_code", "refresh_token"])
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
        scope = body.get("scope") or " ".join(self.scopes_supported)
        if not isinstance(scope, str) or not set(scope.split()) <= set(self.scopes_supported):
            raise OAuthError("invalid_client_metadata", f"scope must use only {' '.join(self.scopes_supported)}")
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
            issued_at=self._now(),
        )
        await self.store.save_client(client)
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
        }
        if secret:
            response["client_secret"] = secret
            response["client_secret_expires_at"] = 0
        return response

    # --- authorization (RFC 6749 sec. 4.1, RFC 7636, RFC 8707, RFC 9207) -----------------------------

    async def begin_authorization(self, params: Mapping[str, str]) -> PendingAuthorization:
        """Validate an /authorize request. Raises AuthorizePageError (no redirect) or OAuthError
        carrying a redirect (see `error_redirect`)."""
        client = await self.store.client(params.get("client_id", ""))
        if client is None:
            raise AuthorizePageError("Unknown client: register it first (RFC 7591).")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None:
            if len(client.redirect_uris) != 1:
                raise AuthorizePageError("redirect_uri is required for this client.")
            redirect_uri = client.redirect_uris[0]
        if not any(redirect_uri_matches(r, redirect_uri) for r in client.redirect_uris):
            raise AuthorizePageError("redirect_uri does not match any URI registered for this client.")
        state = params.get("state")
        redirect = _RedirectTarget(redirect_uri, state, self.issuer)
        if params.get("response_type") != "code":
            raise redirect.error("unsupported_response_type", "response_type must be code")
        challenge = params.get("code_challenge")
        if not challenge:
            raise redirect.error("invalid_request", "PKCE is required: send code_challenge (S256)")
        if params.get("code_challenge_method") != "S256":
            raise redirect.error("invalid_request", "code_challenge_method must be S256")
        if not PKCE_CHALLENGE.fullmatch(challenge):
            raise redirect.error("invalid_request", "code_challenge is not a valid S256 challenge")
        requested = frozenset(params.get("scope", "").split()) or (self.default_scopes & set(client.scope.split()))
        if not requested <= set(client.scope.split()) or not requested <= set(self.scopes_supported):
            raise redirect.error("invalid_scope", "requested scope is not allowed for this client")
        resource = params.get("resource") or self.resources[0]
        if resource not in self.resources:
            raise redirect.error("invalid_target", "this authorization server does not issue tokens for that resource")
        pending = PendingAuthorization(
            request_id=new_token(),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            state=state,
            scopes=requested,
            resource=resource,
        )
        await self.store.save_pending(pending)
        return pending

    async def pending(self, request_id: str) -> tuple[PendingAuthorization, Client]:
        pending = await self.store.pending(request_id)
        client = await self.store.client(pending.client_id) if pending else None
        if pending is None or client is None:
            raise AuthorizePageError("This authorization request is unknown, expired or already used.")
        return pending, client

    async def record_consent(self, request_id: str, approved: bool) -> str | None:
        """Approve: the pending request may go to the identity provider (returns None).
        Deny: the request ends, and the returned URL sends the person back with access_denied."""
        if approved:
            pending, _ = await self.pending(request_id)
            await self.store.save_pending(attrs.evolve(pending, consented=True))
            return None
        taken = await self.store.take_pending(request_id)
        if taken is None:
            raise AuthorizePageError("This authorization request is unknown, expired or already used.")
        return (
            _RedirectTarget(taken.redirect_uri, taken.state, self.issuer)
            .error("access_denied", "the user denied the request")
            .redirect_url
        )

    async def complete_authorization(self, request_id: str, subject: str) -> str:
        """The identity provider vouched for `subject`: issue a code, return the client redirect URL."""
        if not SUBJECT_PATTERN.fullmatch(subject):
            raise AuthorizePageError("User id must be 1-64 letters, digits or . _ @ + -")
        pending = await self.store.take_pending(request_id)  # single use: a replayed callback finds nothing
        if pending is None or not pending.consented:
            raise AuthorizePageError("This authorization request is unknown, expired, unapproved or already used.")
        code = new_token()
        grant = Grant(
            grant_id=new_token(),
            client_id=pending.client_id,
            subject=subject,
            scopes=pending.scopes,
            resource=pending.resource,
            created_at=self._now(),
        )
        await self.store.save_code(
            AuthorizationCode(
                code_hash=token_hash(code),
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                code_challenge=pending.code_challenge,
                scopes=pending.scopes,
                resource=pending.resource,
                subject=subject,
                grant_id=grant.grant_id,
                expires_at=self._now() + int(self.store.code_ttl),
            )
        )
        await self.store.save_grant(grant)
        return _RedirectTarget(pending.redirect_uri, pending.state, self.issuer).success(code)

    # --- token endpoint ------------------------------------------------------------------------------

    async def authenticate_client(self, credentials: ClientCredentials) -> Client:
        error = OAuthError("invalid_client", "client authentication failed", status=401)
        if not credentials.client_id:
            raise error
        client = await self.store.client(credentials.client_id)
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

    async def token(self, form: Mapping[str, str], credentials: ClientCredentials) -> dict[str, Any]:
        client = await self.authenticate_client(credentials)
        grant_type = form.get("grant_type")
        if grant_type not in client.grant_types:
            if grant_type in GRANT_TYPES:
                raise OAuthError("unauthorized_client", f"client may not use grant_type {grant_type}")
            raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
        if grant_type == "authorization_code":
            return await self._exchange_code(client, form)
        return await self._refresh(client, form)

    async def _exchange_code(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        raw_code = form.get("code")
        verifier = form.get("code_verifier")
        if not raw_code or not verifier:
            raise OAuthError("invalid_request", "code and code_verifier are required")
        code_hash = token_hash(raw_code)
        code = await self.store.take_code(code_hash)
        if code is None:
            replayed_grant = await self.store.grant_of_used_code(code_hash)
            if replayed_grant:
                await self.revoke_grant(replayed_grant)
                logger.warning("authorization code replayed: grant %s revoked", replayed_grant[:8])
                raise OAuthError("invalid_grant", "authorization code already used; its tokens are revoked")
            raise OAuthError("invalid_grant", "authorization code is invalid or expired")
        if code.expires_at < self._now():
            await self.revoke_grant(code.grant_id)
            raise OAuthError("invalid_grant", "authorization code expired")
        if code.client_id != client.client_id:
            await self.revoke_grant(code.grant_id)
            raise OAuthError("invalid_grant", "authorization code was issued to another client")
        if form.get("redirect_uri", code.redirect_uri) != code.redirect_uri:
            await self.revoke_grant(code.grant_id)
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if not pkce_matches(verifier, code.code_challenge):
            await self.revoke_grant(code.grant_id)
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        resource = form.get("resource")
        if resource is not None and resource != code.resource:
            await self.revoke_grant(code.grant_id)
            raise OAuthError("invalid_target", "resource does not match the authorization request")
        grant = await self.store.grant(code.grant_id)
        if grant is None:
            raise OAuthError("invalid_grant", "the grant was revoked")
        return await self._issue(grant, code.scopes, with_refresh="refresh_token" in client.grant_types)

    async def _refresh(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        raw = form.get("refresh_token")
        if not raw:
            raise OAuthError("invalid_request", "refresh_token is required")
        digest = token_hash(raw)
        current = await self.store.refresh(digest)
        if current is not None and current.client_id != client.client_id:
            raise OAuthError("invalid_grant", "refresh token was issued to another client")
        requested = frozenset(form.get("scope", "").split())
        if current is not None and requested and not requested <= current.scopes:
            raise OAuthError("invalid_scope", "scope can only narrow on refresh")
        token = await self.store.take_refresh(digest)
        if token is None:
            reused_grant = await self.store.grant_of_used_refresh(digest)
            if reused_grant:
                await self.revoke_grant(reused_grant)
                logger.warning("refresh token reused: grant %s revoked", reused_grant[:8])
                raise OAuthError("invalid_grant", "refresh token already used; the grant is revoked")
            raise OAuthError("invalid_grant", "refresh token is invalid or expired")
        grant = await self.store.grant(token.grant_id)
        if grant is None:
            raise OAuthError("invalid_grant", "the grant was revoked")
        resource = form.get("resource")
        if resource is not None and resource != grant.resource:
            raise OAuthError("invalid_target", "resource does not match the grant")
        await self.store.save_grant(grant)  # a grant in use lives as long as its newest refresh token
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
            "access_token": self.sign_access_token(grant, scopes),
            "token_type": "Bearer",
            "expires_in": int(self.access_ttl),
            "scope": " ".join(sorted(scopes)),
        }
        if with_refresh:
            refresh = new_token()
            await self.store.save_refresh(
                RefreshToken(
                    token_hash=token_hash(refresh),
                    grant_id=grant.grant_id,
                    client_id=grant.client_id,
                    scopes=refresh_scopes or scopes,
                    expires_at=self._now() + int(self.store.refresh_ttl),
                )
            )
            response["refresh_token"] = refresh
        return response

    def sign_access_token(self, grant: Grant, scopes: frozenset[str]) -> str:
        now = self._now()
        claims = {
            "iss": self.issuer,
            "sub": grant.subject,
            "aud": grant.resource,
            "exp": now + int(self.access_ttl),
            "iat": now,
            "nbf": now,
            "jti": new_token(),
            "scope": " ".join(sorted(scopes)),
            "client_id": grant.client_id,
            "grant_id": grant.grant_id,
        }
        return self.keys.sign(claims)

    # --- our own tokens: verification, introspection, revocation -------------------------------------

    async def decode_access_token(self, token: str) -> AccessInfo | None:
        """Signature, issuer, time and revocation; None for anything not a live token of ours."""
        try:
            header = jws.extract_compact(token.encode()).protected if token.count(".") == 2 else None
        except (JoseError, ValueError):
            return None
        if header is None or header.get("alg") != ALGORITHM or header.get("typ") not in ACCESS_TOKEN_TYPES:
            return None
        await self.keys.reload_for_unknown_kid(str(header.get("kid", "")))
        try:
            claims = jwt.decode(token, self.keys.keyset, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError):
            return None
        now = self._now()
        if claims.get("iss") != self.issuer or not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            return None
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > now + 60:
            return None
        if await self.store.is_revoked(str(claims.get("jti")), claims.get("grant_id")):
            return None
        audience = claims.get("aud")
        return AccessInfo(
            subject=str(claims.get("sub")),
            client_id=str(claims.get("client_id")),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            expires_at=claims["exp"],
            token_id=str(claims.get("jti")),
            audience=tuple(audience) if isinstance(audience, list) else (str(audience),),
            grant_id=claims.get("grant_id"),
        )

    def _is_resource_server(self, credentials: ClientCredentials) -> bool:
        expected = self._introspection_credentials
        return bool(
            expected
            and credentials.client_id == expected[0]
            and credentials.client_secret is not None
            and same_secret(credentials.client_secret, token_hash(expected[1]))
        )

    async def introspect(self, form: Mapping[str, str], credentials: ClientCredentials) -> dict[str, Any]:
        """RFC 7662. Resource servers may introspect any token; a client only its own ones."""
        caller: str | None = None  # None: the resource server
        if not self._is_resource_server(credentials):
            client = await self.authenticate_client(credentials)
            if client.is_public:
                raise OAuthError("invalid_client", "introspection requires client authentication", status=401)
            caller = client.client_id
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        info = await self.decode_access_token(token)
        if info is not None and caller in (None, info.client_id):
            return {
                "active": True,
                "token_type": "Bearer",
                "scope": " ".join(sorted(info.scopes)),
                "client_id": info.client_id,
                "sub": info.subject,
                "aud": list(info.audience) if len(info.audience) > 1 else info.audience[0],
                "iss": self.issuer,
                "exp": info.expires_at,
                "jti": info.token_id,
            }
        refresh = await self.store.refresh(token_hash(token))
        if refresh is not None and caller in (None, refresh.client_id) and await self.store.grant(refresh.grant_id):
            return {
                "active": True,
                "token_type": "refresh_token",
                "scope": " ".join(sorted(refresh.scopes)),
                "client_id": refresh.client_id,
                "exp": refresh.expires_at,
                "iss": self.issuer,
            }
        return {"active": False}

    async def revoke(self, form: Mapping[str, str], credentials: ClientCredentials) -> None:
        """RFC 7009: the client must own the token. Unknown tokens are not an error (sec. 2.2)."""
        client = await self.authenticate_client(credentials)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        refresh = await self.store.refresh(token_hash(token))
        if refresh is not None:
            if refresh.client_id != client.client_id:
                raise OAuthError("unauthorized_client", "the token was issued to another client")
            await self.store.delete_refresh(refresh.token_hash)
            await self.revoke_grant(refresh.grant_id)  # sec. 2.1: its access tokens go too
            return
        info = await self.decode_access_token(token)
        if info is None:
            return
        if info.client_id != client.client_id:
            raise OAuthError("unauthorized_client", "the token was issued to another client")
        await self.store.revoke_access_token(info.token_id, info.expires_at - self._now())
        await self._announce(jti=info.token_id, grant_id=None)

    async def revoke_grant(self, grant_id: str) -> None:
        """Every token of the grant dies, here and (through the listeners) in every verifier's cache."""
        await self.store.revoke_grant(grant_id)
        await self._announce(jti=None, grant_id=grant_id)

    async def _announce(self, *, jti: str | None, grant_id: str | None) -> None:
        for listener in self.revocation_listeners:
            await listener(jti, grant_id)


@attrs.frozen
class _RedirectTarget:
    redirect_uri: str
    state: str | None
    issuer: str

    def _url(self, params: dict[str, str]) -> str:
        if self.state is not None:
            params["state"] = self.state
        params["iss"] = self.issuer  # RFC 9207: lets the client detect mix-up attacks
        separator = "&" if urlsplit(self.redirect_uri).query else "?"
        return f"{self.redirect_uri}{separator}{urlencode(params)}"

    def success(self, code: str) -> str:
        return self._url({"code": code})

    def error(self, error: str, description: str) -> RedirectingOAuthError:
        return RedirectingOAuthError(error, description, self._url({"error": error, "error_description": description}))


class RedirectingOAuthError(OAuthError):
    """An /authorize error reported to the client by redirecting the person back to it."""

    def __init__(self, error: str, description: str, redirect_url: str) -> None:
        super().__init__(error, description, status=302)
        self.redirect_url = redirect_url

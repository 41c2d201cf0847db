"""The authorization endpoint (RFC 6749 sec. 4.1, RFC 7636, RFC 8707, RFC 9207): request, consent, code.

A request is validated and parked as a `PendingAuthorization`; the person approves or denies it on the
consent page; the identity provider then vouches for a subject and the pending request becomes a
single-use code bound to the client, the redirect URI, the PKCE challenge, the scopes and the resource.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

import attrs

from refserver.oauth.client_documents import ClientDocumentError
from refserver.oauth.crypto import PKCE_CHALLENGE, new_token, token_hash
from refserver.oauth.models import AuthorizationCode, Client, Grant, PendingAuthorization
from refserver.oauth.redirects import AuthorizePageError, RedirectTarget, redirect_uri_matches
from refserver.oauth.store import OAuthStore

SUBJECT_PATTERN: Final = re.compile(r"[A-Za-z0-9._@+\-]{1,64}")
"""User ids the mock identity provider accepts (what ends up in `sub`)."""
REQUEST_GONE: Final = "This authorization request is unknown, expired or already used."


class AuthorizationEndpoint:
    def __init__(
        self,
        *,
        issuer: str,
        resources: Sequence[str],
        scopes_supported: Sequence[str],
        default_scopes: frozenset[str],
        store: OAuthStore,
        clock: Callable[[], float],
        find_client: Callable[[str], Awaitable[Client | None]] | None = None,
    ) -> None:
        self._find_client = find_client or store.client
        self._issuer = issuer
        self._resources = tuple(resources)
        self._scopes_supported = frozenset(scopes_supported)
        self._default_scopes = default_scopes
        self._store = store
        self._clock = clock

    async def begin(self, params: Mapping[str, str]) -> PendingAuthorization:
        """Validate an /authorize request. Raises AuthorizePageError (no redirect) or a
        RedirectingOAuthError that sends the person back to the client."""
        client = await self.client(params.get("client_id", ""))
        if client is None:
            raise AuthorizePageError("Unknown client: register it first (RFC 7591), or use a metadata document URL.")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None:
            if len(client.redirect_uris) != 1:
                raise AuthorizePageError("redirect_uri is required for this client.")
            redirect_uri = client.redirect_uris[0]
        if not any(redirect_uri_matches(r, redirect_uri) for r in client.redirect_uris):
            raise AuthorizePageError("redirect_uri does not match any URI registered for this client.")
        state = params.get("state")
        redirect = RedirectTarget(redirect_uri, state, self._issuer)
        if params.get("response_type") != "code":
            raise redirect.error("unsupported_response_type", "response_type must be code")
        challenge = params.get("code_challenge")
        if not challenge:
            raise redirect.error("invalid_request", "PKCE is required: send code_challenge (S256)")
        if params.get("code_challenge_method") != "S256":
            raise redirect.error("invalid_request", "code_challenge_method must be S256")
        if not PKCE_CHALLENGE.fullmatch(challenge):
            raise redirect.error("invalid_request", "code_challenge is not a valid S256 challenge")
        # A client's registered scope is what it gets when it names none, not a ceiling: registration is
        # self-asserted (anyone may register again, asking for more), so the person's consent is the gate, and a
        # client challenged for a larger scope (step-up, 403 insufficient_scope) may come back and ask for it.
        registered = frozenset(client.scope.split())
        requested = frozenset(params.get("scope", "").split()) or (self._default_scopes & registered)
        if not requested <= self._scopes_supported:
            raise redirect.error("invalid_scope", "requested scope is not one this authorization server grants")
        resource = params.get("resource") or self._resources[0]
        if resource not in self._resources:
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
        await self._store.save_pending(pending)
        return pending

    async def client(self, client_id: str) -> Client | None:
        """The client named at /authorize; a metadata document that cannot be used is a page error (never a
        redirect: its redirect URIs are not known to be the client's)."""
        try:
            return await self._find_client(client_id)
        except ClientDocumentError as exc:
            raise AuthorizePageError(f"This client's metadata document cannot be used: {exc}.") from None

    async def pending(self, request_id: str) -> tuple[PendingAuthorization, Client]:
        pending = await self._store.pending(request_id)
        client = await self.client(pending.client_id) if pending else None
        if pending is None or client is None:
            raise AuthorizePageError(REQUEST_GONE)
        return pending, client

    async def record_consent(self, request_id: str, approved: bool) -> str | None:
        """Approve: the pending request may go to the identity provider (returns None).
        Deny: the request ends, and the returned URL sends the person back with access_denied."""
        if approved:
            pending, _ = await self.pending(request_id)
            await self._store.save_pending(attrs.evolve(pending, consented=True))
            return None
        taken = await self._store.take_pending(request_id)
        if taken is None:
            raise AuthorizePageError(REQUEST_GONE)
        return (
            RedirectTarget(taken.redirect_uri, taken.state, self._issuer)
            .error("access_denied", "the user denied the request")
            .redirect_url
        )

    async def complete(self, request_id: str, subject: str) -> str:
        """The identity provider vouched for `subject`: issue a code, return the client redirect URL."""
        if not SUBJECT_PATTERN.fullmatch(subject):
            raise AuthorizePageError("User id must be 1-64 letters, digits or . _ @ + -")
        pending = await self._store.take_pending(request_id)  # single use: a replayed callback finds nothing
        if pending is None or not pending.consented:
            raise AuthorizePageError("This authorization request is unknown, expired, unapproved or already used.")
        now = int(self._clock())
        code = new_token()
        grant = Grant(
            grant_id=new_token(),
            client_id=pending.client_id,
            subject=subject,
            scopes=pending.scopes,
            resource=pending.resource,
            created_at=now,
        )
        await self._store.save_code(
            AuthorizationCode(
                code_hash=token_hash(code),
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                code_challenge=pending.code_challenge,
                scopes=pending.scopes,
                resource=pending.resource,
                subject=subject,
                grant_id=grant.grant_id,
                expires_at=now + int(self._store.code_ttl),
            )
        )
        await self._store.save_grant(grant)
        return RedirectTarget(pending.redirect_uri, pending.state, self._issuer).success(code)

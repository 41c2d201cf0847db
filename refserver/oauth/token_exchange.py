"""Token exchange (RFC 8693) in the embedded authorization server: a resource server trades the token a client
sent it for a short-lived token for one downstream audience, so the client's token is never passed through.

Only narrowing is possible: the audience must be one this server is configured to issue for, the scopes a subset
of the subject token's, the lifetime the shorter of the exchange TTL and what the subject token has left. The
subject token must be a live access token of ours for one of our own resources (an exchanged token is for a
downstream audience, so it cannot be exchanged again), and no actor token or other token type is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from refserver.errors import OAuthError
from refserver.oauth.access_tokens import AccessTokens

logger = logging.getLogger(__name__)

TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
"""The only token type taken as `subject_token_type` and issued (`issued_token_type`)."""


class TokenExchange:
    def __init__(
        self,
        *,
        access_tokens: AccessTokens,
        resources: Sequence[str],
        audiences: Sequence[str],
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self._access_tokens = access_tokens
        self._resources = frozenset(resources)
        self.audiences = tuple(audiences)
        """Where exchanged tokens may go; empty means the grant is off (and not advertised)."""
        self._ttl = ttl
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self.audiences)

    async def exchange_form(self, form: Mapping[str, str], *, actor: str) -> dict[str, Any]:
        """The token endpoint's `grant_type=...token-exchange` for an authenticated resource server."""
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise OAuthError("invalid_request", f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        if "actor_token" in form or "actor_token_type" in form:
            raise OAuthError("invalid_request", "actor tokens are not supported: the authenticated client is the actor")
        requested_type = form.get("requested_token_type", ACCESS_TOKEN_TYPE)
        if requested_type != ACCESS_TOKEN_TYPE:
            raise OAuthError("invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
        targets = {value for value in (form.get("resource"), form.get("audience")) if value}
        if len(targets) != 1:
            raise OAuthError("invalid_target", "name exactly one target: resource or audience (or both, equal)")
        scope = form.get("scope")
        return await self.exchange(
            form.get("subject_token", ""),
            audience=targets.pop(),
            scopes=frozenset(scope.split()) if scope is not None else None,
            actor=actor,
        )

    async def exchange(
        self, subject_token: str, *, audience: str, scopes: frozenset[str] | None, actor: str
    ) -> dict[str, Any]:
        """The exchanged token as a token response; `scopes` None keeps the subject token's."""
        if not self.enabled:
            raise OAuthError("unsupported_grant_type", "token exchange is not enabled on this server")
        if not subject_token:
            raise OAuthError("invalid_request", "subject_token is required")
        subject = await self._access_tokens.decode(subject_token)
        if subject is None or not self._resources.intersection(subject.audience) or subject.actor is not None:
            raise OAuthError("invalid_grant", "subject_token is not a live access token for this server's resources")
        if audience not in self.audiences:
            raise OAuthError("invalid_target", f"tokens are not exchanged for {audience!r}")
        granted = subject.scopes if scopes is None else scopes
        if not granted <= subject.scopes:
            wider = " ".join(sorted(granted - subject.scopes))
            raise OAuthError("invalid_scope", f"an exchanged token can only narrow the scope; not held: {wider}")
        expires_at = min(int(self._clock() + self._ttl), subject.expires_at)
        token = self._access_tokens.sign_exchanged(
            subject, audience=audience, scopes=granted, actor=actor, expires_at=expires_at
        )
        logger.info("token exchanged by %s for audience %s", actor, audience)
        return {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": max(0, expires_at - int(self._clock())),
            "scope": " ".join(sorted(granted)),
        }

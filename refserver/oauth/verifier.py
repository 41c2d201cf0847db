"""The resource server's side of OAuth: one `TokenVerifier` interface, three ways to check a bearer token.

- `EmbeddedVerifier` (`oauth/embedded_verifier.py`): our own `AuthorizationServer` in this process
  (signature, issuer, expiry and revocation through its store), plus the audience (RFC 8707).
- `JwtVerifier` (`oauth/jwt_verifier.py`): an external authorization server's JWT access tokens (RFC 9068),
  checked here against its JWKS, found through its metadata (RFC 8414). Revocation is checked through the
  `OAuthStore` when one is shared with the authorization server (both processes on one Redis, the seed's
  topology). Without a shared store a revoked access token is honoured until its `exp`: keep access tokens
  short-lived in that setup.
- `IntrospectionVerifier` (`oauth/introspection_verifier.py`): RFC 7662 at the external authorization server;
  active answers are cached for at most `cache_ttl` and never beyond the token's `exp`, so a revocation takes
  effect within `cache_ttl`.

The external modes watch the authorization server (`oauth/remote_verifier.py`): `run` probes its metadata
every few seconds. While it cannot be reached `state` is "degraded" and `verify` raises
`AuthServerUnavailable` (503, retryable); the next successful probe makes it "ok" again, without a restart.
`create_verifier` (`oauth/assembly.py`) picks one from the settings.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, Protocol, TypeGuard

import trio

from refserver.errors import AuthServerUnavailable, Unauthorized
from refserver.oauth.access_tokens import NOT_BEFORE_LEEWAY
from refserver.oauth.models import AccessInfo
from refserver.oauth.tokencache import TokenCache

State = Literal["ok", "degraded"]

BEARER_TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 sec. 2.1 `b64token`: the only characters a bearer token may have."""
MAX_TOKEN_LENGTH: Final = 8192
"""Longer tokens are refused before any parsing or network call (ours are well under 1 KiB)."""


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> AccessInfo:
        """The token's facts; raises Unauthorized for any token we must refuse (bad, expired, revoked,
        foreign audience or issuer) and AuthServerUnavailable when an external server cannot be asked."""
        ...

    @property
    def state(self) -> State: ...

    @property
    def cache(self) -> TokenCache | None:
        """Verified tokens remembered (None when every token is checked afresh); revocations reach it."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (the availability probe); start it with `nursery.start`."""
        ...

    def statistics(self) -> dict[str, Any]: ...


def check_token_shape(token: str) -> None:
    if not token or len(token) > MAX_TOKEN_LENGTH or not BEARER_TOKEN.fullmatch(token):
        raise Unauthorized("the bearer token is malformed")


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def access_info(
    claims: Mapping[str, Any], *, issuer: str, resource: str, now: float, require_issuer: bool
) -> AccessInfo:
    """Check the claims of a JWT or of an introspection answer and extract what the server needs."""
    iss = claims.get("iss")
    if iss != issuer and (require_issuer or iss is not None):
        raise Unauthorized("the token was issued by another authorization server")
    aud = claims.get("aud")
    if isinstance(aud, list):
        audience = tuple(a for a in aud if isinstance(a, str))
    else:
        audience = (aud,) if isinstance(aud, str) else ()
    if resource not in audience:
        raise Unauthorized("the token was not issued for this resource (audience mismatch)")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not _number(exp):
        raise Unauthorized("the token has no expiry")
    if exp <= now:
        raise Unauthorized("the token has expired")
    if nbf is not None and (not _number(nbf) or nbf > now + NOT_BEFORE_LEEWAY):
        raise Unauthorized("the token is not valid yet")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("the token names no subject")
    client_id = claims.get("client_id", claims.get("azp"))
    scope, jti, grant_id = claims.get("scope"), claims.get("jti"), claims.get("grant_id")
    return AccessInfo(
        subject=subject,
        client_id=client_id if isinstance(client_id, str) else "",
        scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
        expires_at=int(exp),
        token_id=jti if isinstance(jti, str) else "",
        audience=audience,
        grant_id=grant_id if isinstance(grant_id, str) else None,
    )


class VerificationCounters:
    """accepted / rejected / unavailable, plus the counters a verifier adds by name."""

    def __init__(self, *names: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter(
            dict.fromkeys(("accepted", "rejected", "unavailable", *names), 0)
        )

    async def outcome(self, verify: Callable[[], Awaitable[AccessInfo]]) -> AccessInfo:
        try:
            info = await verify()
        except Unauthorized:
            self.counts["rejected"] += 1
            raise
        except AuthServerUnavailable:
            self.counts["unavailable"] += 1
            raise
        self.counts["accepted"] += 1
        return info

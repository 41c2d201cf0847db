"""JWT access tokens (RFC 9068) of an external authorization server, verified here against its JWKS."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final

import httpx
import trio
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet

from refserver.errors import AuthServerUnavailable, Unauthorized
from refserver.oauth.access_tokens import compact_header, is_access_token_type
from refserver.oauth.models import AccessInfo
from refserver.oauth.remote_verifier import HTTP_TIMEOUT, PROBE_INTERVAL, PROBE_RETRY_INTERVAL, RemoteVerifier
from refserver.oauth.store import OAuthStore
from refserver.oauth.verifier import access_info

logger = logging.getLogger(__name__)

ALGORITHMS: Final = ("ES256", "RS256", "Ed25519", "EdDSA")
"""Asymmetric signatures only: an HMAC or `none` token could be forged with public material."""
KEY_TYPES: Final = frozenset({"EC", "RSA", "OKP"})
JWKS_REFETCH_MIN_INTERVAL: Final = 10.0
"""An unknown `kid` refetches the JWKS at most once per this many seconds (random kids cannot flood the AS)."""
JWKS_MAX_AGE: Final = 3600.0
"""The probe refetches a JWKS this old, so keys the authorization server withdrew stop verifying."""
MAX_JWKS_KEYS: Final = 32
"""Keys taken from one JWKS document; the rest are ignored (a key set is a handful of keys)."""


class JwtVerifier(RemoteVerifier):
    """JWT access tokens of an external authorization server, verified locally against its JWKS."""

    mode = "jwt"
    counted = ("jwks_fetches",)

    def __init__(
        self,
        *,
        issuer: str,
        resource: str,
        http: httpx.AsyncClient,
        jwks_url: str | None = None,
        revocations: OAuthStore | None = None,
        clock: Callable[[], float] = time.time,
        probe_interval: float = PROBE_INTERVAL,
        probe_retry_interval: float = PROBE_RETRY_INTERVAL,
        http_timeout: float = HTTP_TIMEOUT,
        jwks_refetch_min_interval: float = JWKS_REFETCH_MIN_INTERVAL,
    ) -> None:
        super().__init__(
            issuer=issuer,
            resource=resource,
            http=http,
            clock=clock,
            probe_interval=probe_interval,
            probe_retry_interval=probe_retry_interval,
            http_timeout=http_timeout,
        )
        self._jwks_url = jwks_url
        self._revocations = revocations
        self._refetch_min_interval = jwks_refetch_min_interval
        self._keys: KeySet | None = None
        self._keys_fetched_at = -math.inf
        self._last_kid_refetch = -math.inf
        self._fetch_lock = trio.Lock()

    async def _after_probe(self) -> None:
        if self._keys is None or trio.current_time() - self._keys_fetched_at >= JWKS_MAX_AGE:
            await self._fetch_keys()

    async def _keyset(self) -> KeySet:
        if self._keys is None:
            async with self._fetch_lock:
                if self._keys is None:  # not fetched by another task while this one waited
                    await self._fetch_keys()
        assert self._keys is not None
        return self._keys

    async def _fetch_keys(self) -> None:
        url = await self._endpoint("jwks_uri", self._jwks_url)
        status, document = await self._call("GET", url, headers={"Accept": "application/json"})
        entries = document.get("keys") if isinstance(document, dict) else None
        if status != 200 or not isinstance(entries, list):
            raise AuthServerUnavailable(f"{url} answered HTTP {status} without a JWKS")
        keys: list[Key] = []
        for entry in entries[:MAX_JWKS_KEYS]:
            if not isinstance(entry, dict) or entry.get("kty") not in KEY_TYPES or entry.get("use", "sig") != "sig":
                continue
            try:
                keys.append(JWKRegistry.import_key(entry))
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                logger.warning("ignoring an unusable key in %s: %r", url, exc)
        self._counters.counts["jwks_fetches"] += 1
        self._keys = KeySet(keys)
        self._keys_fetched_at = trio.current_time()

    async def _verify(self, token: str) -> AccessInfo:
        header = compact_header(token)
        if header is None:
            raise Unauthorized("the token is not a signed JWT")
        if header.get("alg") not in ALGORITHMS:
            raise Unauthorized(f"the token's algorithm must be one of {', '.join(ALGORITHMS)}")
        if not is_access_token_type(header.get("typ")):
            raise Unauthorized("the token is not a JWT access token (RFC 9068 typ at+jwt)")
        keys = await self._keyset()
        kid = header.get("kid")
        if isinstance(kid, str) and not any(key.kid == kid for key in keys):
            keys = await self._refetch_for(kid)
        try:
            claims = jwt.decode(token, keys, algorithms=list(ALGORITHMS)).claims
        except (JoseError, ValueError) as exc:
            raise Unauthorized("the token's signature does not verify") from exc
        info = access_info(claims, issuer=self.issuer, resource=self.resource, now=self._clock(), require_issuer=True)
        if self._revocations is not None and await self._revocations.is_revoked(info.token_id, info.grant_id):
            raise Unauthorized("the token has been revoked")
        return info

    async def _refetch_for(self, kid: str) -> KeySet:
        """A key we do not know: the server may have rotated. Refetch, but rarely (the kid is attacker-chosen)."""
        now = trio.current_time()
        if now - self._last_kid_refetch >= self._refetch_min_interval:
            self._last_kid_refetch = now
            async with self._fetch_lock:
                await self._fetch_keys()
        assert self._keys is not None
        if not any(key.kid == kid for key in self._keys):
            raise Unauthorized("the token was signed with an unknown key")
        return self._keys

    def statistics(self) -> dict[str, Any]:
        return {
            **super().statistics(),
            "keys": len(self._keys.keys) if self._keys else 0,
            "revocation_checks": self._revocations is not None,
        }

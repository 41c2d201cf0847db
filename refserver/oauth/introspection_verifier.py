"""RFC 7662 introspection at an external authorization server, answers remembered in a `TokenCache`."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote_plus

import httpx

from refserver.errors import AuthServerUnavailable, Unauthorized
from refserver.oauth.models import AccessInfo
from refserver.oauth.remote_verifier import HTTP_TIMEOUT, PROBE_INTERVAL, PROBE_RETRY_INTERVAL, RemoteVerifier
from refserver.oauth.tokencache import MAX_ENTRIES, TokenCache
from refserver.oauth.verifier import access_info

logger = logging.getLogger(__name__)

ACCESS_TOKEN_HINTS: Final = ("bearer", "access_token")
"""`token_type` values of an active answer that describe an access token (others: a refresh token)."""


class IntrospectionVerifier(RemoteVerifier):
    """Active answers are remembered for at most `cache_ttl`, never beyond the token's `exp`: a revocation at
    the authorization server takes effect here within `cache_ttl`."""

    mode = "introspection"
    counted = ("introspections",)

    def __init__(
        self,
        *,
        issuer: str,
        resource: str,
        http: httpx.AsyncClient,
        introspection_url: str | None,
        client_id: str,
        client_secret: str,
        cache_ttl: float,
        cache_max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
        probe_interval: float = PROBE_INTERVAL,
        probe_retry_interval: float = PROBE_RETRY_INTERVAL,
        http_timeout: float = HTTP_TIMEOUT,
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
        self._introspection_url = introspection_url
        # RFC 6749 sec. 2.3.1: both halves are form-encoded before the Basic encoding.
        pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        self._authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        self._cache = TokenCache(max_entries=cache_max_entries, max_age=cache_ttl, clock=clock)

    @property
    def cache(self) -> TokenCache:
        return self._cache

    async def _verify(self, token: str) -> AccessInfo:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        url = await self._endpoint("introspection_endpoint", self._introspection_url)
        self._counters.counts["introspections"] += 1
        status, answer = await self._call(
            "POST",
            url,
            data={"token": token, "token_type_hint": "access_token"},
            headers={"Authorization": self._authorization, "Accept": "application/json"},
        )
        if status != 200 or not isinstance(answer, dict):
            if status in (401, 403):
                logger.error("the authorization server refused our introspection credentials (HTTP %s)", status)
            raise AuthServerUnavailable(f"token introspection failed: HTTP {status}")
        if answer.get("active") is not True:
            raise Unauthorized("the token is not active (unknown, expired or revoked)")
        token_type = answer.get("token_type")
        if token_type is not None and str(token_type).lower() not in ACCESS_TOKEN_HINTS:
            raise Unauthorized("the token is not an access token")
        info = access_info(answer, issuer=self.issuer, resource=self.resource, now=self._clock(), require_issuer=False)
        self._cache.put(token, info)
        return info

    def statistics(self) -> dict[str, Any]:
        return {
            **super().statistics(),
            "cache_hits": self._cache.hits,
            "cache_entries": len(self._cache),
            "cache_max_entries": self._cache.max_entries,
        }

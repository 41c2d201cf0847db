"""The MCP server's side of token exchange (RFC 8693): what `ctx.exchange_token` calls.

With the embedded authorization server the exchange is a call into it (no HTTP to ourselves); with an external
one (`jwt` / `introspection` modes) it is a POST to that server's token endpoint with the resource server's
credentials, once its metadata says it offers the grant. Either way the answers are reused per caller token,
audience and scopes until shortly before they expire, in a bounded cache, so a tool called in a loop costs
one exchange, not one per call.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import attrs
import httpx

from refserver.errors import OAuthError, TokenExchangeRefused, TokenExchangeUnavailable
from refserver.oauth.token_exchange import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT, TokenExchange
from refserver.protocol.core import CallerToken, TokenExchanger

MAX_CACHED_TOKENS: Final = 4096
"""Exchanged tokens kept at once (a few hundred bytes each); the least recently used go first."""
REUSE_MARGIN: Final = 30.0
"""Seconds before its expiry an exchanged token stops being handed out: it must still be good downstream."""
EXCHANGE_TIMEOUT: Final = 10.0
"""Bound on one exchange at an external authorization server (connect, send, read)."""


class _Exchange(Protocol):
    async def __call__(self, caller: CallerToken, audience: str, scopes: frozenset[str] | None) -> dict[str, Any]:
        """The authorization server's token response."""
        ...


@attrs.frozen
class _Cached:
    token: str
    reuse_until: float


class CachingExchanger(TokenExchanger):
    def __init__(self, exchange: _Exchange, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._exchange = exchange
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str, frozenset[str] | None], _Cached] = OrderedDict()

    async def exchange(self, caller: CallerToken, audience: str, scopes: frozenset[str] | None) -> str:
        # Keyed by a digest: the cache never holds the caller's token itself.
        key = (hashlib.sha256(caller.value.encode()).hexdigest(), audience, scopes)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and cached.reuse_until > now:
            self._cache.move_to_end(key)
            return cached.token
        answer = await self._exchange(caller, audience, scopes)
        token = answer.get("access_token")
        if not isinstance(token, str) or answer.get("issued_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise TokenExchangeRefused("the authorization server's exchange answer holds no access token")
        lifetime = answer.get("expires_in")
        if isinstance(lifetime, int | float) and lifetime > REUSE_MARGIN:
            self._cache[key] = _Cached(token, now + lifetime - REUSE_MARGIN)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED_TOKENS:
                self._cache.popitem(last=False)
        return token


class EmbeddedExchange:
    """Into our own authorization server, with this MCP server's resource URL as the actor."""

    def __init__(self, exchange: TokenExchange, *, actor: str) -> None:
        self._exchange = exchange
        self._actor = actor

    async def __call__(self, caller: CallerToken, audience: str, scopes: frozenset[str] | None) -> dict[str, Any]:
        try:
            return await self._exchange.exchange(caller.value, audience=audience, scopes=scopes, actor=self._actor)
        except OAuthError as error:
            raise TokenExchangeRefused(f"token exchange refused: {error.error}: {error.message}") from None


class RemoteExchange:
    """At an external authorization server's token endpoint, authenticated with client_secret_basic."""

    def __init__(self, http: httpx.AsyncClient, *, issuer: str, client_id: str, client_secret: str) -> None:
        self._http = http
        self._issuer = issuer
        self._credentials = (client_id, client_secret)
        self._token_endpoint: str | None = None

    async def __call__(self, caller: CallerToken, audience: str, scopes: frozenset[str] | None) -> dict[str, Any]:
        endpoint = await self._endpoint()
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": caller.value,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "resource": audience,
        }
        if scopes is not None:
            form["scope"] = " ".join(sorted(scopes))
        try:
            response = await self._http.post(endpoint, data=form, auth=self._credentials, timeout=EXCHANGE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise TokenExchangeUnavailable(f"the authorization server is unreachable: {type(exc).__name__}") from None
        answer = _json_object(response)
        if response.status_code != 200:
            error = answer.get("error", f"HTTP {response.status_code}")
            raise TokenExchangeRefused(f"token exchange refused: {error}: {answer.get('error_description', '')}")
        return answer

    async def _endpoint(self) -> str:
        """The token endpoint, once the metadata (RFC 8414, path-aware) says the grant is offered."""
        if self._token_endpoint is not None:
            return self._token_endpoint
        parts = urlsplit(self._issuer)
        url = f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}"
        try:
            response = await self._http.get(url, timeout=EXCHANGE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise TokenExchangeUnavailable(f"the authorization server is unreachable: {type(exc).__name__}") from None
        metadata = _json_object(response)
        if response.status_code != 200 or metadata.get("issuer") != self._issuer:
            raise TokenExchangeUnavailable(f"no authorization server metadata for {self._issuer} at {url}")
        if TOKEN_EXCHANGE_GRANT not in (metadata.get("grant_types_supported") or ()):
            raise TokenExchangeUnavailable(f"the authorization server {self._issuer} does not offer token exchange")
        endpoint = metadata.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise TokenExchangeUnavailable(f"the authorization server {self._issuer} names no token endpoint")
        self._token_endpoint = endpoint
        return endpoint


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

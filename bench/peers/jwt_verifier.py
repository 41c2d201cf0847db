"""The PJA peer's token check: refserver's JWTs verified through the SDK's `TokenVerifier` interface.

What an SDK user who puts a JWT-issuing authorization server in front of the SDK would write, held to what
refserver's own resource server does per request so that the comparison is of the servers, not of two caching
policies: the first request with a token checks its ES256 signature against the issuer's JWKS (fetched once,
bounded in time), its `iss`, `aud` and `exp`; the facts are then remembered under the token's SHA-256 until it
expires (bounded number of entries, oldest first out), like `refserver/oauth/tokencache.py`.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Final

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server.auth.provider import AccessToken

JWKS_TIMEOUT: Final = 5.0
MAX_ENTRIES: Final = 10_000


class CachingJwtVerifier:
    def __init__(self, *, issuer: str, resource: str) -> None:
        self._issuer = issuer.rstrip("/")
        self._resource = resource
        self._keys: KeySet | None = None
        self._keys_lock = anyio.Lock()
        self._cache: OrderedDict[str, AccessToken] = OrderedDict()

    async def _key_set(self) -> KeySet:
        async with self._keys_lock:
            if self._keys is None:
                async with httpx.AsyncClient(timeout=JWKS_TIMEOUT) as http:
                    response = await http.get(f"{self._issuer}/.well-known/jwks.json")
                    response.raise_for_status()
                    self._keys = KeySet.import_key_set(response.json())
            return self._keys

    async def verify_token(self, token: str) -> AccessToken | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            if cached.expires_at is not None and cached.expires_at > time.time():
                self._cache.move_to_end(key)
                return cached
            del self._cache[key]
        facts = await self._verify(token)
        if facts is not None:
            self._cache[key] = facts
            while len(self._cache) > MAX_ENTRIES:
                self._cache.popitem(last=False)
        return facts

    async def _verify(self, token: str) -> AccessToken | None:
        try:
            decoded = jwt.decode(token, await self._key_set(), algorithms=["ES256"])
            claims: dict[str, Any] = decoded.claims
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self._issuer},
                exp={"essential": True},
            ).validate(claims)
        except (JoseError, ValueError):
            return None
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or ())
        if self._resource not in audiences:
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=self._resource,
            subject=str(claims.get("sub")),
        )

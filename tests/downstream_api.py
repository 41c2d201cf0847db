"""A small downstream resource server for the token exchange tests: it trusts one issuer and one audience.

`GET /profile` checks its bearer token the way any RFC 9068 resource server would (signature by the issuer's
JWKS, `typ` at+jwt, `iss`, `aud` its own URL, `exp`) and answers the claims it relied on; it records every
Authorization header it was sent, so a test can prove the MCP client's own token never reached it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from refserver.oauth.access_tokens import compact_header, is_access_token_type
from tests.local_http import LocalHttpServer, QuietHandler


class DownstreamApi(LocalHttpServer):
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.authorizations: list[str] = []
        self._keys: KeySet | None = None
        api = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.path != "/profile":
                    self.answer_json(404, {"error": "not_found"})
                    return
                authorization = self.headers.get("Authorization", "")
                api.authorizations.append(authorization)
                claims = api.verify(authorization.removeprefix("Bearer "))
                if claims is None:
                    self.answer_json(401, {"error": "invalid_token"})
                    return
                profile = {
                    key: claims.get(key) for key in ("sub", "aud", "scope", "act", "client_id", "exp", "iat", "jti")
                }
                self.answer_json(200, profile)

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{self.origin}/profile"

    def verify(self, token: str) -> dict[str, Any] | None:
        header = compact_header(token)
        if header is None or not is_access_token_type(header.get("typ")):
            return None
        try:
            claims = jwt.decode(token, self._keyset(), algorithms=[str(header.get("alg"))]).claims
        except (JoseError, ValueError):
            return None
        if claims.get("iss") != self.issuer or claims.get("aud") != self.url:
            return None
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            return None
        return dict(claims)

    def _keyset(self) -> KeySet:
        if self._keys is None:
            metadata = httpx.get(f"{self.issuer}/.well-known/oauth-authorization-server", timeout=5).json()
            self._keys = KeySet.import_key_set(httpx.get(metadata["jwks_uri"], timeout=5).json())
        return self._keys

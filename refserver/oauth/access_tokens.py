"""Our access tokens (RFC 9068 JWTs): the one place that signs them and decodes them.

The resource-server verifiers of external tokens (`oauth/jwt_verifier.py`) use the same `typ` rule and the
same `nbf` leeway from here, so our own and foreign access tokens are told from other JWTs alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from joserfc import jws, jwt
from joserfc.errors import JoseError

from refserver.oauth.crypto import new_token
from refserver.oauth.keys import ALGORITHM, SigningKeys
from refserver.oauth.models import AccessInfo, Grant
from refserver.oauth.store import OAuthStore

ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
"""RFC 9068 sec. 2.1 and 4: the `typ` that tells an access token from an ID token signed by the same keys."""
NOT_BEFORE_LEEWAY: Final = 30
"""Seconds a token's `nbf` may lie in our future: the issuer's clock may run a little ahead of ours. `exp` gets
no leeway: revocation markers in a shared store live exactly until `exp`, so a token accepted after its `exp`
could be a revoked one whose marker is already gone."""


def is_access_token_type(typ: object) -> bool:
    """RFC 7515 sec. 4.1.9: `typ` is a media type, compared without regard to case."""
    return isinstance(typ, str) and typ.lower() in ACCESS_TOKEN_TYPES


def compact_header(token: str) -> dict[str, object] | None:
    """The protected header of a compact JWS, or None for anything that is not one."""
    if token.count(".") != 2:
        return None
    try:
        header = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError):
        return None
    return header if isinstance(header, dict) else None


class AccessTokens:
    def __init__(
        self, *, issuer: str, keys: SigningKeys, store: OAuthStore, ttl: float, clock: Callable[[], float]
    ) -> None:
        self._issuer = issuer
        self._keys = keys
        self._store = store
        self.ttl = ttl
        self._clock = clock

    def sign(self, grant: Grant, scopes: frozenset[str]) -> str:
        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "sub": grant.subject,
            "aud": grant.resource,
            "exp": now + int(self.ttl),
            "iat": now,
            "nbf": now,
            "jti": new_token(),
            "scope": " ".join(sorted(scopes)),
            "client_id": grant.client_id,
            "grant_id": grant.grant_id,
        }
        return self._keys.sign(claims)

    def sign_exchanged(
        self, subject: AccessInfo, *, audience: str, scopes: frozenset[str], actor: str, expires_at: int
    ) -> str:
        """A token exchanged for `subject` (RFC 8693): another audience, `act` naming who asked for it.

        It keeps the subject token's grant, so revoking that grant (or reusing its refresh token) kills this
        token too wherever revocation is checked.
        """
        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "sub": subject.subject,
            "aud": audience,
            "exp": expires_at,
            "iat": now,
            "nbf": now,
            "jti": new_token(),
            "scope": " ".join(sorted(scopes)),
            "client_id": subject.client_id,
            "grant_id": subject.grant_id,
            "act": {"sub": actor},
        }
        return self._keys.sign(claims)

    async def decode(self, token: str) -> AccessInfo | None:
        """Signature, issuer, time and revocation; None for anything not a live token of ours."""
        header = compact_header(token)
        if header is None or header.get("alg") != ALGORITHM or not is_access_token_type(header.get("typ")):
            return None
        await self._keys.reload_for_unknown_kid(str(header.get("kid", "")))
        try:
            claims = jwt.decode(token, self._keys.keyset, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError):
            return None
        now = int(self._clock())
        if claims.get("iss") != self._issuer or not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            return None
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > now + NOT_BEFORE_LEEWAY:
            return None
        if await self._store.is_revoked(str(claims.get("jti")), claims.get("grant_id")):
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
            actor=_actor(claims.get("act")),
        )


def _actor(act: object) -> str | None:
    """The acting party of an exchanged token (RFC 8693 sec. 4.1), or None for a token issued to its client."""
    if isinstance(act, dict) and isinstance(act.get("sub"), str):
        return str(act["sub"])
    return None

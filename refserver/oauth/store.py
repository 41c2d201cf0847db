"""Where the authorization server keeps its state: typed records over any `KeyValueStore`.

Key layout (all under the store's prefix, every key with a TTL):

    oauth:client:{client_id}            Client registration                      CLIENT_TTL
    oauth:cimd:{sha256(url)}            Client from a metadata document (CIMD)   its Cache-Control, <= 1 day
    oauth:pending:{request_id}          /authorize request awaiting consent/IdP  PENDING_TTL
    oauth:code:{sha256(code)}           AuthorizationCode (taken atomically)     code TTL
    oauth:code-used:{sha256(code)}      grant id, to detect a replayed code      code TTL
    oauth:grant:{grant_id}              Grant (deleted when revoked)             refresh TTL
    oauth:grant-revoked:{grant_id}      marker checked with every access token   access TTL
    oauth:refresh:{sha256(token)}       RefreshToken (taken atomically)          refresh TTL
    oauth:refresh-used:{sha256(token)}  grant id, to detect refresh token reuse  refresh TTL
    oauth:jti-revoked:{jti}             marker for one revoked access token      until its exp
"""

from __future__ import annotations

from typing import Final

from refserver.backend.kv import KeyValueStore
from refserver.oauth.models import AuthorizationCode, Client, Grant, PendingAuthorization, RefreshToken, dump, load

CLIENT_TTL: Final = 180 * 24 * 3600.0
"""Dynamic registrations are forgotten after half a year; clients re-register (RFC 7591 allows it)."""
REVOCATION_MARGIN: Final = 60.0
"""Revocation markers outlive the token by this much, so a verifier whose clock lags cannot accept it."""
PENDING_TTL: Final = 600.0
"""A person has ten minutes from /authorize to the identity provider's callback."""


class OAuthStore:
    def __init__(self, kv: KeyValueStore, *, code_ttl: float, access_ttl: float, refresh_ttl: float) -> None:
        self.kv = kv
        self.code_ttl = code_ttl
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    # --- clients -----------------------------------------------------------------------------------

    async def save_client(self, client: Client) -> None:
        await self.kv.set(f"oauth:client:{client.client_id}", dump(client), CLIENT_TTL)

    async def client(self, client_id: str) -> Client | None:
        raw = await self.kv.get(f"oauth:client:{client_id}")
        return load(Client, raw) if raw else None

    # --- pending authorizations ----------------------------------------------------------------------

    async def save_pending(self, pending: PendingAuthorization) -> None:
        await self.kv.set(f"oauth:pending:{pending.request_id}", dump(pending), PENDING_TTL)

    async def pending(self, request_id: str) -> PendingAuthorization | None:
        raw = await self.kv.get(f"oauth:pending:{request_id}")
        return load(PendingAuthorization, raw) if raw else None

    async def take_pending(self, request_id: str) -> PendingAuthorization | None:
        raw = await self.kv.take(f"oauth:pending:{request_id}")
        return load(PendingAuthorization, raw) if raw else None

    # --- codes ---------------------------------------------------------------------------------------

    async def save_code(self, code: AuthorizationCode) -> None:
        await self.kv.set(f"oauth:code:{code.code_hash}", dump(code), self.code_ttl)

    async def take_code(self, code_hash: str) -> AuthorizationCode | None:
        raw = await self.kv.take(f"oauth:code:{code_hash}")
        if raw is None:
            return None
        code = load(AuthorizationCode, raw)
        await self.kv.set(f"oauth:code-used:{code_hash}", code.grant_id.encode(), self.code_ttl)
        return code

    async def grant_of_used_code(self, code_hash: str) -> str | None:
        raw = await self.kv.get(f"oauth:code-used:{code_hash}")
        return raw.decode() if raw else None

    # --- grants and refresh tokens -------------------------------------------------------------------

    async def save_grant(self, grant: Grant) -> None:
        await self.kv.set(f"oauth:grant:{grant.grant_id}", dump(grant), self.refresh_ttl)

    async def grant(self, grant_id: str) -> Grant | None:
        raw = await self.kv.get(f"oauth:grant:{grant_id}")
        return load(Grant, raw) if raw else None

    async def revoke_grant(self, grant_id: str) -> None:
        """Every token of the grant dies: refresh tokens (no grant) and access tokens (the marker)."""
        await self.kv.set(f"oauth:grant-revoked:{grant_id}", b"1", self.access_ttl + REVOCATION_MARGIN)
        await self.kv.delete(f"oauth:grant:{grant_id}")

    async def save_refresh(self, token: RefreshToken) -> None:
        await self.kv.set(f"oauth:refresh:{token.token_hash}", dump(token), self.refresh_ttl)

    async def refresh(self, token_hash: str) -> RefreshToken | None:
        raw = await self.kv.get(f"oauth:refresh:{token_hash}")
        return load(RefreshToken, raw) if raw else None

    async def take_refresh(self, token_hash: str) -> RefreshToken | None:
        """Atomically consume a refresh token, leaving a marker that makes any reuse detectable."""
        raw = await self.kv.take(f"oauth:refresh:{token_hash}")
        if raw is None:
            return None
        token = load(RefreshToken, raw)
        await self.kv.set(f"oauth:refresh-used:{token_hash}", token.grant_id.encode(), self.refresh_ttl)
        return token

    async def grant_of_used_refresh(self, token_hash: str) -> str | None:
        raw = await self.kv.get(f"oauth:refresh-used:{token_hash}")
        return raw.decode() if raw else None

    async def delete_refresh(self, token_hash: str) -> None:
        await self.kv.delete(f"oauth:refresh:{token_hash}")

    # --- access token revocation ---------------------------------------------------------------------

    async def revoke_access_token(self, jti: str, seconds_left: float) -> None:
        if seconds_left > 0:
            await self.kv.set(f"oauth:jti-revoked:{jti}", b"1", seconds_left + REVOCATION_MARGIN)

    async def is_revoked(self, jti: str, grant_id: str | None) -> bool:
        keys = [f"oauth:jti-revoked:{jti}"]
        if grant_id:
            keys.append(f"oauth:grant-revoked:{grant_id}")
        return any(value is not None for value in await self.kv.get_many(keys))

"""The authorization server's signing keys: ES256, `kid` in every header, rotatable, published as JWKS.

Instances that share a store share the keys: the first one to start creates them, the others read them,
and a verifier that meets an unknown `kid` reloads (a rotation happened elsewhere).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from refserver.backend.kv import KeyValueStore

logger = logging.getLogger(__name__)

ALGORITHM: Final = "ES256"
KEYS_KEY: Final = "oauth:signing-keys"
KEYS_TTL: Final = 400 * 24 * 3600.0
"""Refreshed at every start-up and rotation; a deployment untouched for over a year gets new keys."""
MAX_KEYS: Final = 3
"""The current key and two previous ones, so tokens signed before two rotations still verify."""
RELOAD_MIN_INTERVAL: Final = 5.0
"""An unknown `kid` triggers at most one reload per this many seconds (a bad token cannot flood the store)."""


def _generate() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


class SigningKeys:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        self._keys: list[ECKey] = []
        self._keyset = KeySet([])
        self._last_reload = float("-inf")

    @property
    def current(self) -> ECKey:
        return self._keys[0]

    async def load_or_create(self) -> None:
        raw = await self._store.get(KEYS_KEY)
        if raw is None:
            fresh = json.dumps([_generate().as_dict(private=True)]).encode()
            if not await self._store.set_if_absent(KEYS_KEY, fresh, KEYS_TTL):
                logger.info("signing keys were created by another instance")
            raw = await self._store.get(KEYS_KEY)
            assert raw is not None
        else:
            await self._store.set(KEYS_KEY, raw, KEYS_TTL)
        self._install(raw)

    def _install(self, raw: bytes) -> None:
        self._keys = [ECKey.import_key(entry) for entry in json.loads(raw)]
        self._keyset = KeySet(list(self._keys))

    async def rotate(self) -> str:
        """Make a new current key; keep the previous ones for verification. Returns the new kid."""
        await self.load_or_create()
        keys = [_generate(), *self._keys][:MAX_KEYS]
        raw = json.dumps([k.as_dict(private=True) for k in keys]).encode()
        await self._store.set(KEYS_KEY, raw, KEYS_TTL)
        self._install(raw)
        return str(self.current.kid)

    async def reload_for_unknown_kid(self, kid: str) -> bool:
        if any(k.kid == kid for k in self._keys):
            return True
        now = time.monotonic()
        if now - self._last_reload < RELOAD_MIN_INTERVAL:
            return False
        self._last_reload = now
        raw = await self._store.get(KEYS_KEY)
        if raw is not None:
            self._install(raw)
        return any(k.kid == kid for k in self._keys)

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "at+jwt", "alg": ALGORITHM, "kid": self.current.kid}
        return jwt.encode(header, claims, self.current, algorithms=[ALGORITHM])

    @property
    def keyset(self) -> KeySet:
        return self._keyset

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**k.as_dict(private=False), "use": "sig", "alg": ALGORITHM} for k in self._keys]}

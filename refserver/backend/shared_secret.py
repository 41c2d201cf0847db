"""A random secret every instance sharing a store agrees on: the first to start makes it, the others read it.

On the memory backend the store is the process, so the secret is too: one instance, nothing to share.
"""

from __future__ import annotations

import logging
import secrets
from typing import Final

from refserver.backend.kv import KeyValueStore

logger = logging.getLogger(__name__)

SECRET_BYTES: Final = 32
SECRET_TTL: Final = 400 * 24 * 3600.0
"""Renewed at every start-up; a deployment untouched for over a year gets a new secret."""


async def load_or_create_secret(store: KeyValueStore, key: str) -> bytes:
    existing = await store.get(key)
    if existing is not None:
        await store.set(key, existing, SECRET_TTL)
        return existing
    if not await store.set_if_absent(key, secrets.token_bytes(SECRET_BYTES), SECRET_TTL):
        logger.info("shared secret %s was created by another instance", key)
    agreed = await store.get(key)
    if agreed is None:
        raise RuntimeError(f"shared secret {key} vanished right after it was written")
    return agreed

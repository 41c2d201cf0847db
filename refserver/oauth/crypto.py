"""Random values, hashes and PKCE: the small cryptographic helpers of the authorization server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Final

TOKEN_BYTES: Final = 32
"""256 bits for codes, refresh tokens, client secrets and request ids (RFC 6749 sec. 10.10)."""

PKCE_VERIFIER: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
"""RFC 7636 sec. 4.1: 43-128 unreserved characters."""
PKCE_CHALLENGE: Final = re.compile(r"[A-Za-z0-9\-_]{43}")
"""An S256 challenge is the base64url (no padding) of a SHA-256: exactly 43 characters."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(value: str) -> str:
    """SHA-256 of a high-entropy secret: what the stores keep instead of the secret."""
    return hashlib.sha256(value.encode()).hexdigest()


def same_secret(value: str, expected_hash: str) -> bool:
    return hmac.compare_digest(token_hash(value), expected_hash)


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_matches(verifier: str, challenge: str) -> bool:
    if not PKCE_VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)

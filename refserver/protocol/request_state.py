"""Sealed `requestState`, sans-IO: what a multi round-trip handler keeps between rounds, carried by the client.

The client must echo `requestState` untouched, but `mrtr.mdx` tells servers to treat it as attacker-controlled.
So it is sealed with AES-256-GCM under a key every instance shares: the client can neither read nor alter it, and
the retry may land on any instance. Inside the seal it is bound to who asked (the token's subject), to what was
asked (the method and a digest of its parameters) and to an expiry; a state presented by another subject, on
another request, after its expiry, or altered in any bit, is refused. Replay within the expiry is possible by
design (the spec's warning): the handlers here keep nothing that must be used at most once.

Several keys may open a state (rotation: the newest seals, the older still open what they sealed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from refserver.errors import InvalidParams

FORMAT: Final = "rs1"
"""The token's version prefix: a state sealed by a future format is recognisably not ours to open."""
NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32
ASSOCIATED_DATA: Final = b"refserver/requestState/" + FORMAT.encode()
UNBOUND_PARAMS: Final = frozenset({"_meta", "inputResponses", "requestState"})
"""Parameters that change between rounds of one request, so they are not part of what the state is bound to."""


class InvalidRequestState(InvalidParams):
    """A `requestState` that is malformed, altered, foreign, stale or sealed for another request."""


def derive_key(secret: bytes | str) -> bytes:
    """A 256-bit AES key from a configured secret of any length (a passphrase works, a random one is better)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(b"refserver request state key\x00" + raw).digest()


def request_digest(method: str, params: Mapping[str, Any] | None) -> str:
    """What a state is bound to: the method and its parameters, apart from those that change between rounds."""
    salient = {key: value for key, value in (params or {}).items() if key not in UNBOUND_PARAMS}
    canonical = json.dumps([method, salient], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RequestStateSeal:
    def __init__(self, keys: Sequence[bytes], ttl: float, clock: Callable[[], float]) -> None:
        if not keys or any(len(key) != KEY_BYTES for key in keys):
            raise ValueError("request state keys must be 32 bytes each, and at least one")
        if ttl <= 0:
            raise ValueError("the request state ttl must be positive")
        self._ciphers = [AESGCM(key) for key in keys]
        self._ttl = ttl
        self._clock = clock

    @property
    def ttl(self) -> float:
        return self._ttl

    def seal(
        self,
        state: Mapping[str, Any],
        *,
        subject: str | None,
        method: str,
        params: Mapping[str, Any] | None,
        trace: Mapping[str, str] | None = None,
    ) -> str:
        """`trace`: the W3C trace context of the round that asked, so the retry joins its trace on any instance."""
        payload: dict[str, Any] = {
            "sub": subject,
            "req": request_digest(method, params),
            "exp": self._clock() + self._ttl,
            "state": dict(state),
        }
        if trace:
            payload["trace"] = dict(trace)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[0].encrypt(nonce, json.dumps(payload, separators=(",", ":")).encode(), ASSOCIATED_DATA)
        return f"{FORMAT}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def open(
        self, token: object, *, subject: str | None, method: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The handler's state, or InvalidRequestState saying (without detail an attacker could use) why not."""
        return self.open_traced(token, subject=subject, method=method, params=params)[0]

    def open_traced(
        self, token: object, *, subject: str | None, method: str, params: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """`open`, and the trace context sealed with the state (None if there was none)."""
        if not isinstance(token, str):
            raise InvalidRequestState("requestState must be a string")
        prefix, _, body = token.partition(".")
        if prefix != FORMAT:
            raise InvalidRequestState("requestState was not issued by this server")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise InvalidRequestState("requestState is malformed") from None
        plain = self._decrypt(raw)
        try:
            payload = json.loads(plain)
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequestState("requestState is malformed") from None
        if payload.get("sub") != subject:
            raise InvalidRequestState("requestState belongs to another user")
        if payload.get("req") != request_digest(method, params):
            raise InvalidRequestState("requestState was issued for a different request")
        expires = payload.get("exp")
        if not isinstance(expires, (int, float)) or self._clock() >= expires:
            raise InvalidRequestState("requestState has expired; start the request again")
        state = payload.get("state")
        if not isinstance(state, dict):
            raise InvalidRequestState("requestState is malformed")
        trace = payload.get("trace")
        if isinstance(trace, dict) and all(isinstance(v, str) for v in trace.values()):
            return state, trace
        return state, None

    def _decrypt(self, raw: bytes) -> bytes:
        if len(raw) <= NONCE_BYTES:
            raise InvalidRequestState("requestState is malformed")
        nonce, sealed = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, sealed, ASSOCIATED_DATA)
            except InvalidTag:
                continue
        raise InvalidRequestState("requestState failed verification")

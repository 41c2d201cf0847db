"""OAuth records. Secrets never appear here in clear: codes, refresh tokens and client secrets are
stored and looked up by their SHA-256 (they are 256-bit random values, so a fast hash is enough)."""

from __future__ import annotations

import json
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import attrs

AUTH_METHODS: Final = ("none", "client_secret_post", "client_secret_basic")
AuthMethod = Literal["none", "client_secret_post", "client_secret_basic"]
GRANT_TYPES: Final = ("authorization_code", "refresh_token")

_Record = TypeVar("_Record")


def dump(record: Any) -> bytes:
    return json.dumps(attrs.asdict(record, recurse=False, value_serializer=_serialize)).encode()


def load(cls: type[_Record], raw: bytes) -> _Record:
    data = json.loads(raw)
    fields = attrs.fields_dict(cls)  # type: ignore[arg-type]
    return cls(**{name: _deserialize(fields[name].type, value) for name, value in data.items() if name in fields})


def _serialize(_instance: Any, _field: Any, value: Any) -> Any:
    if isinstance(value, (frozenset, set, tuple)):
        return sorted(value) if isinstance(value, (frozenset, set)) else list(value)
    return value


def _deserialize(annotation: Any, value: Any) -> Any:
    text = str(annotation)
    if isinstance(value, list):
        return frozenset(value) if "frozenset" in text else tuple(value)
    return value


@attrs.frozen
class Client:
    """A client: registered (RFC 7591), or known by the metadata document its URL id names (CIMD)."""

    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: AuthMethod
    grant_types: tuple[str, ...]
    scope: str
    secret_hash: str | None
    issued_at: int
    application_type: str = "web"
    """`web` or `native` (SEP-837); records stored before it existed load as `web`."""

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def document_host(self) -> str | None:
        """For a client known by its metadata document: host[:port] of its URL (the consent page shows it). The
        port is kept: two publishers on one host but different ports are different origins."""
        if not self.client_id.startswith(("https://", "http://")):
            return None
        return urlsplit(self.client_id).netloc.rpartition("@")[2]


@attrs.frozen
class PendingAuthorization:
    """An /authorize request that passed validation, waiting for consent and the identity provider."""

    request_id: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    state: str | None
    scopes: frozenset[str]
    resource: str
    consented: bool = False


@attrs.frozen
class AuthorizationCode:
    code_hash: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    scopes: frozenset[str]
    resource: str
    subject: str
    grant_id: str
    expires_at: int


@attrs.frozen
class Grant:
    """One user's authorization of one client: the family of tokens a code or refresh chain produced."""

    grant_id: str
    client_id: str
    subject: str
    scopes: frozenset[str]
    resource: str
    created_at: int


@attrs.frozen
class RefreshToken:
    token_hash: str
    grant_id: str
    client_id: str
    scopes: frozenset[str]
    expires_at: int


@attrs.frozen
class AccessInfo:
    """What a verified access token says: who, which client, which scopes, until when."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    expires_at: int
    token_id: str
    audience: tuple[str, ...] = ()
    grant_id: str | None = None
    actor: str | None = None
    """Who the token was exchanged for (its `act.sub`, RFC 8693); None for a token issued to its own client."""

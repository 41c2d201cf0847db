"""The protected resource: its metadata (RFC 9728), its `WWW-Authenticate` challenges (RFC 6750 sec. 3) and
the guard that turns an `Authorization` header into verified, sufficiently scoped `AccessInfo`.

Pure helpers and one small class; the transport maps `Unauthorized` (401) and `InsufficientScope` (403) to
responses and sets `WWW-Authenticate` from `challenge_for`.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from refserver.config import Settings
from refserver.errors import InsufficientScope, Unauthorized
from refserver.oauth.models import AccessInfo
from refserver.oauth.verifier import TokenVerifier, check_token_shape

RESOURCE_NAME: Final = "MCP Feature Reference Server (refserver)"
WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"
OFFLINE_ACCESS: Final = "offline_access"


def resource_metadata_url(settings: Settings) -> str:
    """RFC 9728 sec. 3.1: the well-known segment goes between the host and the resource's path,
    e.g. http://localhost:3232/mcp -> http://localhost:3232/.well-known/oauth-protected-resource/mcp."""
    parts = urlsplit(settings.resource)
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{parts.path.rstrip('/')}"


def resource_metadata_path(settings: Settings) -> str:
    """The path the metadata route is served at (what `resource_metadata_url` points to)."""
    return urlsplit(resource_metadata_url(settings)).path


def protected_resource_metadata(settings: Settings) -> dict[str, Any]:
    return {
        "resource": settings.resource,
        "authorization_servers": [settings.issuer],
        # The 2026-07-28 authorization spec: refresh tokens are not a resource requirement, so no offline_access.
        "scopes_supported": [scope for scope in settings.scopes_supported if scope != OFFLINE_ACCESS],
        "bearer_methods_supported": ["header"],
        "resource_name": RESOURCE_NAME,
        "resource_documentation": settings.base_url,
    }


def _attribute_text(value: str) -> str:
    """RFC 6750 sec. 3: `error` and `error_description` may only use %x20-21 / %x23-5B / %x5D-7E. Anything
    else (quotes, backslashes, CR/LF, non-ASCII) is replaced, so no value can break out of its quotes."""
    return "".join(
        c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "'" if c == '"' else "/" if c == "\\" else "?"
        for c in value
    )


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string (after `_attribute_text` nothing needs escaping, but escape anyway)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(
    settings: Settings, *, error: str | None = None, description: str | None = None, scope: str | None = None
) -> str:
    """`Bearer resource_metadata="...", scope="mcp"`, plus `error` / `error_description` when given.

    `scope` defaults to the scope the MCP endpoints require. RFC 6750 sec. 3.1: no `error` when the request
    carried no credentials at all.
    """
    params = [("resource_metadata", resource_metadata_url(settings))]
    scope = settings.required_scope if scope is None else scope
    if scope:
        params.append(("scope", scope))
    if error:
        params.append(("error", error))
    if description:
        params.append(("error_description", description))
    return "Bearer " + ", ".join(f"{name}={_quoted(_attribute_text(value))}" for name, value in params)


def challenge_for(settings: Settings, exc: Unauthorized | InsufficientScope) -> str:
    """The `WWW-Authenticate` value for a refusal raised by `ResourceGuard.authenticate`."""
    if isinstance(exc, InsufficientScope):
        return www_authenticate(settings, error="insufficient_scope", description=exc.message, scope=exc.required)
    return www_authenticate(settings, error=exc.error, description=exc.message if exc.error else None)


def bearer_token(authorization_header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750 sec. 2.1)."""
    if authorization_header is None or not authorization_header.strip():
        raise Unauthorized("authentication required: send Authorization: Bearer <token>", error=None)
    scheme, _, credentials = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        # RFC 6750 sec. 3: a client that tried an unsupported scheme gets a challenge without an error code.
        raise Unauthorized("authentication required: use the Bearer scheme", error=None)
    token = credentials.strip()
    check_token_shape(token)
    return token


class ResourceGuard:
    """Decides whether a request may use the MCP endpoints."""

    def __init__(self, verifier: TokenVerifier, settings: Settings) -> None:
        self.verifier = verifier
        self._required = frozenset(settings.required_scope.split())
        self._required_text = settings.required_scope

    async def authenticate(self, authorization_header: str | None) -> AccessInfo:
        """Verified token facts; raises Unauthorized (401), InsufficientScope (403) or AuthServerUnavailable (503)."""
        info = await self.verifier.verify(bearer_token(authorization_header))
        if not self._required <= info.scopes:
            raise InsufficientScope(f"the token lacks the scope {self._required_text!r}", required=self._required_text)
        return info

    def require_scopes(self, info: AccessInfo, needed: frozenset[str], operation: str) -> None:
        """Step-up: raise InsufficientScope (403) unless the token has `needed`. The challenge names every scope
        the operation needs (the endpoint's and its own) at once, so one new authorization is enough."""
        if needed <= info.scopes:
            return
        required = " ".join(sorted(self._required | needed))
        missing = " ".join(sorted(needed - info.scopes))
        raise InsufficientScope(f"{operation} needs the scope {missing!r}", required=required)

"""What every MCP request passes before anything else: Host/Origin, then the bearer token."""

from __future__ import annotations

from quart import request

from refserver.oauth.models import AccessInfo
from refserver.oauth.resource import bearer_token
from refserver.protocol.core import CallerToken
from refserver.protocol.jsonrpc import ParsedBody, Request
from refserver.transport.services import Services


async def admit_access(
    services: Services, host: str | None, origin: str | None, authorization: str | None
) -> AccessInfo | None:
    """What the request's token says (None when authentication is off).

    DNS-rebinding checks come first (a hostile page must learn nothing, not even "401"); then the
    token: 401/403/503 are raised as Unauthorized / InsufficientScope / AuthServerUnavailable.
    """
    services.origin_policy.check(host, origin)
    if services.guard is None:
        return None
    return await services.guard.authenticate(authorization)


async def admit_headers(
    services: Services, host: str | None, origin: str | None, authorization: str | None
) -> str | None:
    """The subject the request acts for (None when authentication is off); see `admit_access`."""
    access = await admit_access(services, host, origin, authorization)
    return access.subject if access is not None else None


async def admit(services: Services) -> AccessInfo | None:
    """`admit_access` for the Quart request being handled (the legacy transport)."""
    headers = request.headers
    return await admit_access(services, headers.get("Host"), headers.get("Origin"), headers.get("Authorization"))


def caller_token(access: AccessInfo | None, authorization: str | None) -> CallerToken | None:
    """The admitted request's bearer token, for the features' token exchange (None with authentication off)."""
    if access is None:
        return None
    return CallerToken(bearer_token(authorization))


def admit_operations(services: Services, access: AccessInfo | None, parsed: ParsedBody) -> None:
    """Step-up authorization: 403 `insufficient_scope` for a call whose tool needs scopes the token lacks.

    Checked on the parsed body, before anything is delivered or answered, so both eras refuse it the same way
    (an HTTP 403 with the challenge) and a client can come back with the larger scope and retry.
    """
    if services.guard is None or access is None:
        return
    features = services.core.features
    for message in parsed.messages:
        if isinstance(message, Request):
            needed = features.scopes_for_call(message.method, message.params)
            if needed:
                services.guard.require_scopes(access, needed, f"the tool {(message.params or {}).get('name')!r}")

"""What every MCP request passes before anything else: Host/Origin, then the bearer token."""

from __future__ import annotations

from quart import request

from refserver.oauth.models import AccessInfo
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


async def admit(services: Services) -> str | None:
    """`admit_headers` for the Quart request being handled (the legacy transport)."""
    headers = request.headers
    return await admit_headers(services, headers.get("Host"), headers.get("Origin"), headers.get("Authorization"))

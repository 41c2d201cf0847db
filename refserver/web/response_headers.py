"""Response headers every answer carries, and CORS for browser-based MCP clients.

CORS on the MCP endpoints follows the Origin policy of `origins.py` (the same origins that pass the
DNS-rebinding check), and exposes `Mcp-Session-Id`: without that a browser client cannot read its session
id (the seed forgets it). Public OAuth documents are readable from any origin.
"""

from __future__ import annotations

from typing import Final

from quart import Blueprint, Response, request

from refserver.config import Settings
from refserver.web.origins import OriginPolicy

MCP_PATHS: Final = frozenset({"/mcp", "/sse", "/message"})
PUBLIC_CORS_PREFIXES: Final = ("/.well-known/", "/register", "/token", "/introspect", "/revoke")
ALLOWED_REQUEST_HEADERS: Final = (
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID"
)
EXPOSED_HEADERS: Final = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"
PREFLIGHT_MAX_AGE: Final = "600"
HSTS: Final = "max-age=63072000; includeSubDomains"


def security_headers(settings: Settings, content_type: str | None) -> list[tuple[str, str]]:
    """The headers every answer carries (pages also forbid framing and everything their markup does not need)."""
    headers = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]
    if (content_type or "").startswith("text/html"):
        headers.append(("X-Frame-Options", "DENY"))
        headers.append(
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
        )
    if settings.base_url.startswith("https://"):
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def mcp_cors_headers(origin: str | None, policy: OriginPolicy) -> list[tuple[str, str]]:
    """CORS on the MCP endpoints: only for origins the DNS-rebinding policy admits."""
    if origin is None or not policy.allows_origin(origin):
        return []
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", EXPOSED_HEADERS),
        ("Vary", "Origin"),
    ]


def add_security_headers(response: Response, settings: Settings) -> Response:
    for name, value in security_headers(settings, response.mimetype):
        response.headers.setdefault(name, value)
    return response


def add_cors_headers(response: Response, policy: OriginPolicy) -> Response:
    origin = request.headers.get("Origin")
    if origin is None:
        return response
    path = request.path
    if path in MCP_PATHS:
        for name, value in mcp_cors_headers(origin, policy):
            if name == "Vary":
                response.vary.add(value)
            else:
                response.headers[name] = value
    elif path.startswith(PUBLIC_CORS_PREFIXES):
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        response.headers.setdefault("Access-Control-Expose-Headers", EXPOSED_HEADERS)
        if request.method == "OPTIONS":
            # Quart answers the preflight itself; it must also allow the headers MCP clients send
            # (the SDKs add MCP-Protocol-Version to discovery requests).
            response.headers.setdefault("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            response.headers.setdefault("Access-Control-Allow-Headers", ALLOWED_REQUEST_HEADERS)
            response.headers.setdefault("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
    return response


def create_blueprint(policy: OriginPolicy) -> Blueprint:
    blueprint = Blueprint("cors", __name__)

    @blueprint.route("/mcp", methods=["OPTIONS"])
    @blueprint.route("/sse", methods=["OPTIONS"])
    @blueprint.route("/message", methods=["OPTIONS"])
    async def preflight() -> Response:
        origin = request.headers.get("Origin")
        if origin is None or not policy.allows_origin(origin):
            return Response("", status=403, content_type="text/plain")
        return Response(
            "",
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_REQUEST_HEADERS,
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                "Vary": "Origin",
            },
        )

    return blueprint

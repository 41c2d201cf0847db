"""`GET /health` (JSON) and `GET /` (the splash page)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any, Final

import trio
from quart import Blueprint, Response

from refserver import __version__
from refserver.backend.factory import Backend
from refserver.errors import BackendUnavailable
from refserver.oauth import resource
from refserver.oauth.verifier import TokenVerifier
from refserver.protocol.jsonrpc import encode_json
from refserver.protocol.lifecycle import SUPPORTED_VERSIONS
from refserver.transport.services import Services

HTML_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


BACKEND_PING_TIMEOUT: Final = 1.0
"""/health must answer quickly even when the backend does not."""


async def health_document(
    services: Services, verifier: TokenVerifier | None, backend: Backend, running_tasks: int = 0
) -> dict[str, Any]:
    stats = services.registry.statistics()
    backend_state = "ok"
    with trio.move_on_after(BACKEND_PING_TIMEOUT) as waited:
        try:
            await backend.kv.ping()
        except BackendUnavailable:
            backend_state = "unavailable"
    if waited.cancelled_caught:
        backend_state = "unavailable"
    auth_state = verifier.state if verifier is not None else "off"
    if stats["draining"]:
        status = "draining"
    elif backend_state != "ok" or auth_state == "degraded":
        status = "degraded"
    else:
        status = "ok"
    auth: dict[str, Any] = {"mode": services.settings.auth_mode, "state": auth_state}
    if services.settings.auth_mode != "none":
        auth["issuer"] = services.settings.issuer
    return {
        "status": status,
        "version": __version__,
        "backend": {"kind": backend.kind, "state": backend_state},
        "auth": auth,
        "sessions": stats["sessions"],
        "inFlightRequests": stats["in_flight_requests"],
        "runningTasks": running_tasks,
    }


def create_blueprint(
    services: Services,
    *,
    verifier: TokenVerifier | None,
    backend: Backend,
    running_tasks: Callable[[], int] = lambda: 0,
) -> Blueprint:
    blueprint = Blueprint("pages", __name__)
    settings = services.settings

    if verifier is not None:

        @blueprint.get("/.well-known/oauth-protected-resource")
        @blueprint.get(resource.resource_metadata_path(settings))
        async def protected_resource_metadata() -> Response:
            return Response(
                encode_json(resource.protected_resource_metadata(settings)),
                content_type="application/json",
                headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
            )

    @blueprint.get("/health")
    async def health() -> Response:
        document = await health_document(services, verifier, backend, running_tasks())
        status = 200 if document["status"] == "ok" else 503
        return Response(
            encode_json(document),
            status=status,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    @blueprint.get("/")
    async def splash() -> Response:
        degraded = verifier is not None and verifier.state == "degraded"
        return Response(
            splash_html(services, degraded=degraded),
            content_type="text/html; charset=utf-8",
            headers=HTML_SECURITY_HEADERS,
        )

    return blueprint


def splash_html(services: Services, *, degraded: bool = False) -> str:
    settings = services.settings
    mcp_url = html.escape(settings.mcp_url)
    sse_url = html.escape(f"{settings.base_url}/sse")
    features = ", ".join(html.escape(f) for f in settings.features)
    versions = ", ".join(SUPPORTED_VERSIONS)
    tools = "".join(
        f"<li><code>{html.escape(t.definition.name)}</code> — {html.escape(t.definition.description or '')}</li>"
        for t in services.core.features.catalog.tools
        if not t.definition.name.startswith("test_")
    )
    warning = (
        '<p class="warning" role="alert"><strong>Degraded:</strong> the authorization server at '
        f"<code>{html.escape(settings.issuer)}</code> cannot be reached, so MCP requests are refused "
        "(503) until it is back. This server recovers by itself.</p>"
        if degraded
        else ""
    )
    auth_note = (
        "Authentication is <strong>off</strong> (<code>REFSERVER_AUTH_MODE=none</code>): local development only."
        if settings.auth_mode == "none"
        else "Authentication: OAuth 2.1 with PKCE (<code>"
        + html.escape(settings.auth_mode)
        + "</code>). Clients discover the authorization server <code>"
        + html.escape(settings.issuer)
        + '</code> from <a href="/.well-known/oauth-protected-resource/mcp">the protected resource metadata</a>'
        + " and sign in through its identity provider (a mock one for demos: pick any user id)."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>refserver — MCP reference server</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}}
code,pre{{background:#f3f3f3;padding:.1rem .3rem;border-radius:4px}} pre{{padding:.8rem;overflow:auto}}
.banner{{padding:.6rem 1rem;border-radius:6px;background:#eef6ee;border:1px solid #9c9}}
.warning{{padding:.6rem 1rem;border-radius:6px;background:#fdecea;border:1px solid #e99}}
</style></head>
<body>
<h1>refserver</h1>
{warning}
<p>A production-grade <a href="https://modelcontextprotocol.io">Model Context Protocol</a> server:
every MCP feature over Streamable HTTP and the legacy SSE transport.</p>
<p class="banner">{auth_note}</p>
<h2>Connect</h2>
<ul>
<li>Streamable HTTP (recommended): <code>{mcp_url}</code></li>
<li>Legacy HTTP+SSE: <code>{sse_url}</code></li>
</ul>
<p>With the MCP Inspector:</p>
<pre>npx -y @modelcontextprotocol/inspector
# Transport: Streamable HTTP, URL: {mcp_url}</pre>
<p>Protocol versions: {versions}. Feature modules: {features}.</p>
<h2>Tools</h2><ul>{tools}</ul>
<p>Resources: 100 at <code>test://static/resource/{{id}}</code> (10 per page, subscribable);
prompts <code>simple_prompt</code>, <code>complex_prompt</code>, <code>resource_prompt</code>;
completions; logging. Health: <a href="/health">/health</a>.</p>
</body></html>
"""

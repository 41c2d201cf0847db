"""Peers P, PJ and PJA: the official `mcp` SDK's high-level server with the same `echo` tool, on uvicorn.

Stateful Streamable HTTP (sessions, protocol 2025-11-25) like refserver. Three configurations:

- default (P): what `MCPServer.run(transport="streamable-http")` serves: every POST answered as an SSE stream;
- `--json` (PJ): `json_response=True`, a plain JSON answer as refserver gives for an immediate result;
- `--json --auth-server URL --resource URL` (PJA): PJ behind the SDK's own bearer-token middleware, verifying the
  same ES256 JWT that refserver's embedded authorization server at URL issued for the resource URL, through the
  SDK's `TokenVerifier` interface (`bench/peers/jwt_verifier.py`: signature, `iss`, `aud`, `exp`, remembered per
  token until it expires, as refserver's own cache does).

The tool is `async def`: the SDK runs a plain `def` tool in a worker thread, which would only slow P down.

    python -m bench.peers.sdk_echo_server --port 8000 [--json] [--auth-server URL --resource URL]
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from bench.peers.jwt_verifier import CachingJwtVerifier


def build_server(auth_server: str | None, resource: str | None) -> MCPServer:
    if auth_server is None or resource is None:
        server = MCPServer("sdk-echo", log_level="WARNING")
    else:
        server = MCPServer(
            "sdk-echo",
            log_level="WARNING",
            token_verifier=CachingJwtVerifier(issuer=auth_server, resource=resource),
            auth=AuthSettings(
                issuer_url=auth_server,  # type: ignore[arg-type]  # pydantic parses the URL
                resource_server_url=resource,  # type: ignore[arg-type]
                validate_token_resource=True,
            ),
        )

    @server.tool(description="Echoes back the input")
    async def echo(message: str) -> str:
        return f"Echo: {message}"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--json", action="store_true", help="answer with JSON instead of SSE (json_response=True)")
    parser.add_argument("--auth-server", help="issuer whose JWTs to require (its JWKS is fetched on first use)")
    parser.add_argument("--resource", help="the resource (audience) those JWTs must be issued for")
    args = parser.parse_args()
    if (args.auth_server is None) != (args.resource is None):
        parser.error("--auth-server and --resource go together")
    server = build_server(args.auth_server, args.resource)
    app = server.streamable_http_app(json_response=args.json, host=args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""Peer P: the official `mcp` SDK's high-level server with the same `echo` tool, on uvicorn, no auth.

Stateful Streamable HTTP (sessions, protocol 2025-11-25) like refserver. Two configurations:

- default (P): what `MCPServer.run(transport="streamable-http")` serves: every POST answered as an SSE stream;
- `--json` (P-json): `json_response=True`, a plain JSON answer as refserver gives for an immediate result.

The tool is `async def`: the SDK runs a plain `def` tool in a worker thread, which would only slow P down.

    python -m bench.peers.sdk_echo_server --port 8000 [--json]
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("sdk-echo", log_level="WARNING")


@server.tool(description="Echoes back the input")
async def echo(message: str) -> str:
    return f"Echo: {message}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--json", action="store_true", help="answer with JSON instead of SSE (json_response=True)")
    args = parser.parse_args()
    app = server.streamable_http_app(json_response=args.json, host=args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

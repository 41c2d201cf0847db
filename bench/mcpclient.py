"""MCP session set-up for the benchmark: a bearer token by the real OAuth flow, then raw MCP requests."""

from __future__ import annotations

import json
from typing import Any, Final

import httpx

from bench.rawhttp import Connection, HttpError, RawResponse

PROTOCOL_VERSION: Final = "2025-11-25"
BENCH_USER: Final = "bench-user"
INITIALIZE: Final = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "refserver-bench", "version": "0"},
        },
    }
).encode()
INITIALIZED: Final = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
ECHO_CALL: Final = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}'
)
SUBSCRIBE_URI: Final = "test://static/resource/1"
SUBSCRIBE: Final = json.dumps(
    {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": SUBSCRIBE_URI}}
).encode()
POST_HEADERS: Final = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def obtain_token(port: int) -> str:
    """A bearer token from the server's embedded authorization server, through the whole OAuth flow."""
    from refserver.oauth.headless import obtain_tokens

    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        tokens = await obtain_tokens(http, f"http://127.0.0.1:{port}/mcp", user=BENCH_USER, client_name="bench")
    return str(tokens["access_token"])


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def session_headers(token: str, session_id: str) -> dict[str, str]:
    return {
        **POST_HEADERS,
        **auth_headers(token),
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": PROTOCOL_VERSION,
    }


def _expect(response: RawResponse, status: int, step: str) -> RawResponse:
    if response.status != status:
        raise HttpError(f"{step}: expected HTTP {status}, got {response.status}: {response.body[:300]!r}")
    return response


async def open_session(conn: Connection, token: str, path: str = "/mcp") -> str:
    """initialize + notifications/initialized on `conn`; returns the session id."""
    init = _expect(
        await conn.request("POST", path, {**POST_HEADERS, **auth_headers(token)}, INITIALIZE), 200, "initialize"
    )
    session_id = init.header("mcp-session-id")
    if not session_id:
        raise HttpError("initialize: no Mcp-Session-Id header")
    _expect(await conn.request("POST", path, session_headers(token, session_id), INITIALIZED), 202, "initialized")
    return session_id


async def call_echo(conn: Connection, token: str, session_id: str, path: str = "/mcp") -> RawResponse:
    response = _expect(await conn.request("POST", path, session_headers(token, session_id), ECHO_CALL), 200, "echo")
    if b"Echo: hi" not in response.body:
        raise HttpError(f"echo: unexpected answer {response.body[:300]!r}")
    return response


async def new_session(port: int, token: str, path: str = "/mcp") -> str:
    """A session on the server at `port`, ready for the flood (one echo call already answered)."""
    conn = await Connection.open("127.0.0.1", port)
    try:
        session_id = await open_session(conn, token, path)
        await call_echo(conn, token, session_id, path)
        return session_id
    finally:
        await conn.aclose()


def jsonrpc_result(body: bytes) -> Any:
    return json.loads(body).get("result")

"""`fetchDownstreamProfile`: a tool that calls another API for the user, with a token exchanged for that API.

The caller's own token never leaves this server (the spec forbids passing it through): the tool asks the
context for a short-lived token whose audience is the downstream API and whose scopes are at most the
caller's (RFC 8693), and sends that one.
"""

from __future__ import annotations

import json
from typing import Any, Final

import httpx
import mcp_types as types

from refserver.errors import TokenExchangeRefused, TokenExchangeUnavailable
from refserver.features.catalog import ToolHandler
from refserver.features.context import FeatureContext
from refserver.features.reference.arguments import BadArgument

DOWNSTREAM_TIMEOUT: Final = 10.0
"""Bound on the whole downstream call (connect, send, read)."""
MAX_DOWNSTREAM_BYTES: Final = 64 * 1024
"""The most of the downstream answer read; a profile is a few hundred bytes."""


def profile_fetcher(api_url: str) -> ToolHandler:
    """The handler for the downstream API at `api_url` (also the audience its tokens are exchanged for)."""

    async def fetch_downstream_profile(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
        scopes = _scopes(arguments)
        try:
            token = await ctx.exchange_token(api_url, scopes)
        except (TokenExchangeUnavailable, TokenExchangeRefused) as error:
            return _error(f"No token for the downstream API: {error}")
        try:
            async with (
                httpx.AsyncClient(timeout=DOWNSTREAM_TIMEOUT) as http,
                http.stream("GET", api_url, headers={"Authorization": f"Bearer {token}"}) as response,
            ):
                body = await _bounded_body(response)
        except httpx.HTTPError as exc:
            return _error(f"The downstream API did not answer: {type(exc).__name__}")
        if response.status_code != 200:
            return _error(f"The downstream API answered HTTP {response.status_code}: {body[:200]!r}")
        try:
            profile = json.loads(body)
        except ValueError:
            return _error("The downstream API answered something that is not JSON")
        if not isinstance(profile, dict):
            return _error("The downstream API answered JSON that is not an object")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"Downstream profile: {json.dumps(profile, sort_keys=True)}")],
            structured_content=profile,
        )

    return fetch_downstream_profile


def _scopes(arguments: dict[str, Any]) -> frozenset[str] | None:
    scopes = arguments.get("scopes")
    if scopes is None:
        return None
    if not isinstance(scopes, list) or not all(isinstance(scope, str) and scope for scope in scopes):
        raise BadArgument("'scopes' must be a list of scope names")
    return frozenset(scopes)


async def _bounded_body(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_DOWNSTREAM_BYTES:
            raise httpx.DecodingError(f"the answer is larger than {MAX_DOWNSTREAM_BYTES} bytes")
    return bytes(body)


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)

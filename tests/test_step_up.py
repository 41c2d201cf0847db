"""Step-up authorization: a tool that needs a scope beyond the endpoint's own, in both protocol eras.

A token with only `mcp` may use every other tool; `whoAmI` answers 403 with the RFC 6750 challenge naming every
scope it needs, in one `WWW-Authenticate` (the 2026-07-28 authorization spec, "Scope Challenge Handling"); the
client comes back to the embedded authorization server for the larger scope and the same call succeeds. The
official `mcp` client does the whole dance on its own, and so is the strongest witness.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from refserver.app import check_tool_scopes
from refserver.config import Settings
from refserver.errors import ConfigError
from refserver.features.catalog import Catalog, FeatureIndex
from refserver.features.reference.tools import ADMIN_SCOPE, build_tools
from refserver.oauth.headless import obtain_tokens
from tests.conftest import (
    MODERN_VERSION,
    POST_HEADERS,
    ServerProcess,
    free_port,
    initialize,
    modern_request,
    server_env,
)
from tests.test_oauth_flow import MemoryTokenStorage, Person, oauth_provider

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

FLOW_TIMEOUT = 60.0
STEP_UP_TOOL = "whoAmI"
CHALLENGE_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    process = ServerProcess(
        port,
        server_env(base_url=f"http://127.0.0.1:{port}", auth_mode="embedded", features="reference"),
        tmp_path_factory.mktemp("step-up") / "server.log",
    )
    process.start()
    yield process
    process.stop()


def challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    return dict(CHALLENGE_PARAM.findall(header))


async def token_for(http: httpx.AsyncClient, server: ServerProcess, scope: str) -> str:
    tokens = await obtain_tokens(http, server.mcp_url, user="alice", scope=scope)
    assert set(tokens["scope"].split()) == set(scope.split())
    return str(tokens["access_token"])


def call(name: str, request_id: int = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def assert_step_up_refusal(response: httpx.Response, server: ServerProcess, request_id: int) -> None:
    assert response.status_code == 403, response.text
    params = challenge(response)
    assert params["error"] == "insufficient_scope"
    # Every scope the call needs, in one challenge: the endpoint's and the tool's.
    assert params["scope"].split() == ["mcp", ADMIN_SCOPE]
    assert params["resource_metadata"] == f"{server.url}/.well-known/oauth-protected-resource/mcp"
    assert ADMIN_SCOPE in params["error_description"]
    error = response.json()
    assert error["id"] == request_id and error["error"]["message"]


async def test_a_token_without_the_tools_scope_gets_403_then_the_larger_scope_succeeds_2025(
    server: ServerProcess,
) -> None:
    with trio.fail_after(FLOW_TIMEOUT):
        async with httpx.AsyncClient(timeout=10.0) as http:
            narrow = await token_for(http, server, "mcp")
            wide = await token_for(http, server, f"mcp {ADMIN_SCOPE}")
            for token, allowed in ((narrow, False), (wide, True)):
                auth = {"Authorization": f"Bearer {token}"}
                async with httpx.AsyncClient(timeout=10.0, headers=auth) as client:
                    session = await initialize(client, server.mcp_url)
                    headers = {**POST_HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
                    echoed = await client.post(
                        server.mcp_url,
                        json=call("echo") | {"params": {"name": "echo", "arguments": {"message": "hi"}}},
                        headers=headers,
                    )
                    assert echoed.status_code == 200 and "Echo: hi" in echoed.text
                    answer = await client.post(server.mcp_url, json=call(STEP_UP_TOOL, 8), headers=headers)
                    if allowed:
                        assert answer.status_code == 200, answer.text
                        assert "You are alice, speaking MCP 2025-11-25." in answer.text
                    else:
                        assert_step_up_refusal(answer, server, 8)


async def test_a_token_without_the_tools_scope_gets_403_then_the_larger_scope_succeeds_2026(
    server: ServerProcess,
) -> None:
    with trio.fail_after(FLOW_TIMEOUT):
        async with httpx.AsyncClient(timeout=10.0) as http:
            narrow = await token_for(http, server, "mcp")
            body, headers = modern_request("tools/call", {"name": STEP_UP_TOOL, "arguments": {}}, request_id="s-1")
            refused = await http.post(
                server.mcp_url, json=body, headers={**headers, "Authorization": f"Bearer {narrow}"}
            )
            assert_step_up_refusal(refused, server, "s-1")  # type: ignore[arg-type]

            wide = await token_for(http, server, f"mcp {ADMIN_SCOPE}")
            answered = await http.post(
                server.mcp_url, json=body, headers={**headers, "Authorization": f"Bearer {wide}"}
            )
            assert answered.status_code == 200, answered.text
            assert f"You are alice, speaking MCP {MODERN_VERSION}." in answered.text


async def test_resource_metadata_lists_the_step_up_scope_but_not_offline_access(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        document = (await http.get(f"{server.url}/.well-known/oauth-protected-resource/mcp")).json()
        assert document["scopes_supported"] == ["mcp", ADMIN_SCOPE]
        # The authorization server still grants refresh tokens.
        metadata = (await http.get(f"{server.url}/.well-known/oauth-authorization-server")).json()
        assert "offline_access" in metadata["scopes_supported"]


@pytest.mark.parametrize("mode", ["legacy", MODERN_VERSION])
async def test_the_official_client_steps_up_by_itself(server: ServerProcess, mode: str) -> None:
    person = Person("bob")
    storage = MemoryTokenStorage()
    provider = oauth_provider(server.mcp_url, person, storage)
    with trio.fail_after(FLOW_TIMEOUT):
        async with (
            httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=60)) as http,
            Client(streamable_http_client(server.mcp_url, http_client=http), mode=mode, cache=None) as client,
        ):
            echoed = await client.call_tool("echo", {"message": "before"})
            assert echoed.content[0].text == "Echo: before"  # type: ignore[union-attr]
            assert storage.tokens is not None and ADMIN_SCOPE not in (storage.tokens.scope or "").split()
            who = await client.call_tool(STEP_UP_TOOL, {})
            assert who.content[0].text.startswith("You are bob, speaking MCP")  # type: ignore[union-attr]
            after = await client.call_tool("echo", {"message": "after"})
            assert after.content[0].text == "Echo: after"  # type: ignore[union-attr]

    # Two authorizations: the first with the endpoint's scope (from the 401), the second for the union.
    assert len(person.authorization_urls) == 2
    first, second = (set(parse_qs(urlsplit(url).query)["scope"][0].split()) for url in person.authorization_urls)
    assert "mcp" in first and ADMIN_SCOPE not in first
    assert {"mcp", ADMIN_SCOPE} <= second
    assert storage.tokens is not None and ADMIN_SCOPE in (storage.tokens.scope or "").split()


def test_a_tool_scope_the_embedded_server_cannot_grant_is_refused_at_start_up(tmp_path: Path) -> None:
    features = FeatureIndex.build([Catalog(tools=build_tools())])
    check_tool_scopes(Settings(), features)  # the defaults grant mcp:admin
    narrow = Settings(scopes_supported=("mcp", "offline_access"))
    with pytest.raises(ConfigError, match="whoAmI"):
        check_tool_scopes(narrow, features)
    # An external authorization server may grant it anyway: only a warning there.
    check_tool_scopes(Settings(scopes_supported=("mcp",), auth_mode="jwt"), features)
    check_tool_scopes(Settings(scopes_supported=("mcp",), auth_mode="none"), features)

"""Token exchange (RFC 8693): a tool calls a downstream API with a token exchanged for it, never the caller's.

The embedded authorization server exchanges in-process; an MCP server in `jwt` mode exchanges at the standalone
authorization server's token endpoint with its resource-server credentials. Either way the downstream API (a real
HTTP server that verifies tokens against the issuer's JWKS, tests/downstream_api.py) sees a short-lived token for
its own audience, with at most the caller's scopes and `act` naming the MCP server, and never the caller's token.
The token endpoint's side (who may exchange, for which audience, narrowing only) is checked over raw HTTP.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from refserver.oauth.headless import obtain_tokens
from refserver.oauth.token_exchange import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT
from tests.auth_servers import auth_server, free_ports, mcp_server, running
from tests.conftest import MODERN_VERSION, ServerProcess
from tests.downstream_api import DownstreamApi

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

TEST_TIMEOUT = 60.0
RS_ID = "exchange-resource-server"
RS_SECRET = "exchange-resource-server-secret"
EXCHANGE_TTL = 120
TOOL = "fetchDownstreamProfile"


@attrs.frozen
class Topology:
    downstream: DownstreamApi
    embedded: ServerProcess
    auth: ServerProcess
    jwt: ServerProcess


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    directory = tmp_path_factory.mktemp("token-exchange")
    embedded_port, as_port, jwt_port = free_ports(3)
    embedded_url, issuer = f"http://127.0.0.1:{embedded_port}", f"http://127.0.0.1:{as_port}"
    with DownstreamApi(embedded_url) as for_embedded, DownstreamApi(issuer) as for_external:
        exchange = {"oauth_exchange_token_ttl": EXCHANGE_TTL, "features": "reference", "log_message_interval": 3600}
        embedded = mcp_server(
            directory,
            port=embedded_port,
            auth_mode="embedded",
            oauth_exchange_audiences=for_embedded.url,
            downstream_api_url=for_embedded.url,
            introspection_client_id=RS_ID,
            introspection_client_secret=RS_SECRET,
            **exchange,
        )
        auth = auth_server(
            directory,
            port=as_port,
            resources=[f"http://127.0.0.1:{jwt_port}/mcp"],
            oauth_exchange_audiences=for_external.url,
            introspection_client_id=RS_ID,
            introspection_client_secret=RS_SECRET,
            oauth_exchange_token_ttl=EXCHANGE_TTL,
        )
        jwt = mcp_server(
            directory,
            port=jwt_port,
            auth_mode="jwt",
            auth_server_url=issuer,
            downstream_api_url=for_external.url,
            introspection_client_id=RS_ID,
            introspection_client_secret=RS_SECRET,
            **exchange,
        )
        with running(embedded, auth), running(jwt):
            yield Topology(for_embedded, embedded, auth, jwt)


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


async def sign_in(server: ServerProcess, scope: str, user: str = "alice") -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=20.0) as http:
        return await obtain_tokens(http, server.mcp_url, user=user, scope=scope)


async def exchange(
    issuer: str, subject_token: str, *, credentials: tuple[str, str] | None = (RS_ID, RS_SECRET), **form: str
) -> httpx.Response:
    body = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **form,
    }
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await http.post(f"{issuer}/token", data=body, auth=credentials)


async def call_tool(server: ServerProcess, token: str, mode: str, arguments: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(20.0)) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), mode=mode, cache=None) as client,
    ):
        return await client.call_tool(TOOL, arguments)


@pytest.mark.parametrize("mode", ["legacy", MODERN_VERSION])
async def test_a_tool_calls_the_downstream_api_with_an_exchanged_token_in_both_eras(
    topology: Topology, mode: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        tokens = await sign_in(topology.embedded, "mcp mcp:admin")
        seen_before = len(topology.downstream.authorizations)
        result = await call_tool(topology.embedded, tokens["access_token"], mode, {})
        narrowed = await call_tool(topology.embedded, tokens["access_token"], mode, {"scopes": ["mcp"]})
    assert not result.is_error, result.content
    profile = result.structured_content
    assert profile["sub"] == "alice"
    assert profile["aud"] == topology.downstream.url
    assert profile["act"] == {"sub": topology.embedded.mcp_url}  # the MCP server acted for alice
    assert profile["scope"] == "mcp mcp:admin"  # by default the caller's scopes, never more
    assert profile["exp"] - profile["iat"] <= EXCHANGE_TTL
    assert narrowed.structured_content["scope"] == "mcp"
    sent = topology.downstream.authorizations[seen_before:]
    assert sent and f"Bearer {tokens['access_token']}" not in sent  # the client's own token never went on


async def test_a_wider_scope_is_refused_and_nothing_is_sent_downstream(topology: Topology) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        tokens = await sign_in(topology.embedded, "mcp")
        seen_before = len(topology.downstream.authorizations)
        result = await call_tool(topology.embedded, tokens["access_token"], MODERN_VERSION, {"scopes": ["mcp:admin"]})
    assert result.is_error
    assert "invalid_scope" in result.content[0].text and "mcp:admin" in result.content[0].text
    assert len(topology.downstream.authorizations) == seen_before


async def test_an_mcp_server_in_jwt_mode_exchanges_at_the_external_authorization_server(topology: Topology) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        tokens = await sign_in(topology.jwt, "mcp")
        result = await call_tool(topology.jwt, tokens["access_token"], MODERN_VERSION, {})
        again = await call_tool(topology.jwt, tokens["access_token"], "legacy", {})
    assert not result.is_error, result.content
    # One exchange serves both calls (each exchange mints a new jti): the answer is reused until near its expiry.
    assert again.structured_content == result.structured_content
    profile = result.structured_content
    assert profile["sub"] == "alice" and profile["scope"] == "mcp"
    assert profile["act"] == {"sub": RS_ID}  # authenticated at the token endpoint with its credentials
    assert profile["aud"] != topology.jwt.mcp_url


async def test_the_token_endpoint_narrows_and_never_widens(topology: Topology) -> None:
    issuer, audience = topology.embedded.url, topology.downstream.url
    with trio.fail_after(TEST_TIMEOUT):
        subject = (await sign_in(topology.embedded, "mcp mcp:admin"))["access_token"]
        narrowed = await exchange(issuer, subject, resource=audience, scope="mcp")
        assert narrowed.status_code == 200, narrowed.text
        answer = narrowed.json()
        assert answer["issued_token_type"] == ACCESS_TOKEN_TYPE and answer["token_type"] == "Bearer"
        assert answer["scope"] == "mcp" and "refresh_token" not in answer
        assert 0 < answer["expires_in"] <= EXCHANGE_TTL
        issued = claims(answer["access_token"])
        assert issued["aud"] == audience and issued["sub"] == "alice" and issued["act"] == {"sub": RS_ID}
        assert issued["exp"] <= claims(subject)["exp"]

        wider = await exchange(issuer, (await sign_in(topology.embedded, "mcp"))["access_token"], resource=audience)
        assert wider.status_code == 200 and wider.json()["scope"] == "mcp"  # no scope asked: the subject's
        widened = await exchange(
            issuer, (await sign_in(topology.embedded, "mcp"))["access_token"], resource=audience, scope="mcp mcp:admin"
        )
        assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"

        foreign = await exchange(issuer, subject, resource="https://elsewhere.example/api")
        assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_target"
        no_target = await exchange(issuer, subject)
        assert no_target.status_code == 400 and no_target.json()["error"] == "invalid_target"
        again = await exchange(issuer, answer["access_token"], resource=audience)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # no chains of exchanges
        garbage = await exchange(issuer, "not-a-token", resource=audience)
        assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_grant"
        actor = await exchange(
            issuer, subject, resource=audience, actor_token=subject, actor_token_type=ACCESS_TOKEN_TYPE
        )
        assert actor.status_code == 400 and actor.json()["error"] == "invalid_request"
        id_token = await exchange(
            issuer, subject, resource=audience, subject_token_type="urn:ietf:params:oauth:token-type:id_token"
        )
        assert id_token.status_code == 400 and id_token.json()["error"] == "invalid_request"

        # The exchanged token is for the downstream API: the MCP endpoint it came from refuses it.
        async with httpx.AsyncClient(timeout=10.0) as http:
            refused = await http.post(
                topology.embedded.mcp_url,
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={
                    "Authorization": f"Bearer {answer['access_token']}",
                    "Accept": "application/json, text/event-stream",
                },
            )
        assert refused.status_code == 401


async def test_only_a_resource_server_may_exchange(topology: Topology) -> None:
    issuer, audience = topology.embedded.url, topology.downstream.url
    with trio.fail_after(TEST_TIMEOUT):
        tokens = await sign_in(topology.embedded, "mcp")
        public_client = await exchange(
            issuer, tokens["access_token"], credentials=None, resource=audience, client_id=tokens["client_id"]
        )
        assert public_client.status_code == 400 and public_client.json()["error"] == "unauthorized_client"
        wrong_secret = await exchange(issuer, tokens["access_token"], credentials=(RS_ID, "wrong"), resource=audience)
        assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"


async def test_without_audiences_there_is_no_exchange_and_no_downstream_tool(
    topology: Topology, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        for server in (topology.embedded, topology.auth):
            metadata = (await http.get(f"{server.url}/.well-known/oauth-authorization-server")).json()
            assert TOKEN_EXCHANGE_GRANT in metadata["grant_types_supported"]
    plain = mcp_server(
        tmp_path,
        auth_mode="embedded",
        features="reference",
        introspection_client_id=RS_ID,
        introspection_client_secret=RS_SECRET,
    )
    with running(plain), trio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(timeout=10.0) as http:
            metadata = (await http.get(f"{plain.url}/.well-known/oauth-authorization-server")).json()
            assert TOKEN_EXCHANGE_GRANT not in metadata["grant_types_supported"]
            tokens = await obtain_tokens(http, plain.mcp_url, user="alice")
        refused = await exchange(plain.url, tokens["access_token"], resource="https://api.example/")
        assert refused.status_code == 400 and refused.json()["error"] == "unsupported_grant_type"
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(20.0)) as http2,
            Client(streamable_http_client(plain.mcp_url, http_client=http2), mode=MODERN_VERSION, cache=None) as client,
        ):
            listed = {tool.name for tool in (await client.list_tools()).tools}
    assert "echo" in listed and TOOL not in listed

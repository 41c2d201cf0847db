"""The full OAuth flow driven by the official `mcp` client and its OAuth provider, in both topologies.

401 -> protected resource metadata -> authorization server metadata -> dynamic registration ->
authorize -> consent -> mock identity provider -> token -> MCP calls -> refresh (rotated). The person's
part (consent page, identity provider) is played over real HTTP by `refserver.oauth.headless`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from refserver.oauth.headless import act_as_person
from tests.conftest import ServerProcess, free_port, server_env

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

FLOW_TIMEOUT = 60.0
SHORT_ACCESS_TTL = 3
"""Seconds an access token lives in these tests, so the client has to refresh within the test."""
REDIRECT_URI = "http://127.0.0.1:5173/oauth/callback"
INTROSPECTION_CREDENTIALS = {"introspection_client_id": "mcp-rs", "introspection_client_secret": "rs-secret-0123456789"}


class MemoryTokenStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None
        self.history: list[OAuthToken] = []
        self.expires_at = 0.0
        """When the client takes the current access token for expired (it counts `expires_in` from receipt)."""

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.history.append(tokens)
        # The SDK notes its expiry just before storing the tokens: this one is a little later, never earlier.
        self.expires_at = time.time() + (tokens.expires_in or 0)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Person:
    """Plays the browser: follows the authorization URL, approves, signs in as `user`."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.final_url: str | None = None
        self.authorization_urls: list[str] = []

    async def redirect_handler(self, authorization_url: str) -> None:
        self.authorization_urls.append(authorization_url)
        async with httpx.AsyncClient(timeout=10.0) as browser:
            self.final_url = await act_as_person(browser, authorization_url, user=self.user)

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.final_url is not None
        assert self.final_url.startswith(REDIRECT_URI)
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.final_url).query).items()}
        return AuthorizationCodeResult(code=query["code"], state=query["state"], iss=query.get("iss"))


def start(port: int, app: str, config: str, log: Path, **settings: Any) -> ServerProcess:
    server = ServerProcess(port, server_env(**settings), log)
    server.start_app(app, config)
    return server


@pytest.fixture(scope="module")
def topologies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """embedded; and one standalone authorization server trusted by a jwt and an introspection server."""
    logs = tmp_path_factory.mktemp("oauth-flow")
    embedded_port, as_port, jwt_port, intro_port = free_port(), free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    jwt_url, intro_url = f"http://127.0.0.1:{jwt_port}", f"http://127.0.0.1:{intro_port}"
    common = {"access_token_ttl": SHORT_ACCESS_TTL, "features": "reference"}
    servers: dict[str, ServerProcess] = {}
    try:
        servers["embedded"] = start(
            embedded_port,
            "refserver.app:app",
            "hypercorn.toml",
            logs / "embedded.log",
            base_url=f"http://127.0.0.1:{embedded_port}",
            auth_mode="embedded",
            **common,
        )
        servers["authorization-server"] = start(
            as_port,
            "refserver.oauth.app:app",
            "hypercorn-auth.toml",
            logs / "as.log",
            auth_server_url=issuer,
            auth_resources=f"{jwt_url}/mcp,{intro_url}/mcp",
            **INTROSPECTION_CREDENTIALS,
            **common,
        )
        servers["jwt"] = start(
            jwt_port,
            "refserver.app:app",
            "hypercorn.toml",
            logs / "jwt.log",
            base_url=jwt_url,
            auth_mode="jwt",
            auth_server_url=issuer,
            **common,
        )
        servers["introspection"] = start(
            intro_port,
            "refserver.app:app",
            "hypercorn.toml",
            logs / "introspection.log",
            base_url=intro_url,
            auth_mode="introspection",
            auth_server_url=issuer,
            **INTROSPECTION_CREDENTIALS,
            **common,
        )
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def oauth_provider(mcp_url: str, person: Person, storage: MemoryTokenStorage) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="refserver flow test",
            redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
    )


@pytest.mark.parametrize("mode", ["embedded", "jwt", "introspection"])
async def test_official_client_completes_the_oauth_flow_and_refreshes(
    mode: str, topologies: dict[str, ServerProcess]
) -> None:
    server = topologies[mode]
    person = Person("alice")
    storage = MemoryTokenStorage()
    provider = oauth_provider(server.mcp_url, person, storage)
    with trio.fail_after(FLOW_TIMEOUT):
        async with (
            httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=300)) as http,
            Client(streamable_http_client(server.mcp_url, http_client=http), mode="legacy", cache=None) as client,
        ):
            echoed = await client.call_tool("echo", {"message": f"hello over {mode}"})
            assert echoed.content[0].text == f"Echo: hello over {mode}"  # type: ignore[union-attr]
            resources = await client.list_resources()
            assert len(resources.resources) == 10
            first_tokens = storage.tokens
            assert first_tokens is not None and first_tokens.refresh_token

            # Let the access token expire: the provider refreshes (the server rotates the refresh token). A real
            # sleep, to just past the expiry: the client and the server both judge it by the wall clock.
            await trio.sleep(storage.expires_at - time.time() + 0.1)
            again = await client.call_tool("add", {"a": 2, "b": 3})
            assert again.content[0].text == "The sum of 2 and 3 is 5."  # type: ignore[union-attr]

    # One person interaction: the refresh needed no browser.
    assert len(person.authorization_urls) == 1
    query = parse_qs(urlsplit(person.authorization_urls[0]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["resource"] == [server.mcp_url]
    assert "mcp" in query["scope"][0].split()
    # The refresh rotated both tokens.
    assert len(storage.history) >= 2
    refreshed = storage.history[-1]
    assert refreshed.access_token != first_tokens.access_token
    assert refreshed.refresh_token and refreshed.refresh_token != first_tokens.refresh_token

    # The rotated-away refresh token is dead, and presenting it again revokes the grant (reuse detection).
    issuer = topologies["authorization-server"].url if mode != "embedded" else server.url
    assert storage.client is not None
    async with httpx.AsyncClient(timeout=10.0) as raw:
        reuse = await raw.post(
            f"{issuer}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": first_tokens.refresh_token,
                "client_id": storage.client.client_id,
            },
        )
        assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
        newest_refresh = await raw.post(
            f"{issuer}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refreshed.refresh_token,
                "client_id": storage.client.client_id,
            },
        )
        assert newest_refresh.status_code == 400 and newest_refresh.json()["error"] == "invalid_grant"
        if mode == "embedded":
            # The embedded verifier consults the revocation store: the newest access token died too.
            # (jwt without a shared store honours it at `exp`; introspection within its cache lifetime.)
            newest = await raw.post(
                server.mcp_url,
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={
                    "Authorization": f"Bearer {refreshed.access_token}",
                    "Accept": "application/json, text/event-stream",
                },
            )
            assert newest.status_code == 401


async def test_without_a_token_the_client_is_sent_to_discovery(topologies: dict[str, ServerProcess]) -> None:
    server = topologies["embedded"]
    async with httpx.AsyncClient(timeout=10.0) as raw:
        refused = await raw.post(
            server.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert refused.status_code == 401
    challenge = refused.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert 'scope="mcp"' in challenge
    assert "error=" not in challenge  # no credentials sent: no error code (RFC 6750 sec. 3.1)

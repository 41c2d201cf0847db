"""The MCP endpoints as an OAuth 2.1 resource server, over real HTTP against real Hypercorn processes.

Tokens are obtained through the real flow (`obtain_tokens`: discovery, registration, PKCE, consent, the mock
identity provider, the token exchange). The external modes run the standalone authorization server as its own
process; a shared redis-server is a real one. One test per security property.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import pytest
import trio

from refserver.oauth.headless import obtain_tokens
from refserver.protocol.sse import SSEDecoder, SSEEvent
from tests.auth_servers import AuthServerProcess, auth_server, free_ports, mcp_server, running
from tests.conftest import INIT_PARAMS, POST_HEADERS, ServerProcess, wait_until
from tests.redis_server import RedisServer

WAIT: Final = 20.0
"""Bound on every poll of another process's state (an external-mode verifier probes every 5 s)."""
QUIET: Final = 1.0
"""How long a stream must stay silent to show that nothing was delivered into it."""
INTROSPECTION_CACHE_TTL: Final = 1
RS_ID, RS_SECRET = "mcp-resource-server", "rs-" + secrets.token_urlsafe(24)
ALLOWED_ORIGIN: Final = "http://localhost:6274"
"""The MCP Inspector's origin: a loopback origin, which the MCP endpoints accept."""
FOREIGN_ORIGIN: Final = "http://evil.example"
LEGACY_INIT_PARAMS: Final = {**INIT_PARAMS, "protocolVersion": "2024-11-05"}
SSE_ACCEPT: Final = {"Accept": "text/event-stream"}
LOOSE_LIMIT: Final = 1000
"""Rate limit of the shared servers: the many token flows of this module must never hit it."""

Json = dict[str, Any]


# --- processes ------------------------------------------------------------------------------------------


@attrs.frozen
class External:
    """One standalone authorization server issuing tokens for four MCP servers that trust it."""

    auth: AuthServerProcess
    jwt_a: ServerProcess
    jwt_b: ServerProcess
    introspection_a: ServerProcess
    introspection_b: ServerProcess


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resource-server")


@pytest.fixture(scope="module")
def embedded(directory: Path) -> Iterator[ServerProcess]:
    # No demo log messages: the isolation tests listen for silence, and one could land in any window.
    server = mcp_server(directory, auth_mode="embedded", rate_limit_per_minute=LOOSE_LIMIT, log_message_interval=3600)
    with running(server):
        yield server


@pytest.fixture(scope="module")
def external(directory: Path) -> Iterator[External]:
    as_port, *ports = free_ports(5)
    issuer = f"http://127.0.0.1:{as_port}"
    auth = auth_server(
        directory,
        port=as_port,
        resources=[f"http://127.0.0.1:{port}/mcp" for port in ports],
        introspection_client_id=RS_ID,
        introspection_client_secret=RS_SECRET,
        rate_limit_per_minute=LOOSE_LIMIT,
    )
    jwt_a, jwt_b = (mcp_server(directory, port=port, auth_mode="jwt", auth_server_url=issuer) for port in ports[:2])
    introspection_a, introspection_b = (
        mcp_server(
            directory,
            port=port,
            auth_mode="introspection",
            auth_server_url=issuer,
            introspection_client_id=RS_ID,
            introspection_client_secret=RS_SECRET,
            introspection_cache_ttl=INTROSPECTION_CACHE_TTL,
        )
        for port in ports[2:]
    )
    with running(auth), running(jwt_a, jwt_b, introspection_a, introspection_b):
        yield External(auth, jwt_a, jwt_b, introspection_a, introspection_b)


# --- small helpers --------------------------------------------------------------------------------------


def new_client() -> httpx.AsyncClient:
    """A client of the test's own, closed before the processes it talks to are stopped (an idle keep-alive
    connection would hold a graceful Hypercorn shutdown for its whole graceful timeout)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(20.0))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rpc(method: str, request_id: int | str | None = 1, params: Json | None = None) -> Json:
    message: Json = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    return message


def echo(message: str, request_id: int | str = 1) -> Json:
    return rpc("tools/call", request_id, {"name": "echo", "arguments": {"message": message}})


def claims_of(token: str) -> Json:
    payload = token.split(".")[1]
    document: Json = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return document


async def tokens_for(http: httpx.AsyncClient, server: ServerProcess, user: str, scope: str | None = None) -> Json:
    return await obtain_tokens(
        http, server.mcp_url, user=user, scope=scope, client_name=f"resource-server tests {user}"
    )


async def access_token(http: httpx.AsyncClient, server: ServerProcess, user: str) -> str:
    token: str = (await tokens_for(http, server, user))["access_token"]
    return token


async def initialize(
    http: httpx.AsyncClient, server: ServerProcess, token: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        server.mcp_url,
        json=rpc("initialize", 0, INIT_PARAMS),
        headers={**POST_HEADERS, **bearer(token), **(headers or {})},
    )


async def open_session(http: httpx.AsyncClient, server: ServerProcess, token: str) -> str:
    """initialize + notifications/initialized with `token`; the session id."""
    response = await initialize(http, server, token)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["protocolVersion"] == INIT_PARAMS["protocolVersion"]
    session_id = response.headers["Mcp-Session-Id"]
    note = await post_in_session(http, server, token, session_id, rpc("notifications/initialized", None))
    assert note.status_code == 202, note.text
    return session_id


def in_session(token: str, session_id: str) -> dict[str, str]:
    return {
        **POST_HEADERS,
        **bearer(token),
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": str(INIT_PARAMS["protocolVersion"]),
    }


async def post_in_session(
    http: httpx.AsyncClient, server: ServerProcess, token: str, session_id: str, message: Json
) -> httpx.Response:
    return await http.post(server.mcp_url, json=message, headers=in_session(token, session_id))


async def assert_echo_works(
    http: httpx.AsyncClient, server: ServerProcess, token: str, session_id: str, text: str = "hello"
) -> None:
    response = await post_in_session(http, server, token, session_id, echo(text, 7))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == 7 and body["result"]["content"][0] == {"type": "text", "text": f"Echo: {text}"}, body


_PARAM: Final = re.compile(r'([A-Za-z_]+)="((?:[^"\\]|\\.)*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer a="1", b="2"` -> ("Bearer", {"a": "1", "b": "2"}); anything malformed fails the test."""
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        found = _PARAM.match(rest, position)
        assert found is not None, f"malformed WWW-Authenticate: {header!r}"
        assert found.group(1) not in params, f"repeated parameter in {header!r}"
        params[found.group(1)] = found.group(2)
        position = found.end()
        if position < len(rest):
            assert rest.startswith(", ", position), f"malformed WWW-Authenticate: {header!r}"
            position += 2
    return scheme, params


async def open_get(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    """A GET that may be answered with an endless event stream: status and headers, the body only if it is not
    a stream (a wrongly accepted request must fail the test, not hang it)."""
    async with http.stream("GET", url, headers=headers) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
    return response


def text_of(response: httpx.Response) -> str:
    try:
        return response.text
    except httpx.ResponseNotRead:
        return f"<HTTP {response.status_code} {response.headers.get('content-type')}: a stream, not read>"


def metadata_url(server: ServerProcess) -> str:
    return f"{server.url}/.well-known/oauth-protected-resource/mcp"


def assert_rpc_error(
    response: httpx.Response, status: int, *, mentions: str = "", request_id: int | str | None = None
) -> Json:
    """`request_id`: a refusal made once the body was read names the request it refuses (JSON-RPC 2.0, 5)."""
    assert response.status_code == status, text_of(response)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: Json = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == request_id, body
    assert isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str), body
    assert mentions.lower() in body["error"]["message"].lower(), body
    return body


def assert_challenge(
    response: httpx.Response, server: ServerProcess, *, status: int = 401, error: str | None = None
) -> dict[str, str]:
    """The RFC 6750 / RFC 9728 challenge of a refused MCP request, and a JSON-RPC error body."""
    assert_rpc_error(response, status)
    header = response.headers.get("WWW-Authenticate")
    assert header is not None, f"{response.request.method} {response.request.url}: no WWW-Authenticate"
    scheme, params = parse_challenge(header)
    assert scheme == "Bearer", header
    assert params["resource_metadata"] == metadata_url(server), header
    assert params["scope"] == "mcp", header
    assert params.get("error") == error, header
    if error is None:
        assert set(params) == {"resource_metadata", "scope"}, header
        assert header == f'Bearer resource_metadata="{metadata_url(server)}", scope="mcp"'
    return params


async def mcp_requests(
    http: httpx.AsyncClient, server: ServerProcess, headers: dict[str, str], session_id: str = "no-such-session"
) -> dict[str, httpx.Response]:
    """One request to each MCP endpoint, as a well-behaved client would send it, with `headers` added."""
    sessioned = {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
    return {
        "POST /mcp": await http.post(
            server.mcp_url, json=rpc("initialize", 0, INIT_PARAMS), headers={**POST_HEADERS, **headers}
        ),
        "GET /mcp": await open_get(http, server.mcp_url, {**SSE_ACCEPT, **sessioned, **headers}),
        "DELETE /mcp": await http.delete(server.mcp_url, headers={**sessioned, **headers}),
        "GET /sse": await open_get(http, f"{server.url}/sse", {**SSE_ACCEPT, **headers}),
        "POST /message": await http.post(
            f"{server.url}/message", params={"sessionId": session_id}, json=rpc("ping"), headers=headers
        ),
    }


async def health(http: httpx.AsyncClient, server: ServerProcess) -> tuple[int, Json]:
    response = await http.get(f"{server.url}/health")
    document: Json = response.json()
    return response.status_code, document


async def revoke(http: httpx.AsyncClient, issuer: str, tokens: Json) -> None:
    """RFC 7009 as the public client the token was issued to."""
    response = await http.post(
        f"{issuer}/revoke", data={"token": tokens["access_token"], "client_id": tokens["client_id"]}
    )
    assert response.status_code == 200, response.text


class EventReader:
    """Reads an SSE response in the background into a channel, so a test can wait for events or for silence."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[SSEEvent](100)

    async def pump(self, response: httpx.Response) -> None:
        decoder = SSEDecoder()
        async with self._send:
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    await self._send.send(event)

    async def next(self, within: float = 10.0) -> SSEEvent:
        with trio.fail_after(within):
            return await self._receive.receive()

    async def assert_silent(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            event = await self._receive.receive()
            raise AssertionError(f"something was delivered: {event!r}")


@asynccontextmanager
async def legacy_stream(
    http: httpx.AsyncClient, server: ServerProcess, token: str
) -> AsyncIterator[tuple[str, EventReader]]:
    """GET /sse as `token`'s owner; yields the session id from the `endpoint` event and the stream's reader."""
    reader = EventReader()
    headers = {**SSE_ACCEPT, **bearer(token)}
    async with trio.open_nursery() as nursery, http.stream("GET", f"{server.url}/sse", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        nursery.start_soon(reader.pump, response)
        endpoint = await reader.next()
        assert endpoint.event == "endpoint", endpoint
        assert endpoint.data.startswith("/message?sessionId="), endpoint
        yield endpoint.data.removeprefix("/message?sessionId="), reader
        nursery.cancel_scope.cancel()


# --- 401: no token, a garbage token ---------------------------------------------------------------------


async def test_every_mcp_endpoint_without_a_token_is_401_with_the_resource_metadata_challenge(
    embedded: ServerProcess, http: httpx.AsyncClient
) -> None:
    sessions_before = (await health(http, embedded))[1]["sessions"]
    for name, response in (await mcp_requests(http, embedded, {})).items():
        try:
            assert_challenge(response, embedded, error=None)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    # Another scheme than Bearer is "no credentials we understand": a challenge without an error code either.
    for name, response in (await mcp_requests(http, embedded, {"Authorization": "Basic dXNlcjpwYXNz"})).items():
        try:
            assert_challenge(response, embedded, error=None)
        except AssertionError as exc:
            raise AssertionError(f"{name} with Basic: {exc}") from exc
    # Nothing was created on the way (GET /sse would open a session, POST initialize too).
    assert (await health(http, embedded))[1]["sessions"] == sessions_before


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",  # alg none, unsigned
        "a" * 9000,  # too long to even parse
        'bad"token',  # characters no bearer token may have
    ],
    ids=["garbage", "alg-none", "huge", "quote"],
)
async def test_every_mcp_endpoint_with_a_garbage_token_is_401_invalid_token(
    embedded: ServerProcess, http: httpx.AsyncClient, token: str
) -> None:
    for name, response in (await mcp_requests(http, embedded, {"Authorization": f"Bearer {token}"})).items():
        try:
            params = assert_challenge(response, embedded, error="invalid_token")
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
        # The description cannot break out of its quotes, whatever the token held.
        assert '"' not in params.get("error_description", ""), params


# --- RFC 9728 metadata ----------------------------------------------------------------------------------


async def test_protected_resource_metadata_names_the_issuer_in_every_auth_mode(
    embedded: ServerProcess, external: External, make_server: Callable[..., ServerProcess], http: httpx.AsyncClient
) -> None:
    for server, issuer in [
        (embedded, embedded.url),
        (external.jwt_a, external.auth.url),
        (external.introspection_a, external.auth.url),
    ]:
        documents = []
        for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
            response = await http.get(f"{server.url}{path}")
            assert response.status_code == 200, (server.url, path, response.text)
            assert response.headers["content-type"].startswith("application/json")
            documents.append(response.json())
        document = documents[0]
        assert documents[1] == document
        assert document["resource"] == server.mcp_url
        assert document["authorization_servers"] == [issuer]
        assert "mcp" in document["scopes_supported"]
        assert document["bearer_methods_supported"] == ["header"]
        # The named issuer really is the authorization server (RFC 8414 sec. 3.3).
        as_metadata = (await http.get(f"{issuer}/.well-known/oauth-authorization-server")).json()
        assert as_metadata["issuer"] == issuer
        assert as_metadata["code_challenge_methods_supported"] == ["S256"]

    unauthenticated = make_server(auth_mode="none")
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        response = await http.get(f"{unauthenticated.url}{path}")
        assert response.status_code == 404, (path, response.text)


# --- a valid token, and tokens that are valid but wrong -------------------------------------------------


async def test_valid_token_initializes_and_calls_tools_in_every_auth_mode(
    embedded: ServerProcess, external: External, http: httpx.AsyncClient
) -> None:
    for server in (embedded, external.jwt_a, external.introspection_a):
        tokens = await tokens_for(http, server, "alice")
        assert tokens["token_type"] == "Bearer" and "mcp" in tokens["scope"].split()
        claims = claims_of(tokens["access_token"])
        assert claims["sub"] == "alice" and claims["aud"] == server.mcp_url
        session_id = await open_session(http, server, tokens["access_token"])
        await assert_echo_works(http, server, tokens["access_token"], session_id)
        status, document = await health(http, server)
        assert status == 200 and document["auth"]["state"] == "ok", document


async def test_token_without_the_mcp_scope_is_403_insufficient_scope(
    embedded: ServerProcess, external: External, http: httpx.AsyncClient
) -> None:
    for server in (embedded, external.jwt_a, external.introspection_a):
        tokens = await tokens_for(http, server, "alice", scope="offline_access")
        assert tokens["scope"].split() == ["offline_access"]
        response = await initialize(http, server, tokens["access_token"])
        params = assert_challenge(response, server, status=403, error="insufficient_scope")
        assert params["scope"] == "mcp"
        # The other endpoints refuse it the same way.
        for name, other in (await mcp_requests(http, server, bearer(tokens["access_token"]))).items():
            assert other.status_code == 403, (server.url, name, text_of(other))


async def test_token_for_another_resource_is_401_at_that_resource(external: External, http: httpx.AsyncClient) -> None:
    pairs = [
        (external.jwt_a, external.jwt_b),
        (external.introspection_a, external.introspection_b),
        (external.jwt_a, external.introspection_b),
        (external.introspection_a, external.jwt_b),
    ]
    for own, other in pairs:
        token = await access_token(http, own, "alice")
        assert claims_of(token)["aud"] == own.mcp_url
        refused = await initialize(http, other, token)
        assert_challenge(refused, other, error="invalid_token")
        accepted = await initialize(http, own, token)
        assert accepted.status_code == 200, accepted.text
        # ... and still refused afterwards (nothing cached the positive answer across resources).
        assert (await initialize(http, other, token)).status_code == 401


async def test_expired_token_is_401_invalid_token(
    make_server: Callable[..., ServerProcess], http: httpx.AsyncClient
) -> None:
    server = make_server(auth_mode="embedded", access_token_ttl=1)
    for _attempt in range(3):
        # Start just after a second boundary: `exp` is whole seconds, so the token lives almost a second. A real
        # sleep: the token's life is counted by the server's wall clock, in whole seconds.
        await trio.sleep(math.ceil(time.time()) - time.time() + 0.01)
        tokens = await tokens_for(http, server, "alice")
        claims = claims_of(tokens["access_token"])
        assert tokens["expires_in"] == 1 and claims["exp"] - claims["iat"] == 1, (tokens, claims)
        session_id = await open_session(http, server, tokens["access_token"])
        if time.time() < claims["exp"]:
            break  # it was used while it was still valid (a slow machine may need another try)
    else:
        pytest.fail("could not use a 1-second token within its lifetime in three attempts")
    # A real sleep, to just past `exp`: the server refuses a token once its clock reaches `exp` (no leeway, and
    # the token cache keeps nothing past it), and a 1 s token is the shortest it issues.
    await trio.sleep(claims["exp"] - time.time() + 0.1)
    expired = await post_in_session(http, server, tokens["access_token"], session_id, echo("late"))
    params = assert_challenge(expired, server, error="invalid_token")
    assert "expired" in params.get("error_description", "") or "invalid" in params.get("error_description", "")
    assert_challenge(await initialize(http, server, tokens["access_token"]), server, error="invalid_token")


# --- revocation -----------------------------------------------------------------------------------------


async def test_revoked_token_is_401_at_once_in_embedded_mode(embedded: ServerProcess, http: httpx.AsyncClient) -> None:
    tokens = await tokens_for(http, embedded, "alice")
    session_id = await open_session(http, embedded, tokens["access_token"])
    await assert_echo_works(http, embedded, tokens["access_token"], session_id)
    await revoke(http, embedded.url, tokens)
    refused = await post_in_session(http, embedded, tokens["access_token"], session_id, echo("after revocation"))
    assert_challenge(refused, embedded, error="invalid_token")
    assert_challenge(await initialize(http, embedded, tokens["access_token"]), embedded, error="invalid_token")
    # Only that token: a fresh one of the same person still works.
    await assert_echo_works(http, embedded, await access_token(http, embedded, "alice"), session_id)


async def test_revoked_token_is_401_within_the_cache_lifetime_in_introspection_mode(
    external: External, http: httpx.AsyncClient
) -> None:
    server = external.introspection_a
    tokens = await tokens_for(http, server, "alice")
    session_id = await open_session(http, server, tokens["access_token"])
    await assert_echo_works(http, server, tokens["access_token"], session_id)  # the positive answer is cached now
    await revoke(http, external.auth.url, tokens)

    async def refused() -> bool:
        response = await post_in_session(http, server, tokens["access_token"], session_id, echo("still?"))
        if response.status_code == 200:
            return False
        assert_challenge(response, server, error="invalid_token")
        return True

    took = await wait_until(refused, INTROSPECTION_CACHE_TTL + 3, "the revoked token is refused")
    assert took <= INTROSPECTION_CACHE_TTL + 1.5, f"revocation took {took:.1f}s with a {INTROSPECTION_CACHE_TTL}s cache"


async def test_revoked_token_is_401_at_once_in_jwt_mode_with_a_shared_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    as_port, mcp_port = free_ports(2)
    auth = auth_server(
        tmp_path, port=as_port, resources=[f"http://127.0.0.1:{mcp_port}/mcp"], redis_url=redis_server.url
    )
    server = mcp_server(tmp_path, port=mcp_port, auth_mode="jwt", auth_server_url=auth.url, redis_url=redis_server.url)
    with running(auth), running(server):
        async with new_client() as http:
            tokens = await tokens_for(http, server, "alice")
            session_id = await open_session(http, server, tokens["access_token"])
            await assert_echo_works(http, server, tokens["access_token"], session_id)
            await revoke(http, auth.url, tokens)
            refused = await post_in_session(http, server, tokens["access_token"], session_id, echo("after"))
            assert_challenge(refused, server, error="invalid_token")
            await assert_echo_works(http, server, await access_token(http, server, "alice"), session_id)


# --- sessions belong to the token's subject -------------------------------------------------------------


async def test_another_users_token_on_a_session_is_404_and_leaves_it_intact(
    embedded: ServerProcess, http: httpx.AsyncClient
) -> None:
    alice = await access_token(http, embedded, "alice")
    bob = await access_token(http, embedded, "bob")
    session_id = await open_session(http, embedded, alice)
    sessions = (await health(http, embedded))[1]["sessions"]

    async def as_bob(target: str) -> dict[str, httpx.Response]:
        headers = in_session(bob, target)
        return {
            "POST": await http.post(embedded.mcp_url, json=echo("from bob"), headers=headers),
            "GET": await open_get(http, embedded.mcp_url, {**headers, **SSE_ACCEPT}),
            "DELETE": await http.delete(embedded.mcp_url, headers=headers),
        }

    attempts = await as_bob(session_id)
    unknown = await as_bob(secrets.token_urlsafe(32))
    for name in attempts:
        # Only the POST has a body, and so a request id to name.
        body = assert_rpc_error(
            attempts[name], 404, mentions="session not found", request_id=1 if name == "POST" else None
        )
        # Exactly what an unknown session gets: the session's existence is not disclosed.
        assert attempts[name].status_code == unknown[name].status_code, name
        assert body == unknown[name].json(), name

    # Alice's session is still there and still hers.
    assert (await health(http, embedded))[1]["sessions"] == sessions
    await assert_echo_works(http, embedded, alice, session_id, "still mine")
    async with http.stream("GET", embedded.mcp_url, headers={**in_session(alice, session_id), **SSE_ACCEPT}) as stream:
        assert stream.status_code == 200
    deleted = await http.delete(embedded.mcp_url, headers=in_session(alice, session_id))
    assert deleted.status_code == 204, deleted.text
    gone = await post_in_session(http, embedded, alice, session_id, echo("gone"))
    assert gone.status_code == 404


async def test_legacy_message_into_another_users_session_is_404_and_delivers_nothing(
    embedded: ServerProcess, http: httpx.AsyncClient
) -> None:
    alice = await access_token(http, embedded, "alice")
    bob = await access_token(http, embedded, "bob")
    with trio.fail_after(WAIT):
        async with legacy_stream(http, embedded, alice) as (session_id, events):
            endpoint = f"{embedded.url}/message"
            injected = await http.post(
                endpoint, params={"sessionId": session_id}, json=echo("from bob", "bob-1"), headers=bearer(bob)
            )
            assert_rpc_error(injected, 404, mentions="session not found")
            injected_init = await http.post(
                endpoint,
                params={"sessionId": session_id},
                json=rpc("initialize", "bob-0", LEGACY_INIT_PARAMS),
                headers=bearer(bob),
            )
            assert_rpc_error(injected_init, 404, mentions="session not found")
            anonymous = await http.post(endpoint, params={"sessionId": session_id}, json=echo("anon", "anon-1"))
            assert anonymous.status_code == 401
            await events.assert_silent(QUIET)

            # Alice's own messages are accepted and answered on her stream, and only hers arrive.
            accepted = await http.post(
                endpoint,
                params={"sessionId": session_id},
                json=rpc("initialize", 0, LEGACY_INIT_PARAMS),
                headers=bearer(alice),
            )
            assert accepted.status_code == 202, accepted.text
            answer = json.loads((await events.next()).data)
            assert answer["id"] == 0 and answer["result"]["protocolVersion"] == "2024-11-05", answer
            note = await http.post(
                endpoint,
                params={"sessionId": session_id},
                json=rpc("notifications/initialized", None),
                headers=bearer(alice),
            )
            assert note.status_code == 202, note.text
            call = await http.post(
                endpoint, params={"sessionId": session_id}, json=echo("mine", 1), headers=bearer(alice)
            )
            assert call.status_code == 202, call.text
            result = json.loads((await events.next()).data)
            assert result["id"] == 1 and result["result"]["content"][0]["text"] == "Echo: mine", result
            await events.assert_silent(0.3)


# --- response headers -----------------------------------------------------------------------------------


async def test_security_headers_and_hsts_only_behind_https(
    embedded: ServerProcess, make_server: Callable[..., ServerProcess], http: httpx.AsyncClient
) -> None:
    splash = await http.get(f"{embedded.url}/")
    assert splash.status_code == 200 and splash.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in splash.headers["Content-Security-Policy"]
    assert splash.headers["X-Frame-Options"] == "DENY"
    assert splash.headers["X-Content-Type-Options"] == "nosniff"
    assert splash.headers["Referrer-Policy"] == "no-referrer"

    token = await access_token(http, embedded, "alice")
    mcp_responses = {
        "401": (await mcp_requests(http, embedded, {}))["POST /mcp"],
        "200": await initialize(http, embedded, token),
        "404": await post_in_session(http, embedded, token, "no-such-session", rpc("ping")),
        "metadata": await http.get(metadata_url(embedded)),
    }
    for name, response in [*mcp_responses.items(), ("/", splash)]:
        assert response.headers.get("X-Content-Type-Options") == "nosniff", name
        assert "Strict-Transport-Security" not in response.headers, f"{name}: HSTS over plain http"

    tls = make_server(auth_mode="embedded", base_url="https://mcp.example.com", allowed_hosts="127.0.0.1")
    for path in ("/", "/health", "/.well-known/oauth-protected-resource/mcp"):
        response = await http.get(f"{tls.url}{path}")
        assert response.status_code == 200, (path, response.text)
        hsts = response.headers.get("Strict-Transport-Security", "")
        max_age = re.search(r"max-age=(\d+)", hsts)
        assert max_age is not None and int(max_age.group(1)) >= 31536000, (path, hsts)
    refused = await http.post(tls.mcp_url, json=rpc("initialize", 0, INIT_PARAMS), headers=POST_HEADERS)
    assert refused.status_code == 401, refused.text
    assert "max-age=" in refused.headers.get("Strict-Transport-Security", ""), refused.headers
    assert parse_challenge(refused.headers["WWW-Authenticate"])[1]["resource_metadata"] == (
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    )


async def test_cors_allows_local_tools_and_refuses_foreign_origins(
    embedded: ServerProcess, http: httpx.AsyncClient
) -> None:
    asked_headers = "authorization, content-type, mcp-session-id, mcp-protocol-version"
    for path, method in (("/mcp", "POST"), ("/mcp", "DELETE"), ("/sse", "GET"), ("/message", "POST")):
        preflight = await http.options(
            f"{embedded.url}{path}",
            headers={
                "Origin": ALLOWED_ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": asked_headers,
            },
        )
        assert preflight.status_code == 204, (path, preflight.text)
        assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "mcp-session-id", "mcp-protocol-version", "content-type"} <= allowed, allowed
        methods = {m.strip() for m in preflight.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "POST", "DELETE"} <= methods, methods
        assert "origin" in preflight.headers.get("Vary", "").lower()

    token = await access_token(http, embedded, "alice")
    response = await initialize(http, embedded, token, headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert "mcp-session-id" in exposed, exposed
    # A browser client must be able to read the challenge of a 401 to start the flow.
    challenge = (await mcp_requests(http, embedded, {"Origin": ALLOWED_ORIGIN}))["POST /mcp"]
    assert challenge.status_code == 401
    assert challenge.headers.get("Access-Control-Allow-Origin") == ALLOWED_ORIGIN, challenge.headers
    assert "www-authenticate" in challenge.headers.get("Access-Control-Expose-Headers", "").lower()

    foreign_preflight = await http.options(
        embedded.mcp_url,
        headers={
            "Origin": FOREIGN_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked_headers,
        },
    )
    assert foreign_preflight.status_code == 403
    assert "Access-Control-Allow-Origin" not in foreign_preflight.headers
    sessions = (await health(http, embedded))[1]["sessions"]
    for name, refused in [
        ("POST", await initialize(http, embedded, token, headers={"Origin": FOREIGN_ORIGIN})),
        *(await mcp_requests(http, embedded, {**bearer(token), "Origin": FOREIGN_ORIGIN})).items(),
    ]:
        assert_rpc_error(refused, 403, mentions="origin")
        assert "Access-Control-Allow-Origin" not in refused.headers, name
    assert (await health(http, embedded))[1]["sessions"] == sessions

    # Public OAuth documents are readable from any origin.
    for path in (
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
    ):
        document = await http.get(f"{embedded.url}{path}", headers={"Origin": FOREIGN_ORIGIN})
        assert document.status_code == 200, path
        assert document.headers.get("Access-Control-Allow-Origin") == "*", (path, document.headers)


# --- degraded mode --------------------------------------------------------------------------------------


async def test_unreachable_authorization_server_degrades_then_recovers_by_itself(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    as_port, jwt_port, introspection_port = free_ports(3)
    auth = auth_server(
        tmp_path,
        port=as_port,
        resources=[f"http://127.0.0.1:{jwt_port}/mcp", f"http://127.0.0.1:{introspection_port}/mcp"],
        redis_url=redis_server.url,  # the signing keys and tokens survive the restart
        introspection_client_id=RS_ID,
        introspection_client_secret=RS_SECRET,
    )
    jwt = mcp_server(tmp_path, port=jwt_port, auth_mode="jwt", auth_server_url=auth.url)
    introspection = mcp_server(
        tmp_path,
        port=introspection_port,
        auth_mode="introspection",
        auth_server_url=auth.url,
        introspection_client_id=RS_ID,
        introspection_client_secret=RS_SECRET,
        introspection_cache_ttl=INTROSPECTION_CACHE_TTL,
    )
    soft_failures: list[str] = []
    with running(auth), running(jwt, introspection):
        async with new_client() as http:
            servers = (jwt, introspection)
            tokens = {server.port: await access_token(http, server, "alice") for server in servers}
            sessions = {server.port: await open_session(http, server, tokens[server.port]) for server in servers}

            auth.kill()  # an abrupt outage: no goodbye to open connections
            for server in servers:

                async def degraded(server: ServerProcess = server) -> bool:
                    status, document = await health(http, server)
                    if document["auth"]["state"] != "degraded":
                        return False
                    assert status == 503 and document["status"] == "degraded", document
                    return True

                await wait_until(degraded, WAIT, f"{server.url} reports the authorization server degraded")
                token, session_id = tokens[server.port], sessions[server.port]
                for response in (
                    await initialize(http, server, token),
                    await post_in_session(http, server, token, session_id, echo("during the outage")),
                ):
                    assert_rpc_error(response, 503, mentions="authorization server")
                    assert response.headers.get("Retry-After", "").isdigit(), response.headers
                splash = await http.get(f"{server.url}/")
                assert splash.status_code == 200
                if 'class="warning"' not in splash.text or "cannot be reached" not in splash.text:
                    soft_failures.append(f"{server.url}/: no degraded banner on the splash page")

            auth.start()  # same port, same Redis: the same keys
            for server in servers:

                async def recovered(server: ServerProcess = server) -> bool:
                    status, document = await health(http, server)
                    return status == 200 and document["status"] == "ok" and document["auth"]["state"] == "ok"

                await wait_until(recovered, WAIT, f"{server.url} recovers")
                # The token from before the outage works again, in the session from before the outage.
                await assert_echo_works(http, server, tokens[server.port], sessions[server.port], "back")
                assert (await initialize(http, server, tokens[server.port])).status_code == 200
                # ... and so does the whole flow against the restarted authorization server.
                assert (await initialize(http, server, await access_token(http, server, "bob"))).status_code == 200
    assert not soft_failures, soft_failures


# --- rate limiting --------------------------------------------------------------------------------------


async def test_registration_rate_limit_and_forwarded_for_from_trusted_proxies_only(
    make_server: Callable[..., ServerProcess], http: httpx.AsyncClient
) -> None:
    server = make_server(auth_mode="embedded", rate_limit_per_minute=3, trusted_proxies="127.0.0.1")
    registration = {
        "client_name": "rate limit test",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
    }

    async def register(client: httpx.AsyncClient, forwarded_for: str | None = None) -> httpx.Response:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return await client.post(f"{server.url}/register", json=registration, headers=headers)

    def assert_limited(response: httpx.Response) -> None:
        assert response.status_code == 429, response.text
        assert response.headers["Retry-After"].isdigit() and int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"] == "rate_limited"

    # An untrusted peer (127.0.0.2 is not a trusted proxy) cannot escape its bucket by forging the header.
    untrusted = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"), timeout=20.0)
    async with untrusted:
        started = time.monotonic()
        for n in range(3):
            assert (await register(untrusted, f"198.51.100.{n}")).status_code == 201
        assert_limited(await register(untrusted, "198.51.100.99"))
        assert_limited(await register(untrusted))
        assert time.monotonic() - started < 5

    # The trusted proxy's forwarded client addresses each get a bucket of their own ...
    for _ in range(3):
        assert (await register(http, "203.0.113.1")).status_code == 201
    assert_limited(await register(http, "203.0.113.1"))
    # ... the right-most untrusted address counts: what the client wrote to its left proves nothing.
    assert_limited(await register(http, "192.0.2.77, 203.0.113.1"))
    assert (await register(http, "203.0.113.2")).status_code == 201
    # The proxy's own bucket (no header) was never touched.
    assert (await register(http)).status_code == 201

"""Bad input over HTTP gets a clear JSON-RPC error with the right status: never a 500, never a crash.

Every case runs against a real Hypercorn process. Each test checks the status code, the JSON-RPC error
body (code, id, a message that says what was wrong) and, afterwards, that the server is still healthy
(`GET /health` is 200) and logged no traceback while handling the test's requests.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.lowlevel

from tests.conftest import INIT_PARAMS, POST_HEADERS, ServerProcess, initialize, session_headers, wait_until

LEGACY_INIT_PARAMS = {**INIT_PARAMS, "protocolVersion": "2024-11-05"}
SMALL_BODY_LIMIT = 1024
SSE_WAIT = 10.0
"""Seconds to wait for the next event on a legacy SSE stream."""
REUSE_WAIT = 5.0
"""Seconds a reused keep-alive connection gets to answer."""


class Checked:
    """A server plus the part of its log written since the test started (which must hold no traceback)."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.log_start = len(process.log())

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def mcp_url(self) -> str:
        return self.process.mcp_url

    def new_log(self) -> str:
        return self.process.log()[self.log_start :]

    def new_access_lines(self) -> list[dict[str, Any]]:
        """The access lines in `new_log()` (the shared server writes them, as JSON)."""
        found = []
        for line in self.new_log().splitlines():
            try:
                document = json.loads(line)
            except ValueError:
                continue  # a line being written as we read
            if isinstance(document, dict) and document.get("event") == "http.access":
                found.append(document)
        return found

    async def assert_healthy(self, http: httpx.AsyncClient) -> None:
        health = await http.get(f"{self.url}/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        assert self.process.process is not None and self.process.process.poll() is None, "server exited"
        log = self.new_log()
        assert "Traceback" not in log, log
        assert "unhandled error" not in log, log
        assert '" 500 ' not in log, log  # the access log line of any 500


@pytest.fixture
def server(shared_server: ServerProcess) -> Checked:
    return Checked(shared_server)


@pytest.fixture
async def session_id(server: Checked, http: httpx.AsyncClient) -> str:
    return await initialize(http, server.mcp_url)


def rpc(method: str, request_id: Any = 1, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def init_message(request_id: Any = 0, **params: Any) -> dict[str, Any]:
    return rpc("initialize", request_id, {**INIT_PARAMS, **params})


def assert_rpc_error(
    response: httpx.Response,
    status: int,
    code: int,
    *,
    request_id: Any = None,
    mentions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A JSON-RPC error object with this code (and id), sent with this HTTP status; return the error."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert "result" not in body
    assert body["id"] == request_id and type(body["id"]) is type(request_id), body
    error = body["error"]
    assert error["code"] == code, body
    message = error["message"]
    assert isinstance(message, str) and message.strip(), body
    for word in mentions:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return error


def assert_result(response: httpx.Response, request_id: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["id"] == request_id and "error" not in body, body
    return body["result"]


async def post_raw(
    http: httpx.AsyncClient, url: str, content: bytes | str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(url, content=content, headers=POST_HEADERS if headers is None else headers)


async def send_without(http: httpx.AsyncClient, method: str, url: str, drop: str, **kwargs: Any) -> httpx.Response:
    """Send a request with header `drop` really absent (httpx adds Accept: */* by default)."""
    request = http.build_request(method, url, **kwargs)
    del request.headers[drop]
    assert drop not in request.headers
    return await http.send(request)


# --- parse errors and invalid requests ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{bad", id="not-json"),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method": "pi\xffng"}', id="invalid-utf8"),
        pytest.param(b"[" * 100_000, id="deeply-nested"),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"} trailing', id="trailing-garbage"),
    ],
)
async def test_malformed_json_is_a_parse_error(server: Checked, http: httpx.AsyncClient, body: bytes) -> None:
    response = await post_raw(http, server.mcp_url, body)
    assert_rpc_error(response, 400, -32700, request_id=None, mentions=("json",))
    assert "mcp-session-id" not in response.headers
    await server.assert_healthy(http)


async def test_malformed_json_on_a_session_is_a_parse_error(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    response = await post_raw(http, server.mcp_url, b'{"jsonrpc": "2.0", "id": 3,', session_headers(session_id))
    assert_rpc_error(response, 400, -32700, request_id=None, mentions=("json",))
    # The session is unharmed.
    ping = await http.post(server.mcp_url, json=rpc("ping", 4), headers=session_headers(session_id))
    assert assert_result(ping, 4) == {}
    await server.assert_healthy(http)


NOT_JSON_RPC = [
    pytest.param({"foo": 1}, None, "jsonrpc", id="no-jsonrpc-member"),
    pytest.param([], None, "batch", id="empty-array"),
    pytest.param("str", None, "object", id="string"),
    pytest.param(42, None, "object", id="number"),
    pytest.param(None, None, "object", id="null"),
    pytest.param({"jsonrpc": "1.0", "id": 7, "method": "ping"}, 7, "2.0", id="jsonrpc-1.0"),
    pytest.param({"jsonrpc": "2.0", "id": "x"}, "x", "request", id="neither-request-nor-response"),
    pytest.param({"jsonrpc": "2.0", "id": 1, "method": 5}, 1, "method", id="method-not-a-string"),
    pytest.param({"jsonrpc": "2.0", "id": 1, "method": ""}, 1, "method", id="method-empty"),
    pytest.param({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, 1, "params", id="params-array"),
    pytest.param({"jsonrpc": "2.0", "id": None, "method": "ping"}, None, "id", id="id-null"),
    pytest.param({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None, "id", id="id-float"),
    pytest.param({"jsonrpc": "2.0", "id": True, "method": "ping"}, None, "id", id="id-bool"),
    pytest.param({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1}}, 1, "not both", id="both"),
]


@pytest.mark.parametrize(("message", "echoed_id", "keyword"), NOT_JSON_RPC)
async def test_json_that_is_not_json_rpc_is_an_invalid_request(
    server: Checked, http: httpx.AsyncClient, message: Any, echoed_id: Any, keyword: str
) -> None:
    response = await post_raw(http, server.mcp_url, json.dumps(message))
    assert_rpc_error(response, 400, -32600, request_id=echoed_id, mentions=(keyword,))
    assert "mcp-session-id" not in response.headers
    await server.assert_healthy(http)


@pytest.mark.parametrize(("message", "echoed_id", "keyword"), NOT_JSON_RPC)
async def test_json_that_is_not_json_rpc_on_a_session_is_an_invalid_request(
    server: Checked, http: httpx.AsyncClient, session_id: str, message: Any, echoed_id: Any, keyword: str
) -> None:
    response = await post_raw(http, server.mcp_url, json.dumps(message), session_headers(session_id))
    assert_rpc_error(response, 400, -32600, request_id=echoed_id, mentions=(keyword,))
    await server.assert_healthy(http)


# --- JSON-RPC errors on an initialized session (HTTP 200, the request id echoed) ---------------------


@pytest.mark.parametrize("request_id", [7, "req-7"])
async def test_unknown_method_is_method_not_found(
    server: Checked, http: httpx.AsyncClient, session_id: str, request_id: int | str
) -> None:
    response = await http.post(
        server.mcp_url, json=rpc("no/such/method", request_id), headers=session_headers(session_id)
    )
    assert_rpc_error(response, 200, -32601, request_id=request_id, mentions=("no/such/method",))
    await server.assert_healthy(http)


@pytest.mark.parametrize(
    ("method", "params", "keyword"),
    [
        pytest.param("tools/call", {"name": 5}, "tools/call", id="tool-name-not-a-string"),
        pytest.param("tools/call", {"name": "echo", "arguments": "hi"}, "tools/call", id="arguments-not-object"),
        pytest.param("tools/call", None, "tools/call", id="tools-call-without-params"),
        pytest.param("resources/read", {}, "resources/read", id="read-without-uri"),
        pytest.param("resources/read", {"uri": 12}, "resources/read", id="read-uri-not-a-string"),
        pytest.param("logging/setLevel", {"level": "loud"}, "logging/setLevel", id="unknown-log-level"),
        pytest.param("resources/list", {"cursor": "!!not-a-cursor!!"}, "cursor", id="bad-cursor"),
        pytest.param("prompts/get", {"name": "no_such_prompt"}, "no_such_prompt", id="unknown-prompt"),
    ],
)
async def test_malformed_params_are_invalid_params(
    server: Checked,
    http: httpx.AsyncClient,
    session_id: str,
    method: str,
    params: dict[str, Any] | None,
    keyword: str,
) -> None:
    response = await http.post(server.mcp_url, json=rpc(method, 11, params), headers=session_headers(session_id))
    assert_rpc_error(response, 200, -32602, request_id=11, mentions=(keyword,))
    await server.assert_healthy(http)


async def test_validation_details_name_the_bad_field(server: Checked, http: httpx.AsyncClient, session_id: str) -> None:
    response = await http.post(server.mcp_url, json=rpc("resources/read", 12, {}), headers=session_headers(session_id))
    error = assert_rpc_error(response, 200, -32602, request_id=12)
    assert any(problem["loc"][-1] == "uri" for problem in error["data"]), error
    await server.assert_healthy(http)


async def test_arguments_failing_the_tool_schema_are_a_tool_error_result(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    call = rpc("tools/call", 13, {"name": "echo", "arguments": {}})
    response = await http.post(server.mcp_url, json=call, headers=session_headers(session_id))
    result = assert_result(response, 13)
    assert result["isError"] is True
    text = " ".join(item["text"] for item in result["content"] if item["type"] == "text")
    assert "message" in text and "echo" in text, result
    await server.assert_healthy(http)


async def test_unknown_tool_is_invalid_params(server: Checked, http: httpx.AsyncClient, session_id: str) -> None:
    call = rpc("tools/call", 14, {"name": "no_such_tool", "arguments": {}})
    response = await http.post(server.mcp_url, json=call, headers=session_headers(session_id))
    assert_rpc_error(response, 200, -32602, request_id=14, mentions=("no_such_tool",))
    await server.assert_healthy(http)


@pytest.mark.parametrize("method", ["resources/read", "resources/subscribe"])
@pytest.mark.parametrize("uri", ["test://no/such/resource", "not a uri at all"])
async def test_unknown_resource_is_resource_not_found(
    server: Checked, http: httpx.AsyncClient, session_id: str, method: str, uri: str
) -> None:
    response = await http.post(server.mcp_url, json=rpc(method, 15, {"uri": uri}), headers=session_headers(session_id))
    error = assert_rpc_error(response, 200, -32002, request_id=15, mentions=(uri,))
    assert error["data"] == {"uri": uri}
    await server.assert_healthy(http)


# --- media types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "text/html", "application/*"])
@pytest.mark.parametrize("with_session", [False, True], ids=["initialize", "on-session"])
async def test_post_with_wrong_accept_is_not_acceptable(
    server: Checked, http: httpx.AsyncClient, accept: str, with_session: bool
) -> None:
    if with_session:
        headers, body = (
            {**session_headers(await initialize(http, server.mcp_url)), "Accept": accept},
            rpc("ping"),
        )
    else:
        headers, body = {**POST_HEADERS, "Accept": accept}, init_message()
    response = await http.post(server.mcp_url, json=body, headers=headers)
    assert_rpc_error(response, 406, -32600, mentions=("accept",))
    assert "mcp-session-id" not in response.headers
    await server.assert_healthy(http)


async def test_post_without_accept_is_not_acceptable(server: Checked, http: httpx.AsyncClient) -> None:
    response = await send_without(
        http,
        "POST",
        server.mcp_url,
        "Accept",
        json=init_message(),
        headers={"Content-Type": "application/json"},
    )
    assert_rpc_error(response, 406, -32600, mentions=("accept",))
    await server.assert_healthy(http)


async def test_post_accepting_everything_is_fine(server: Checked, http: httpx.AsyncClient) -> None:
    response = await http.post(
        server.mcp_url, json=init_message(), headers={"Accept": "*/*", "Content-Type": "application/json"}
    )
    assert assert_result(response, 0)["protocolVersion"] == "2025-11-25"
    await server.assert_healthy(http)


@pytest.mark.parametrize("accept", ["application/json", "text/html, application/*", None])
async def test_get_without_event_stream_accept_is_not_acceptable(
    server: Checked, http: httpx.AsyncClient, session_id: str, accept: str | None
) -> None:
    headers = {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
    if accept is None:
        response = await send_without(http, "GET", server.mcp_url, "Accept", headers=headers)
    else:
        response = await http.get(server.mcp_url, headers={**headers, "Accept": accept})
    assert_rpc_error(response, 406, -32600, mentions=("text/event-stream",))
    await server.assert_healthy(http)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", "", None]
)
async def test_wrong_content_type_is_unsupported_media_type(
    server: Checked, http: httpx.AsyncClient, content_type: str | None
) -> None:
    body = json.dumps(init_message())
    headers = {"Accept": POST_HEADERS["Accept"]}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await http.post(server.mcp_url, content=body, headers=headers)
    assert "content-type" in response.request.headers or content_type is None
    assert_rpc_error(response, 415, -32600, mentions=("content-type",))
    assert "mcp-session-id" not in response.headers
    await server.assert_healthy(http)


async def test_wrong_content_type_on_a_session_is_unsupported_media_type(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    headers = {**session_headers(session_id), "Content-Type": "text/plain"}
    response = await http.post(server.mcp_url, content=json.dumps(rpc("ping")), headers=headers)
    assert_rpc_error(response, 415, -32600, mentions=("application/json",))
    await server.assert_healthy(http)


async def test_json_content_type_with_parameters_is_accepted(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    headers = {**session_headers(session_id), "Content-Type": "Application/JSON; charset=utf-8"}
    response = await http.post(server.mcp_url, content=json.dumps(rpc("ping", 16)), headers=headers)
    assert assert_result(response, 16) == {}
    await server.assert_healthy(http)


# --- body size -----------------------------------------------------------------------------------------


def padded_initialize(size: int) -> bytes:
    """A valid initialize request of exactly `size` bytes (JSON whitespace as padding)."""
    body = json.dumps(init_message()).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


async def chunks(body: bytes, chunk_size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(body), chunk_size):
        yield body[start : start + chunk_size]
        await trio.lowlevel.checkpoint()


async def test_body_over_the_limit_is_payload_too_large(make_server: Any, http: httpx.AsyncClient) -> None:
    server = Checked(make_server(max_body_bytes=SMALL_BODY_LIMIT))

    # Declared with Content-Length: refused before the body is read.
    response = await post_raw(http, server.mcp_url, padded_initialize(SMALL_BODY_LIMIT + 1))
    assert response.request.headers["content-length"] == str(SMALL_BODY_LIMIT + 1)
    assert_rpc_error(response, 413, -32600, mentions=(str(SMALL_BODY_LIMIT),))
    assert "mcp-session-id" not in response.headers

    much_larger = await post_raw(http, server.mcp_url, padded_initialize(50 * SMALL_BODY_LIMIT))
    assert_rpc_error(much_larger, 413, -32600, mentions=(str(SMALL_BODY_LIMIT),))

    # Chunked, no Content-Length: refused once the running total passes the limit.
    request = http.build_request(
        "POST", server.mcp_url, content=chunks(padded_initialize(3 * SMALL_BODY_LIMIT)), headers=POST_HEADERS
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    chunked = await http.send(request)
    assert_rpc_error(chunked, 413, -32600, mentions=(str(SMALL_BODY_LIMIT),))

    # Exactly at the limit is fine, with and without Content-Length.
    at_limit = await post_raw(http, server.mcp_url, padded_initialize(SMALL_BODY_LIMIT))
    assert assert_result(at_limit, 0)["protocolVersion"] == "2025-11-25"
    chunked_at_limit = await http.post(
        server.mcp_url, content=chunks(padded_initialize(SMALL_BODY_LIMIT)), headers=POST_HEADERS
    )
    assert assert_result(chunked_at_limit, 0)["protocolVersion"] == "2025-11-25"
    await server.assert_healthy(http)


async def test_body_over_the_limit_on_a_session_and_on_legacy_is_payload_too_large(
    make_server: Any, http: httpx.AsyncClient
) -> None:
    server = Checked(make_server(max_body_bytes=SMALL_BODY_LIMIT))
    session_id = await initialize(http, server.mcp_url)
    big_ping = json.dumps(rpc("ping", 1, {"_meta": {"pad": "x" * 2 * SMALL_BODY_LIMIT}}))
    response = await post_raw(http, server.mcp_url, big_ping, session_headers(session_id))
    assert_rpc_error(response, 413, -32600, mentions=("too large",))
    chunked = await http.post(server.mcp_url, content=chunks(big_ping.encode()), headers=session_headers(session_id))
    assert_rpc_error(chunked, 413, -32600, mentions=("too large",))
    # The session survives the refused bodies.
    ping = await http.post(server.mcp_url, json=rpc("ping", 2), headers=session_headers(session_id))
    assert assert_result(ping, 2) == {}

    async with open_legacy(http, server) as (endpoint, _events):
        legacy = await post_raw(http, endpoint, big_ping, {"Content-Type": "application/json"})
        assert_rpc_error(legacy, 413, -32600, mentions=("too large",))
    await server.assert_healthy(http)


# --- sessions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(rpc("ping"), id="request"),
        pytest.param(rpc("tools/list"), id="tools-list"),
        pytest.param({"jsonrpc": "2.0", "method": "notifications/initialized"}, id="notification"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "result": {}}, id="response"),
        pytest.param({"jsonrpc": "2.0", "method": "initialize", "params": INIT_PARAMS}, id="initialize-notification"),
    ],
)
async def test_post_without_session_id_is_bad_request(
    server: Checked, http: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    response = await http.post(server.mcp_url, json=message, headers=POST_HEADERS)
    refused_request = message.get("id") if "method" in message else None
    assert_rpc_error(response, 400, -32600, request_id=refused_request, mentions=("mcp-session-id",))
    assert "mcp-session-id" not in response.headers
    await server.assert_healthy(http)


async def test_get_and_delete_without_session_id_are_bad_requests(server: Checked, http: httpx.AsyncClient) -> None:
    get = await http.get(server.mcp_url, headers={"Accept": "text/event-stream"})
    assert_rpc_error(get, 400, -32600, mentions=("mcp-session-id",))
    delete = await http.delete(server.mcp_url)
    assert_rpc_error(delete, 400, -32600, mentions=("mcp-session-id",))
    empty = await http.delete(server.mcp_url, headers={"Mcp-Session-Id": ""})
    assert_rpc_error(empty, 400, -32600, mentions=("mcp-session-id",))
    await server.assert_healthy(http)


async def assert_session_gone(http: httpx.AsyncClient, server: Checked, session_id: str) -> None:
    headers = session_headers(session_id)
    post = await http.post(server.mcp_url, json=rpc("ping", 41), headers=headers)
    # The body was read before the session was looked up: the refusal names the request it refuses.
    assert_rpc_error(post, 404, -32000, request_id=41, mentions=("session not found",))
    note = await http.post(
        server.mcp_url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
    )
    assert_rpc_error(note, 404, -32000, mentions=("session not found",))
    get = await http.get(server.mcp_url, headers={**headers, "Accept": "text/event-stream"})
    assert_rpc_error(get, 404, -32000, mentions=("session not found",))
    delete = await http.delete(server.mcp_url, headers={"Mcp-Session-Id": session_id})
    assert_rpc_error(delete, 404, -32000, mentions=("session not found",))


@pytest.mark.parametrize("session_id", ["no-such-session", "x" * 43, "%00"])
async def test_unknown_session_id_is_not_found(server: Checked, http: httpx.AsyncClient, session_id: str) -> None:
    await assert_session_gone(http, server, session_id)
    await server.assert_healthy(http)


async def test_deleted_session_id_is_not_found(server: Checked, http: httpx.AsyncClient, session_id: str) -> None:
    deleted = await http.delete(server.mcp_url, headers={"Mcp-Session-Id": session_id})
    assert deleted.status_code == 204, deleted.text
    await assert_session_gone(http, server, session_id)
    await server.assert_healthy(http)


async def test_legacy_session_id_is_not_a_streamable_session(server: Checked, http: httpx.AsyncClient) -> None:
    async with open_legacy(http, server) as (endpoint, _events):
        legacy_id = endpoint.rsplit("sessionId=", 1)[1]
        await assert_session_gone(http, server, legacy_id)
    await server.assert_healthy(http)


async def test_unsupported_protocol_version_header_is_bad_request(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    headers = session_headers(session_id, version="1999-01-01")
    post = await http.post(server.mcp_url, json=rpc("ping"), headers=headers)
    assert_rpc_error(post, 400, -32600, request_id=1, mentions=("1999-01-01", "MCP-Protocol-Version"))
    get = await http.get(server.mcp_url, headers={**headers, "Accept": "text/event-stream"})
    assert_rpc_error(get, 400, -32600, mentions=("1999-01-01",))
    garbage = await http.post(server.mcp_url, json=rpc("ping"), headers=session_headers(session_id, "latest"))
    assert_rpc_error(garbage, 400, -32600, request_id=1, mentions=("latest",))

    # A supported version works, and so does no header at all.
    ok = await http.post(server.mcp_url, json=rpc("ping", 17), headers=session_headers(session_id))
    assert assert_result(ok, 17) == {}
    absent = {**POST_HEADERS, "Mcp-Session-Id": session_id}
    assert "MCP-Protocol-Version" not in absent
    ok = await http.post(server.mcp_url, json=rpc("ping", 18), headers=absent)
    assert assert_result(ok, 18) == {}
    await server.assert_healthy(http)


@pytest.mark.parametrize(
    ("last_event_id", "status", "code"),
    [("garbage", 400, -32600), ("r0123456789ab.-1", 400, -32600), ("r0123456789ab.5", 404, -32000)],
)
async def test_bad_last_event_id_is_refused(
    server: Checked, http: httpx.AsyncClient, session_id: str, last_event_id: str, status: int, code: int
) -> None:
    headers = {**session_headers(session_id), "Accept": "text/event-stream", "Last-Event-ID": last_event_id}
    response = await http.get(server.mcp_url, headers=headers)
    assert_rpc_error(response, status, code)
    await server.assert_healthy(http)


# --- Host and Origin (DNS-rebinding protection) --------------------------------------------------------


EVIL_HOSTS = [
    "evil.example",
    "evil.example:80",
    "evil.example@127.0.0.1",
    "127.0.0.1.evil.example",
    "localhost/x",
]


@pytest.mark.parametrize("host", EVIL_HOSTS)
async def test_foreign_host_is_misdirected(server: Checked, http: httpx.AsyncClient, host: str) -> None:
    headers = {**POST_HEADERS, "Host": host}
    post = await http.post(server.mcp_url, json=init_message(), headers=headers)
    assert_rpc_error(post, 421, -32600, mentions=("host",))
    assert "mcp-session-id" not in post.headers
    get = await http.get(server.mcp_url, headers={"Accept": "text/event-stream", "Host": host})
    assert_rpc_error(get, 421, -32600, mentions=("host",))
    delete = await http.delete(server.mcp_url, headers={"Host": host, "Mcp-Session-Id": "whatever"})
    assert_rpc_error(delete, 421, -32600, mentions=("host",))
    await server.assert_healthy(http)


EVIL_ORIGINS = [
    "http://evil.example",
    "https://evil.example:5173",
    "null",
    "http://evil.example@localhost:5173",
]


@pytest.mark.parametrize("origin", EVIL_ORIGINS)
async def test_foreign_origin_is_forbidden(server: Checked, http: httpx.AsyncClient, origin: str) -> None:
    headers = {**POST_HEADERS, "Origin": origin}
    post = await http.post(server.mcp_url, json=init_message(), headers=headers)
    assert_rpc_error(post, 403, -32600, mentions=("origin",))
    assert "mcp-session-id" not in post.headers
    get = await http.get(server.mcp_url, headers={"Accept": "text/event-stream", "Origin": origin})
    assert_rpc_error(get, 403, -32600, mentions=("origin",))
    delete = await http.delete(server.mcp_url, headers={"Origin": origin, "Mcp-Session-Id": "whatever"})
    assert_rpc_error(delete, 403, -32600, mentions=("origin",))
    await server.assert_healthy(http)


async def test_foreign_origin_cannot_use_an_existing_session(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    headers = {**session_headers(session_id), "Origin": "http://evil.example"}
    response = await http.post(server.mcp_url, json=rpc("tools/list"), headers=headers)
    assert_rpc_error(response, 403, -32600, mentions=("origin",))
    delete = await http.delete(server.mcp_url, headers={"Mcp-Session-Id": session_id, "Origin": "http://evil.example"})
    assert_rpc_error(delete, 403, -32600, mentions=("origin",))
    # Neither request touched the session.
    ping = await http.post(server.mcp_url, json=rpc("ping", 19), headers=session_headers(session_id))
    assert assert_result(ping, 19) == {}
    await server.assert_healthy(http)


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:6274", "http://[::1]:5173", "SERVER"])
async def test_local_and_own_origins_are_allowed(server: Checked, http: httpx.AsyncClient, origin: str) -> None:
    origin = server.url if origin == "SERVER" else origin
    response = await http.post(server.mcp_url, json=init_message(), headers={**POST_HEADERS, "Origin": origin})
    assert assert_result(response, 0)["protocolVersion"] == "2025-11-25"
    assert response.headers["mcp-session-id"]
    await server.assert_healthy(http)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:3232"])
async def test_local_hosts_are_allowed(server: Checked, http: httpx.AsyncClient, host: str) -> None:
    response = await http.post(server.mcp_url, json=init_message(), headers={**POST_HEADERS, "Host": host})
    assert assert_result(response, 0)["protocolVersion"] == "2025-11-25"
    await server.assert_healthy(http)


async def test_host_and_origin_are_checked_before_anything_else(server: Checked, http: httpx.AsyncClient) -> None:
    # Every other check would fail too: wrong Accept, wrong Content-Type, oversized-looking, malformed body.
    everything_wrong = {"Accept": "text/html", "Content-Type": "text/plain", "Mcp-Session-Id": "nope"}
    evil_origin = await http.post(
        server.mcp_url, content=b"{bad", headers={**everything_wrong, "Origin": "http://evil.example"}
    )
    assert_rpc_error(evil_origin, 403, -32600, mentions=("origin",))
    evil_origin_good_headers = await post_raw(
        http, server.mcp_url, b"{bad", {**POST_HEADERS, "Origin": "http://evil.example"}
    )
    assert_rpc_error(evil_origin_good_headers, 403, -32600, mentions=("origin",))
    evil_host = await http.post(
        server.mcp_url,
        content=b"{bad",
        headers={**everything_wrong, "Host": "evil.example", "Origin": "http://evil.example"},
    )
    assert_rpc_error(evil_host, 421, -32600, mentions=("host",))
    put = await http.put(server.mcp_url, headers={"Origin": "http://evil.example"})
    assert_rpc_error(put, 403, -32600, mentions=("origin",))
    get = await http.get(server.mcp_url, headers={"Accept": "text/html", "Origin": "http://evil.example"})
    assert_rpc_error(get, 403, -32600, mentions=("origin",))
    await server.assert_healthy(http)


# --- HTTP methods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_unsupported_method_is_method_not_allowed(server: Checked, http: httpx.AsyncClient, method: str) -> None:
    response = await http.request(method, server.mcp_url, json=rpc("ping"), headers=POST_HEADERS)
    assert_rpc_error(response, 405, -32600, mentions=("not allowed",))
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST", "DELETE"} <= allowed
    assert method not in allowed
    await server.assert_healthy(http)


async def test_unrouted_method_is_method_not_allowed_with_allow(server: Checked, http: httpx.AsyncClient) -> None:
    response = await http.request("TRACE", server.mcp_url)
    assert_rpc_error(response, 405, -32600, mentions=("not allowed",))
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST", "DELETE"} <= allowed
    assert "TRACE" not in allowed
    await server.assert_healthy(http)


# --- batches and initialize --------------------------------------------------------------------------------


async def test_batch_on_a_2025_11_25_session_is_invalid_request(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    batch = [rpc("ping", 1), rpc("tools/list", 2)]
    response = await http.post(server.mcp_url, json=batch, headers=session_headers(session_id))
    assert_rpc_error(response, 400, -32600, mentions=("batch",))
    single = await http.post(server.mcp_url, json=[rpc("ping", 3)], headers=session_headers(session_id))
    assert_rpc_error(single, 400, -32600, mentions=("batch",))
    await server.assert_healthy(http)


async def test_batch_on_a_2025_03_26_session_is_answered_with_an_array(
    server: Checked, http: httpx.AsyncClient
) -> None:
    session_id = await initialize(http, server.mcp_url, protocolVersion="2025-03-26")
    batch = [rpc("ping", 1), rpc("tools/list", "two")]
    response = await http.post(server.mcp_url, json=batch, headers=session_headers(session_id, "2025-03-26"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == 2, answers
    by_id = {answer["id"]: answer for answer in answers}
    assert set(by_id) == {1, "two"}
    assert by_id[1]["result"] == {}
    assert any(tool["name"] == "echo" for tool in by_id["two"]["result"]["tools"])
    await server.assert_healthy(http)


async def test_batch_of_failing_requests_on_a_2025_03_26_session_gets_one_error_each(
    server: Checked, http: httpx.AsyncClient
) -> None:
    session_id = await initialize(http, server.mcp_url, protocolVersion="2025-03-26")
    batch = [rpc("no/such/method", 1), rpc("resources/read", 2, {"uri": "test://nope"}), rpc("ping", 3)]
    response = await http.post(server.mcp_url, json=batch, headers=session_headers(session_id, "2025-03-26"))
    assert response.status_code == 200, response.text
    by_id = {answer["id"]: answer for answer in response.json()}
    assert set(by_id) == {1, 2, 3}
    assert by_id[1]["error"]["code"] == -32601
    assert by_id[2]["error"]["code"] == -32002
    assert by_id[3]["result"] == {}
    await server.assert_healthy(http)


async def test_batch_of_notifications_on_a_2025_03_26_session_is_accepted(
    server: Checked, http: httpx.AsyncClient
) -> None:
    session_id = await initialize(http, server.mcp_url, protocolVersion="2025-03-26")
    batch = [{"jsonrpc": "2.0", "method": "notifications/initialized"}, {"jsonrpc": "2.0", "method": "x/y"}]
    response = await http.post(server.mcp_url, json=batch, headers=session_headers(session_id, "2025-03-26"))
    assert response.status_code == 202, response.text
    assert response.content == b""
    await server.assert_healthy(http)


async def test_batch_with_one_invalid_element_answers_the_valid_ones(server: Checked, http: httpx.AsyncClient) -> None:
    session_id = await initialize(http, server.mcp_url, protocolVersion="2025-03-26")
    batch = [rpc("ping", 1), {"foo": 1}]
    response = await http.post(server.mcp_url, json=batch, headers=session_headers(session_id, "2025-03-26"))
    assert response.status_code == 200, response.text
    answers = response.json()
    assert {a["id"] for a in answers} == {1, None}
    await server.assert_healthy(http)


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([init_message()], id="alone"),
        pytest.param([init_message(), rpc("ping", 1)], id="first"),
        pytest.param([rpc("ping", 1), init_message()], id="second"),
    ],
)
async def test_initialize_inside_a_batch_is_refused(
    server: Checked, http: httpx.AsyncClient, batch: list[dict[str, Any]]
) -> None:
    before = (await http.get(f"{server.url}/health")).json()["sessions"]
    response = await http.post(server.mcp_url, json=batch, headers=POST_HEADERS)
    assert response.status_code == 400, response.text
    error = assert_rpc_error(response, 400, -32600)
    assert "batch" in error["message"].lower() or "mcp-session-id" in error["message"].lower()
    assert "mcp-session-id" not in response.headers
    assert (await http.get(f"{server.url}/health")).json()["sessions"] == before
    await server.assert_healthy(http)


async def test_initialize_with_bad_params_is_refused_without_a_session(
    server: Checked, http: httpx.AsyncClient
) -> None:
    before = (await http.get(f"{server.url}/health")).json()["sessions"]
    no_params = await http.post(server.mcp_url, json=rpc("initialize", 5), headers=POST_HEADERS)
    assert_rpc_error(no_params, 400, -32602, request_id=5, mentions=("initialize",))
    assert "mcp-session-id" not in no_params.headers
    no_client_info = await http.post(
        server.mcp_url, json=rpc("initialize", 6, {"capabilities": {}}), headers=POST_HEADERS
    )
    assert_rpc_error(no_client_info, 400, -32602, request_id=6)
    assert (await http.get(f"{server.url}/health")).json()["sessions"] == before
    await server.assert_healthy(http)


async def test_second_initialize_on_a_session_is_refused(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    response = await http.post(server.mcp_url, json=init_message(9), headers=session_headers(session_id))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["code"] == -32600, body
    assert "already initialized" in body["error"]["message"]
    assert body["id"] in (9, None)  # null today (see the report); echoing 9 would be better
    assert "mcp-session-id" not in response.headers
    # The session keeps working.
    ping = await http.post(server.mcp_url, json=rpc("ping", 20), headers=session_headers(session_id))
    assert assert_result(ping, 20) == {}
    await server.assert_healthy(http)


# --- connection reuse after an early refusal ----------------------------------------------------------


async def h11_exchange(stream: trio.SocketStream, conn: h11.Connection) -> list[Any]:
    """Read one complete response (or the connection's end) from the server."""
    events: list[Any] = []
    with trio.fail_after(REUSE_WAIT):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            events.append(event)
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return events


EARLY_REFUSALS = [
    pytest.param("POST", "/mcp", {"Accept": "text/html", "Content-Type": "application/json"}, 406, id="accept"),
    pytest.param("POST", "/mcp", {"Accept": POST_HEADERS["Accept"], "Content-Type": "text/plain"}, 415, id="type"),
    pytest.param("POST", "/mcp", {**POST_HEADERS, "Origin": "http://evil.example"}, 403, id="origin"),
    pytest.param("POST", "/mcp", {**POST_HEADERS, "Host": "evil.example"}, 421, id="host"),
    pytest.param("PUT", "/mcp", POST_HEADERS, 405, id="put"),
    pytest.param("POST", "/health", POST_HEADERS, 405, id="routing-405"),
    pytest.param("POST", "/message?sessionId=nope", {"Content-Type": "application/json"}, 404, id="legacy-session"),
]


@pytest.mark.parametrize(("method", "target", "headers", "status"), EARLY_REFUSALS)
async def test_refusal_before_the_body_arrives_does_not_hang_the_connection(
    server: Checked, http: httpx.AsyncClient, method: str, target: str, headers: dict[str, str], status: int
) -> None:
    """The server answers before the body arrives; the client then sends the body and reuses the connection.

    Either the refusal says `Connection: close` (the client must not reuse the connection), or the next
    request on it is answered. A connection that is kept alive but never answers again is the bug.
    """
    body = json.dumps(rpc("ping")).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", server.process.port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        all_headers = {"Host": f"127.0.0.1:{server.process.port}", **headers, "Content-Length": str(len(body))}
        await stream.send_all(conn.send(h11.Request(method=method, target=target, headers=list(all_headers.items()))))
        refusal = await h11_exchange(stream, conn)
        response = refusal[0]
        assert isinstance(response, h11.Response) and response.status_code == status, refusal
        data = b"".join(bytes(e.data) for e in refusal if isinstance(e, h11.Data))
        assert json.loads(data)["error"]["message"]

        await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        if conn.their_state is h11.MUST_CLOSE:
            return  # told not to reuse it: fine
        assert conn.our_state is h11.DONE and conn.their_state is h11.DONE
        conn.start_next_cycle()
        health = h11.Request(method="GET", target="/health", headers=[("Host", f"127.0.0.1:{server.process.port}")])
        await stream.send_all(conn.send(health) + conn.send(h11.EndOfMessage()))
        try:
            follow_up = await h11_exchange(stream, conn)
        except trio.TooSlowError:
            pytest.fail(f"keep-alive connection hung after a {status} sent before the request body was read")
        assert isinstance(follow_up[0], h11.Response) and follow_up[0].status_code == 200
    await server.assert_healthy(http)


async def test_head_is_method_not_allowed(server: Checked, http: httpx.AsyncClient) -> None:
    """HEAD of an SSE endpoint would open a stream only to suppress it: refused, with the methods that work."""
    response = await http.head(server.mcp_url, headers={"Accept": "text/event-stream"})
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "POST", "DELETE"}
    await server.assert_healthy(http)


@pytest.mark.parametrize("with_session", [False, True], ids=["initialize", "on-a-session"])
async def test_client_leaving_mid_body_leaves_no_trace(
    server: Checked, http: httpx.AsyncClient, with_session: bool
) -> None:
    """A POST whose client goes away halfway through its body: nothing runs, nothing is logged as an error."""
    headers = {**POST_HEADERS, "Host": f"127.0.0.1:{server.process.port}", "Content-Length": "4000"}
    if with_session:
        headers.update(session_headers(await initialize(http, server.mcp_url)))
    request_ids = [f"left-mid-body-{secrets.token_hex(6)}" for _ in range(3)]
    for request_id in request_ids:
        stream = await trio.open_tcp_stream("127.0.0.1", server.process.port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            head = [*headers.items(), ("X-Request-ID", request_id)]
            request = h11.Request(method="POST", target="/mcp", headers=head)
            await stream.send_all(conn.send(request) + conn.send(h11.Data(data=b'{"jsonrpc":"2.0","id":1,')))
            # A real sleep: a client that stalls mid-body is the case, so the server is waiting when it leaves.
            await trio.sleep(0.05)

    def finished() -> set[str]:
        """The requests the server is done with: their access line is its last word on them, with no status."""
        return {d["request_id"] for d in server.new_access_lines() if d["status"] is None}

    await wait_until(lambda: finished() >= set(request_ids), SSE_WAIT, "the server to be done with the requests")
    await server.assert_healthy(http)


# --- legacy HTTP+SSE transport ----------------------------------------------------------------------------


class LegacyStream:
    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def next_data(self) -> str:
        with trio.fail_after(SSE_WAIT):
            async for line in self._lines:
                if line.startswith("data:"):
                    return line[5:].strip()
        raise AssertionError("SSE stream ended")

    async def next_reply(self) -> dict[str, Any]:
        """The next response on the stream; the demo's periodic log notifications may arrive in between."""
        while True:
            message = json.loads(await self.next_data())
            if "id" in message:
                return message


@asynccontextmanager
async def open_legacy(http: httpx.AsyncClient, server: Checked) -> AsyncIterator[tuple[str, LegacyStream]]:
    """GET /sse, read the `endpoint` event; yield the absolute POST URL and a reader for the stream."""
    async with http.stream("GET", f"{server.url}/sse", headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = LegacyStream(response.aiter_lines())
        path = await events.next_data()
        assert path.startswith("/message?sessionId="), path
        yield f"{server.url}{path}", events


async def test_legacy_post_without_session_id_is_bad_request(server: Checked, http: httpx.AsyncClient) -> None:
    response = await http.post(f"{server.url}/message", json=rpc("ping"))
    assert_rpc_error(response, 400, -32600, mentions=("sessionId",))
    empty = await http.post(f"{server.url}/message?sessionId=", json=rpc("ping"))
    assert_rpc_error(empty, 400, -32600, mentions=("sessionId",))
    await server.assert_healthy(http)


async def test_legacy_post_with_unknown_session_id_is_not_found(
    server: Checked, http: httpx.AsyncClient, session_id: str
) -> None:
    unknown = await http.post(f"{server.url}/message?sessionId=no-such-session", json=rpc("ping"))
    assert_rpc_error(unknown, 404, -32000, mentions=("session not found",))
    # A Streamable HTTP session is not a legacy session.
    streamable = await http.post(f"{server.url}/message", params={"sessionId": session_id}, json=rpc("ping"))
    assert_rpc_error(streamable, 404, -32000, mentions=("session not found",))
    await server.assert_healthy(http)


@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_legacy_post_with_wrong_content_type_is_unsupported_media_type(
    server: Checked, http: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with open_legacy(http, server) as (endpoint, _events):
        response = await http.post(endpoint, content=json.dumps(rpc("ping")), headers=headers)
        assert_rpc_error(response, 415, -32600, mentions=("content-type",))
    no_session = await http.post(f"{server.url}/message", content=b"x", headers={"Content-Type": "text/plain"})
    assert_rpc_error(no_session, 415, -32600)
    await server.assert_healthy(http)


async def test_legacy_get_without_event_stream_accept_is_not_acceptable(
    server: Checked, http: httpx.AsyncClient
) -> None:
    before = (await http.get(f"{server.url}/health")).json()["sessions"]
    response = await http.get(f"{server.url}/sse", headers={"Accept": "application/json"})
    assert_rpc_error(response, 406, -32600, mentions=("text/event-stream",))
    assert (await http.get(f"{server.url}/health")).json()["sessions"] == before
    await server.assert_healthy(http)


async def test_legacy_refuses_foreign_origin_and_host(server: Checked, http: httpx.AsyncClient) -> None:
    sse = await http.get(f"{server.url}/sse", headers={"Accept": "text/event-stream", "Origin": "http://evil.example"})
    assert_rpc_error(sse, 403, -32600, mentions=("origin",))
    async with open_legacy(http, server) as (endpoint, _events):
        post = await http.post(endpoint, content=b"{bad", headers={"Origin": "http://evil.example"})
        assert_rpc_error(post, 403, -32600, mentions=("origin",))
        host = await http.post(endpoint, json=rpc("ping"), headers={"Host": "evil.example"})
        assert_rpc_error(host, 421, -32600, mentions=("host",))
    await server.assert_healthy(http)


async def test_legacy_message_is_accepted_and_answered_on_the_stream(server: Checked, http: httpx.AsyncClient) -> None:
    async with open_legacy(http, server) as (endpoint, events):
        accepted = await http.post(endpoint, json=rpc("initialize", 0, LEGACY_INIT_PARAMS))
        assert accepted.status_code == 202, accepted.text
        answer = await events.next_reply()
        assert answer["id"] == 0 and answer["result"]["protocolVersion"] == "2024-11-05"

        note = await http.post(endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert note.status_code == 202, note.text

        # Errors of a well-formed request arrive on the stream too, with the request id.
        unknown = await http.post(endpoint, json=rpc("no/such/method", 21))
        assert unknown.status_code == 202, unknown.text
        error = await events.next_reply()
        assert error["id"] == 21 and error["error"]["code"] == -32601

        # Malformed bodies are refused on the POST itself.
        malformed = await post_raw(http, endpoint, b"{bad", {"Content-Type": "application/json"})
        assert_rpc_error(malformed, 400, -32700, mentions=("json",))
        invalid = await http.post(endpoint, json={"jsonrpc": "1.0", "id": 22, "method": "ping"})
        assert_rpc_error(invalid, 400, -32600, request_id=22, mentions=("2.0",))
        batch = await http.post(endpoint, json=[rpc("ping", 23)])
        assert_rpc_error(batch, 400, -32600, mentions=("batch",))

        ping = await http.post(endpoint, json=rpc("ping", 24))
        assert ping.status_code == 202
        assert await events.next_reply() == {"jsonrpc": "2.0", "id": 24, "result": {}}
    await server.assert_healthy(http)

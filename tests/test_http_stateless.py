"""The 2026-07-28 era over real HTTP: what each kind of bad input gets (the spec's error, never a 500), the
answers' shapes, a multi round-trip call, a listen stream, and the 2025 era untouched beside it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from refserver.protocol.sse import SSEDecoder
from tests.conftest import (
    MODERN_META,
    POST_HEADERS,
    ServerProcess,
    initialize,
    modern_request,
    session_headers,
    wait_until,
)
from tests.test_http_errors import Checked

TEST_TIMEOUT = 20.0


@pytest.fixture
def server(shared_server: ServerProcess) -> Checked:
    return Checked(shared_server)


async def post(http: httpx.AsyncClient, server: Checked, body: Any, headers: dict[str, str]) -> httpx.Response:
    return await http.post(server.mcp_url, content=json.dumps(body).encode(), headers=headers)


def error_of(response: httpx.Response, status: int, code: int, request_id: Any) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"] == request_id, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


async def test_bad_envelopes_get_the_specs_errors_in_order(server: Checked, http: httpx.AsyncClient) -> None:
    body, headers = modern_request("tools/call", {"name": "echo", "arguments": {"message": "x"}}, request_id=7)
    cases: list[tuple[dict[str, Any], dict[str, str], int, int]] = []
    no_meta = {**body, "params": {"name": "echo", "arguments": {"message": "x"}}}
    cases.append((no_meta, headers, 400, -32602))
    meta_not_object = {**body, "params": {**body["params"], "_meta": "2026-07-28"}}
    cases.append((meta_not_object, headers, 400, -32602))
    no_capabilities = {
        **body,
        "params": {**body["params"], "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}},
    }
    cases.append((no_capabilities, headers, 400, -32602))
    cases.append((body, {**headers, "Mcp-Method": "tools/list"}, 400, -32020))
    cases.append((body, {**headers, "Mcp-Name": "add"}, 400, -32020))
    cases.append((body, {k: v for k, v in headers.items() if k != "Mcp-Name"}, 400, -32020))
    future = {
        **body,
        "params": {**body["params"], "_meta": {**MODERN_META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}},
    }
    cases.append((future, headers, 400, -32020))  # the header says 2026-07-28: mismatch before the version
    cases.append((future, {**headers, "MCP-Protocol-Version": "2099-01-01"}, 400, -32022))
    bad_level = {**body, "params": {**body["params"], "_meta": {**MODERN_META, "io.modelcontextprotocol/logLevel": 3}}}
    cases.append((bad_level, headers, 400, -32602))
    for case_body, case_headers, status, code in cases:
        error = error_of(await post(http, server, case_body, case_headers), status, code, 7)
        if code == -32022:
            assert error["data"] == {"supported": ["2026-07-28"], "requested": "2099-01-01"}
    # A body that forgot its version header is still recognised as 2026, and told.
    forgot = await post(http, server, body, {k: v for k, v in headers.items() if k != "MCP-Protocol-Version"})
    error_of(forgot, 400, -32020, 7)
    await server.assert_healthy(http)


async def test_methods_the_revision_removed_and_what_is_not_json_rpc(server: Checked, http: httpx.AsyncClient) -> None:
    for method in ("initialize", "ping", "logging/setLevel", "resources/subscribe", "no/such"):
        body, headers = modern_request(method, request_id=method)
        error_of(await post(http, server, body, headers), 404, -32601, method)
    body, headers = modern_request("tools/list", request_id=3)
    error_of(await post(http, server, [body], headers), 400, -32600, None)  # no batches
    reply = {"jsonrpc": "2.0", "id": 3, "result": {}}
    error_of(await post(http, server, reply, headers), 400, -32600, None)
    note = await post(http, server, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}}, headers)
    assert note.status_code == 202
    raw = await http.post(server.mcp_url, content=b'{"jsonrpc":', headers=headers)
    error_of(raw, 400, -32700, None)
    stream = await http.get(server.mcp_url, headers={**headers, "Accept": "text/event-stream"})
    assert stream.status_code == 405
    deleted = await http.delete(server.mcp_url, headers=headers)
    assert deleted.status_code == 405
    await server.assert_healthy(http)


async def test_a_multi_round_trip_call_and_every_forgery(server: Checked, http: httpx.AsyncClient) -> None:
    arguments: dict[str, Any] = {}
    name = "test_input_required_result_multi_round"
    body, headers = modern_request("tools/call", {"name": name, "arguments": arguments}, request_id=1)
    first = (await post(http, server, body, headers)).json()["result"]
    assert first["resultType"] == "input_required" and set(first["inputRequests"]) == {"step1"}
    state = first["requestState"]
    answer = {"step1": {"action": "accept", "content": {"name": "Ada"}}}

    def retry(request_id: int, **params: Any) -> tuple[dict[str, Any], dict[str, str]]:
        return modern_request("tools/call", {"name": name, "arguments": arguments, **params}, request_id=request_id)

    second = (await post(http, server, *retry(2, inputResponses=answer, requestState=state))).json()["result"]
    assert second["resultType"] == "input_required" and set(second["inputRequests"]) == {"step2"}
    assert second["requestState"] != state
    final = await post(
        http,
        server,
        *retry(
            3,
            inputResponses={"step2": {"action": "accept", "content": {"color": "teal"}}},
            requestState=second["requestState"],
        ),
    )
    assert final.json()["result"]["content"][0]["text"] == "Ada's favorite color is teal"

    flipped = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
    for forged in (state + "-TAMPERED", flipped, "rs1.AAAA", "not ours", 42, None):
        error_of(await post(http, server, *retry(4, inputResponses=answer, requestState=forged)), 400, -32602, 4)
    # Bound to its request: the state of this tool does not open another tool's call.
    other = modern_request(
        "tools/call",
        {"name": "test_input_required_result_request_state", "arguments": {}, "requestState": state},
        request_id=5,
    )
    error_of(await post(http, server, *other), 400, -32602, 5)
    oversized = {f"k{i}": {"action": "accept", "content": {"v": "x" * 10_000}} for i in range(30)}
    error_of(await post(http, server, *retry(6, inputResponses=oversized, requestState=state)), 400, -32602, 6)
    error_of(await post(http, server, *retry(7, inputResponses={"step1": 12345})), 400, -32602, 7)
    error_of(await post(http, server, *retry(8, inputResponses=None)), 400, -32602, 8)
    # A retry that lacks the answer is asked again, not refused.
    again_response = await post(
        http, server, *retry(9, inputResponses={"other": {"action": "decline"}}, requestState=state)
    )
    again = again_response.json().get("result") or again_response.json()
    assert again.get("resultType") == "input_required", again
    await server.assert_healthy(http)


async def test_progress_streams_and_logs_only_when_asked(server: Checked, http: httpx.AsyncClient) -> None:
    params = {"name": "test_tool_with_logging", "arguments": {}}
    body, headers = modern_request("tools/call", params, request_id=1)
    quiet = await post(http, server, body, headers)
    assert quiet.headers["content-type"].startswith("application/json"), "no logs without a logLevel"
    body, headers = modern_request("tools/call", params, request_id=2, **{"io.modelcontextprotocol/logLevel": "info"})
    with trio.fail_after(TEST_TIMEOUT):
        async with http.stream("POST", server.mcp_url, content=json.dumps(body).encode(), headers=headers) as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            decoder = SSEDecoder()
            messages = []
            async for chunk in streamed.aiter_bytes():
                messages.extend(json.loads(event.data) for event in decoder.feed(chunk) if event.data)
    assert [m.get("method") for m in messages] == ["notifications/message"] * 3 + [None]
    assert messages[-1]["id"] == 2 and messages[-1]["result"]["resultType"] == "complete"
    await server.assert_healthy(http)


async def test_listen_is_acknowledged_and_carries_only_what_it_asked_for(
    server: Checked, http: httpx.AsyncClient
) -> None:
    body, headers = modern_request(
        "subscriptions/listen", {"notifications": {"promptsListChanged": True}}, request_id="L"
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with http.stream("POST", server.mcp_url, content=json.dumps(body).encode(), headers=headers) as listening:
            assert listening.headers["content-type"].startswith("text/event-stream")
            decoder = SSEDecoder()
            chunks = listening.aiter_bytes()
            messages: list[dict[str, Any]] = []

            async def next_message() -> dict[str, Any]:
                while not messages:
                    messages.extend(json.loads(e.data) for e in decoder.feed(await chunks.__anext__()) if e.data)
                return messages.pop(0)

            ack = await next_message()
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            assert ack["params"]["notifications"] == {"promptsListChanged": True}
            for trigger in ("test_trigger_tool_change", "test_trigger_prompt_change"):
                call, call_headers = modern_request("tools/call", {"name": trigger, "arguments": {}})
                assert (await post(http, server, call, call_headers)).status_code == 200
            changed = await next_message()  # the tool change was not asked for: the prompt change comes first
            assert changed["method"] == "notifications/prompts/list_changed"
            assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L"
    body, headers = modern_request("subscriptions/listen", {"notifications": "all"}, request_id="M")
    error_of(await post(http, server, body, headers), 400, -32602, "M")
    await server.assert_healthy(http)


async def test_both_eras_on_one_endpoint_at_once(server: Checked, http: httpx.AsyncClient) -> None:
    session = await initialize(http, server.mcp_url)
    legacy = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "old"}},
    }
    modern_body, modern_headers = modern_request("tools/call", {"name": "echo", "arguments": {"message": "new"}})
    results: dict[str, Any] = {}

    async def call_legacy() -> None:
        results["legacy"] = (await http.post(server.mcp_url, json=legacy, headers=session_headers(session))).json()

    async def call_modern() -> None:
        results["modern"] = (await post(http, server, modern_body, modern_headers)).json()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call_legacy)
        nursery.start_soon(call_modern)
    assert results["legacy"]["result"]["content"][0]["text"] == "Echo: old"
    assert "resultType" not in results["legacy"]["result"]  # 2025 results keep their 2025 shape
    assert results["modern"]["result"]["content"][0]["text"] == "Echo: new"
    assert results["modern"]["result"]["resultType"] == "complete"
    # A session's request stays 2025 even when it carries the 2026 envelope.
    sessioned = {**legacy, "params": {**legacy["params"], "_meta": MODERN_META}}
    kept = await http.post(server.mcp_url, json=sessioned, headers=session_headers(session))
    assert kept.status_code == 200 and "resultType" not in kept.json()["result"]
    assert POST_HEADERS["Accept"]
    await server.assert_healthy(http)


async def test_requests_in_flight_are_bounded(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(max_requests_in_flight=1)
    long_call, headers = modern_request(
        "tools/call",
        {"name": "longRunningOperation", "arguments": {"duration": 3, "steps": 3}, "_meta": {}},
        request_id=1,
    )
    long_call["params"]["_meta"]["progressToken"] = "p"
    with trio.fail_after(TEST_TIMEOUT):
        async with http.stream("POST", server.mcp_url, content=json.dumps(long_call).encode(), headers=headers) as busy:
            decoder = SSEDecoder()
            chunks = busy.aiter_bytes()
            while not any(e.data for e in decoder.feed(await chunks.__anext__())):
                pass  # the first progress notification: the call is running
            echo, echo_headers = modern_request(
                "tools/call", {"name": "echo", "arguments": {"message": "x"}}, request_id=2
            )
            refused = await http.post(server.mcp_url, json=echo, headers=echo_headers)
            assert refused.status_code == 503 and refused.json()["id"] == 2

    # The slot is free again once the call has ended (its stream closed: the call was cancelled).
    async def served() -> bool:
        return (await http.post(server.mcp_url, json=echo, headers=echo_headers)).status_code == 200

    await wait_until(served, 10, "the slot of the cancelled call to be free again")


async def test_a_listener_beyond_the_limit_gets_503(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(max_listeners=1)
    body, headers = modern_request("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, request_id=1)
    with trio.fail_after(TEST_TIMEOUT):
        async with http.stream("POST", server.mcp_url, content=json.dumps(body).encode(), headers=headers) as first:
            assert first.status_code == 200
            chunks = first.aiter_bytes()  # held: an iterator dropped would close the stream, ending the listener
            await chunks.__anext__()  # the acknowledgement: the listener is registered
            refused = await http.post(server.mcp_url, json={**body, "id": 2}, headers=headers)
            error_of(refused, 503, -32000, 2)
            await chunks.aclose()

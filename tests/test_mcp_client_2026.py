"""The official `mcp` SDK client in the stateless 2026-07-28 era against a real refserver process.

tests/test_mcp_client.py drives the same features through the 2025-11-25 handshake (`mode="legacy"`); here
`mcp.Client` negotiates on its own (`mode="auto"` probes `server/discover`) or is pinned to 2026-07-28, so
the `_meta` envelope, `InputRequiredResult` rounds, `subscriptions/listen`, the routing headers and the
caching hints are checked against what a real client library sends and accepts. An HTTP hook records every
request the SDK makes, so "no session", "one discover" and "served from the cache" are seen on the wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import httpx2
import jsonschema
import mcp_types as types
import pytest
import trio
from mcp import Client, MCPError
from mcp.client.caching import CacheConfig
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, Subscription, ToolsListChanged

from refserver.oauth.headless import obtain_tokens
from tests.auth_servers import mcp_server, running
from tests.conftest import MODERN_VERSION, ServerProcess, free_port, server_env
from tests.test_mcp_client import (
    TEMPLATE,
    TOOL_NAMES,
    Recorder,
    assert_tiny_png,
    dump,
    expected_contents,
    only_text,
    resource_uri,
    tapped,
)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

TEST_TIMEOUT = 30.0
"""Upper bound on any one test body: nothing may hang."""
READ_TIMEOUT = 15.0
"""The SDK's own per-request timeout, a second line behind `trio.fail_after`."""
EVENT_WAIT = 10.0
"""Bound on waiting for something another task or the server's periodic loop sends."""

INVALID_PARAMS = -32602
MISSING_CAPABILITY = -32021
PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"


# --- the wire, as the SDK's HTTP client sent it ----------------------------------------------------------


@attrs.frozen
class Sent:
    """One HTTP request the SDK made: its routing headers and, for a POST, the JSON-RPC body."""

    http_method: str
    mcp_method: str | None
    mcp_name: str | None
    session_id: str | None
    protocol_version: str | None
    body: dict[str, Any] | None

    @property
    def rpc_method(self) -> str | None:
        return None if self.body is None else self.body.get("method")

    @property
    def meta(self) -> dict[str, Any]:
        params = (self.body or {}).get("params") or {}
        meta: dict[str, Any] = params.get("_meta") or {}
        return meta


class HttpLog:
    """An httpx2 request hook that keeps every request in the order the SDK sent it."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def hook(self, request: httpx2.Request) -> None:
        body = json.loads(request.content) if request.method == "POST" and request.content else None
        self.sent.append(
            Sent(
                http_method=request.method,
                mcp_method=request.headers.get("mcp-method"),
                mcp_name=request.headers.get("mcp-name"),
                session_id=request.headers.get("mcp-session-id"),
                protocol_version=request.headers.get("mcp-protocol-version"),
                body=body if isinstance(body, dict) else None,
            )
        )

    def rpc_methods(self) -> list[str | None]:
        return [s.rpc_method for s in self.sent if s.body is not None]

    def count(self, method: str) -> int:
        return self.rpc_methods().count(method)


@asynccontextmanager
async def logged_http(headers: dict[str, str] | None = None) -> AsyncIterator[tuple[httpx2.AsyncClient, HttpLog]]:
    log = HttpLog()
    timeout = httpx2.Timeout(READ_TIMEOUT, read=60.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks={"request": [log.hook]}) as http:
        yield http, log


def recorder_callbacks(recorder: Recorder) -> dict[str, Any]:
    return {
        "logging_callback": recorder.logging,
        "message_handler": recorder.messages,
        "sampling_callback": recorder.sampling,
        "elicitation_callback": recorder.elicitation,
    }


def make_client(server: Any, recorder: Recorder | None = None, **kwargs: Any) -> Client:
    """A client that negotiates by itself (`mode="auto"`); `cache=None` unless a test is about the cache."""
    kwargs.setdefault("mode", "auto")
    kwargs.setdefault("cache", None)
    if recorder is not None:
        kwargs = {**recorder_callbacks(recorder), **kwargs}
    return Client(server, read_timeout_seconds=READ_TIMEOUT, **kwargs)


@asynccontextmanager
async def logged_client(
    mcp_url: str,
    recorder: Recorder | None = None,
    *,
    headers: dict[str, str] | None = None,
    wire: list[types.JSONRPCMessage] | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[Client, HttpLog]]:
    """`make_client` over an HTTP client whose requests are logged (and, with `wire`, inbound messages tapped)."""
    async with logged_http(headers) as (http, log):
        transport: Any = streamable_http_client(mcp_url, http_client=http)
        if wire is not None:
            transport = tapped(transport, wire)
        async with make_client(transport, recorder, **kwargs) as client:
            yield client, log


def start_server(directory: Path, features: str) -> ServerProcess:
    port = free_port()
    server = ServerProcess(
        port,
        server_env(
            base_url=f"http://127.0.0.1:{port}",
            features=features,
            subscription_update_interval=0.5,
            log_message_interval=0.5,
        ),
        directory / "server.log",
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Only the seed's feature module, so listings are exactly the reference server's."""
    server = start_server(tmp_path_factory.mktemp("reference-2026"), "reference")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Reference plus conformance: the logging and list-change fixtures live in the conformance module."""
    server = start_server(tmp_path_factory.mktemp("mixed-2026"), "reference,conformance")
    yield server
    server.stop()


@pytest.fixture
def url(reference_server: ServerProcess) -> str:
    return reference_server.mcp_url


def notifications(wire: list[types.JSONRPCMessage], method: str) -> list[dict[str, Any]]:
    return [m.params or {} for m in wire if isinstance(m, types.JSONRPCNotification) and m.method == method]


# --- negotiation -----------------------------------------------------------------------------------------


async def test_auto_mode_discovers_2026_07_28_and_takes_server_info_from_discover(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with logged_client(url) as (client, log):
            assert client.protocol_version == MODERN_VERSION
            discovered = client.session.discover_result
            assert discovered is not None
            assert client.session.initialize_result is None
            assert MODERN_VERSION in discovered.supported_versions
            assert client.server_info is not None
            assert client.server_info.name == "refserver"
            caps = client.server_capabilities
            assert caps == discovered.capabilities
            assert caps.tools is not None
            assert caps.resources is not None
            assert caps.resources.subscribe is True
            assert caps.prompts is not None
            assert caps.logging is not None
            assert caps.completions is not None
            assert client.instructions
            assert "refserver" in client.instructions
            await client.list_tools()  # so that result validation needs no further round trip
            echoed = await client.call_tool("echo", {"message": "after discover"})

    assert only_text(echoed) == "Echo: after discover"
    # One probe, no handshake, no session: every request stands alone with its own envelope.
    assert log.rpc_methods() == ["server/discover", "tools/list", "tools/call"]
    for sent in log.sent:
        assert sent.http_method == "POST"
        assert sent.session_id is None
        assert sent.protocol_version == MODERN_VERSION
        assert sent.mcp_method == sent.rpc_method
        assert sent.meta[PROTOCOL_VERSION_KEY] == MODERN_VERSION
    call = log.sent[-1]
    assert call.mcp_name == "echo"
    # No sampling or elicitation callback, so the client declares neither.
    assert not {"sampling", "elicitation"} & set(call.meta[CLIENT_CAPABILITIES_KEY])
    assert LOG_LEVEL_KEY not in call.meta


async def test_pinned_mode_sends_no_probe_and_reuses_a_prior_discover(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as probing:
            prior = probing.session.discover_result
        assert prior is not None
        async with logged_http() as (http, log):
            async with make_client(streamable_http_client(url, http_client=http), mode=MODERN_VERSION) as bare:
                assert bare.protocol_version == MODERN_VERSION
                assert bare.server_info is None  # nothing was discovered: the SDK synthesizes an empty result
                bare_echo = await bare.call_tool("echo", {"message": "pinned"})
            async with make_client(
                streamable_http_client(url, http_client=http), mode=MODERN_VERSION, prior_discover=prior
            ) as primed:
                assert primed.server_info is not None
                assert primed.server_info.name == "refserver"
                assert primed.server_capabilities.tools is not None
                primed_sum = await primed.call_tool("add", {"a": 1, "b": 2})
    assert only_text(bare_echo) == "Echo: pinned"
    assert only_text(primed_sum) == "The sum of 1 and 2 is 3."
    assert "server/discover" not in log.rpc_methods()
    assert log.count("tools/call") == 2


# --- tools -----------------------------------------------------------------------------------------------


async def test_list_tools_names_schemas_and_caching_hints(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            listed = await client.list_tools()
    assert listed.next_cursor is None
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == TOOL_NAMES
    for tool in tools.values():
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
    weather_schema = tools["getWeather"].output_schema
    assert weather_schema is not None
    assert set(weather_schema["required"]) == {"temperature", "conditions", "humidity"}
    assert listed.ttl_ms is not None
    assert listed.ttl_ms > 0


async def test_echo_add_and_unknown_tool(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            echoed = await client.call_tool("echo", {"message": "hello, wörld ✓"})
            summed = await client.call_tool("add", {"a": 2, "b": 3.5})
            invalid = await client.call_tool("echo", {"message": 5})
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("noSuchTool", {})
    assert not echoed.is_error
    assert only_text(echoed) == "Echo: hello, wörld ✓"
    assert only_text(summed) == "The sum of 2 and 3.5 is 5.5."
    assert invalid.is_error is True
    assert only_text(invalid).startswith("Invalid arguments for tool echo: ")
    assert unknown.value.code == INVALID_PARAMS
    assert "noSuchTool" in unknown.value.message


async def test_long_running_operation_reports_progress_in_order_before_the_result(url: str) -> None:
    steps = 4
    wire: list[types.JSONRPCMessage] = []
    updates: list[tuple[float, float | None, str | None]] = []
    progress_seen = trio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))
        if len(updates) == steps:
            progress_seen.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(tapped(streamable_http_client(url), wire)) as client:
            assert client.protocol_version == MODERN_VERSION
            await client.list_tools()
            result = await client.call_tool(
                "longRunningOperation", {"duration": 0.8, "steps": steps}, progress_callback=on_progress
            )
            # Callbacks run in tasks the SDK spawns; give the last one a moment to run.
            with trio.fail_after(2):
                await progress_seen.wait()

    assert only_text(result) == f"Long running operation completed. Duration: 0.8 seconds, Steps: {steps}."
    assert updates == [(float(step), float(steps), f"Step {step} of {steps}") for step in range(1, steps + 1)]
    call_response = next(
        i
        for i, m in enumerate(wire)
        if isinstance(m, types.JSONRPCResponse) and "Long running operation" in json.dumps(m.result)
    )
    progress_at = [
        i
        for i, m in enumerate(wire)
        if isinstance(m, types.JSONRPCNotification) and m.method == "notifications/progress"
    ]
    assert len(progress_at) == steps
    assert all(i < call_response for i in progress_at)
    assert [p["progress"] for p in notifications(wire, "notifications/progress")] == list(range(1, steps + 1))


async def test_sample_llm_runs_as_an_input_required_round_trip(url: str) -> None:
    recorder = Recorder(sampled_text="The sky is blue.")
    wire: list[types.JSONRPCMessage] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with logged_client(url, recorder, wire=wire) as (client, log):
            result = await client.call_tool("sampleLLM", {"prompt": "Why is the sky blue?", "maxTokens": 42})

    assert not result.is_error
    assert only_text(result) == "LLM sampling result: The sky is blue."
    (request,) = recorder.sampling_requests
    assert request.messages == [
        types.SamplingMessage(
            role="user", content=types.TextContent(text="Resource sampleLLM context: Why is the sky blue?")
        )
    ]
    assert request.max_tokens == 42
    assert request.system_prompt == "You are a helpful test server."
    # The server never sent a request of its own: it answered InputRequiredResult, and the SDK retried the call
    # with the answer (sampleLLM keeps no state between rounds, so there is no requestState to echo).
    assert not [m for m in wire if isinstance(m, types.JSONRPCRequest)]
    asked = [
        m.result
        for m in wire
        if isinstance(m, types.JSONRPCResponse) and m.result.get("resultType") == "input_required"
    ]
    assert len(asked) == 1
    ((key, input_request),) = asked[0]["inputRequests"].items()
    assert input_request["method"] == "sampling/createMessage"
    assert "requestState" not in asked[0]
    calls = [s.body["params"] for s in log.sent if s.rpc_method == "tools/call" and s.body is not None]
    assert len(calls) == 2
    first, retry = calls
    assert "inputResponses" not in first
    assert list(retry["inputResponses"]) == [key]
    assert retry["arguments"] == first["arguments"]
    assert first["_meta"][CLIENT_CAPABILITIES_KEY].get("sampling") is not None


async def test_sealed_request_state_is_carried_through_two_rounds(mixed_server: ServerProcess) -> None:
    """A conformance fixture that asks twice, its state evolving: the SDK echoes each sealed state untouched."""
    answers = iter([{"name": "Ada"}, {"color": "teal"}])

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content=next(answers))

    with trio.fail_after(TEST_TIMEOUT):
        async with logged_client(mixed_server.mcp_url, elicitation_callback=elicit) as (client, log):
            await client.list_tools()
            result = await client.call_tool("test_input_required_result_multi_round", {})
    assert only_text(result) == "Ada's favorite color is teal"
    calls = [s.body["params"] for s in log.sent if s.rpc_method == "tools/call" and s.body is not None]
    assert len(calls) == 3
    states = [call.get("requestState") for call in calls]
    assert states[0] is None
    assert all(isinstance(state, str) and state for state in states[1:])
    assert states[1] != states[2]
    assert [list(call.get("inputResponses", {})) for call in calls] == [[], ["step1"], ["step2"]]


async def test_sample_llm_and_elicit_without_the_client_capability_is_error_minus_32021(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as sampled:
                await client.call_tool("sampleLLM", {"prompt": "hi"})
            with pytest.raises(MCPError) as elicited:
                await client.call_tool("elicitInputs", {})
            echoed = await client.call_tool("echo", {"message": "still fine"})
    assert sampled.value.code == MISSING_CAPABILITY
    assert sampled.value.error.data == {"requiredCapabilities": {"sampling": {}}}
    assert elicited.value.code == MISSING_CAPABILITY
    assert elicited.value.error.data == {"requiredCapabilities": {"elicitation": {}}}
    assert only_text(echoed) == "Echo: still fine"


async def test_sample_llm_refused_by_the_callback_leaves_the_client_usable(url: str) -> None:
    async def refuse(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> types.ErrorData:
        return types.ErrorData(code=-1, message="User rejected sampling request")

    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, sampling_callback=refuse) as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("sampleLLM", {"prompt": "hi"})
            echoed = await client.call_tool("echo", {"message": "still here"})
    assert "User rejected sampling request" in caught.value.message
    assert only_text(echoed) == "Echo: still here"


async def test_elicit_inputs_accept(url: str) -> None:
    content = {"name": "Ada Lovelace", "check": True, "email": "ada@example.org", "age": 36, "color": "blue"}
    recorder = Recorder(elicit_result=types.ElicitResult(action="accept", content=content))
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder) as client:
            result = await client.call_tool("elicitInputs", {})
    assert only_text(result) == "✅ User provided the requested information:\n" + json.dumps(
        content, indent=2, ensure_ascii=False
    )
    (request,) = recorder.elicitation_requests
    assert isinstance(request, types.ElicitRequestFormParams)
    assert request.message == "Please provide inputs for the following fields:"
    schema = request.requested_schema
    schema_dict = schema if isinstance(schema, dict) else dump(schema)
    assert schema_dict["required"] == ["name"]
    jsonschema.validate(content, schema_dict)


@pytest.mark.parametrize(
    ("action", "text"),
    [
        ("decline", "❌ User declined to provide the requested information."),
        ("cancel", "⚠️ User cancelled the elicitation dialog."),
    ],
)
async def test_elicit_inputs_decline_and_cancel(url: str, action: Any, text: str) -> None:
    recorder = Recorder(elicit_result=types.ElicitResult(action=action))
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder) as client:
            result = await client.call_tool("elicitInputs", {})
    assert not result.is_error
    assert only_text(result) == text
    assert len(recorder.elicitation_requests) == 1


async def test_get_weather_structured_content(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            result = await client.call_tool("getWeather", {"location": "São Paulo"})
            again = await client.call_tool("getWeather", {"location": "  SÃO PAULO "})
            blank = await client.call_tool("getWeather", {"location": "   "})
    schema = tools["getWeather"].output_schema
    assert schema is not None
    assert result.structured_content is not None
    jsonschema.Draft202012Validator(schema).validate(result.structured_content)
    assert json.loads(only_text(result)) == result.structured_content
    assert again.structured_content == result.structured_content
    assert blank.is_error is True
    assert blank.structured_content is None


async def test_get_tiny_image(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.call_tool("getTinyImage", {})
    intro, image, outro = result.content
    assert isinstance(intro, types.TextContent)
    assert intro.text == "This is a tiny image:"
    assert isinstance(image, types.ImageContent)
    assert_tiny_png(image)
    assert isinstance(outro, types.TextContent)
    assert outro.text == "The image above is the MCP tiny image."


async def test_annotated_message(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            error = await client.call_tool("annotatedMessage", {"messageType": "error", "includeImage": True})
            debug = await client.call_tool("annotatedMessage", {"messageType": "debug"})
    text, image = error.content
    assert isinstance(text, types.TextContent)
    assert text.text == "Error: Operation failed"
    assert text.annotations is not None
    assert text.annotations.priority == 1.0
    assert text.annotations.audience == ["user", "assistant"]
    assert isinstance(image, types.ImageContent)
    assert_tiny_png(image)
    assert image.annotations is not None
    assert image.annotations.audience == ["user"]
    (only,) = debug.content
    assert isinstance(only, types.TextContent)
    assert only.annotations is not None
    assert only.annotations.audience == ["assistant"]


@pytest.mark.parametrize("resource_id", [1, 2, 100])
async def test_get_resource_reference_embeds_what_resources_read_returns(url: str, resource_id: int) -> None:
    uri = resource_uri(resource_id)
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.call_tool("getResourceReference", {"resourceId": resource_id})
            read = await client.read_resource(uri)
            out_of_range = await client.call_tool("getResourceReference", {"resourceId": 101})
    intro, embedded, outro = result.content
    assert isinstance(intro, types.TextContent)
    assert intro.text == f"Returning resource reference for Resource {resource_id}:"
    assert isinstance(embedded, types.EmbeddedResource)
    assert dump(embedded.resource) == dump(read.contents[0]) == expected_contents(resource_id)
    assert isinstance(outro, types.TextContent)
    assert outro.text == f"You can access this resource using the URI: {uri}"
    assert out_of_range.is_error is True


# --- resources -------------------------------------------------------------------------------------------


async def test_list_all_resources_by_cursor(url: str) -> None:
    pages: list[types.ListResourcesResult] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            cursor: str | None = None
            for _ in range(20):  # a server that never ends its listing must not hang the test
                page = await client.list_resources(cursor=cursor)
                pages.append(page)
                cursor = page.next_cursor
                if cursor is None:
                    break
            with pytest.raises(MCPError) as bogus:
                await client.list_resources(cursor="not-a-cursor")
    assert cursor is None, "the listing did not end within 20 pages"
    assert [len(page.resources) for page in pages] == [10] * 10
    assert [str(r.uri) for page in pages for r in page.resources] == [resource_uri(i) for i in range(1, 101)]
    assert bogus.value.code == INVALID_PARAMS


@pytest.mark.parametrize("resource_id", [1, 2, 99])
async def test_read_resource(url: str, resource_id: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with logged_client(url) as (client, log):
            read = await client.read_resource(resource_uri(resource_id))
    assert [dump(c) for c in read.contents] == [expected_contents(resource_id)]
    (sent,) = [s for s in log.sent if s.rpc_method == "resources/read"]
    assert sent.mcp_name == resource_uri(resource_id)


async def test_resource_templates_and_reads_through_them(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            listed = await client.list_resource_templates()
            (template,) = listed.resource_templates
            reads = [await client.read_resource(template.uri_template.replace("{id}", str(i))) for i in (7, 42)]
    assert template.uri_template == TEMPLATE
    assert template.name == "Static Resource"
    assert [dump(r.contents[0]) for r in reads] == [expected_contents(7), expected_contents(42)]


@pytest.mark.parametrize("uri", ["test://nowhere/1", "test://static/resource/101", "test://static/resource/abc"])
async def test_read_unknown_resource_is_minus_32602(url: str, uri: str) -> None:
    """2026-07-28 answers an unknown resource with -32602 (the 2025 era's -32002 is retired)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            assert (await client.read_resource(resource_uri(1))).contents
    assert caught.value.code == INVALID_PARAMS
    assert uri in caught.value.message


# --- prompts and completions -----------------------------------------------------------------------------


async def test_prompts_list_and_get(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            listed = await client.list_prompts()
            simple = await client.get_prompt("simple_prompt")
            complex_ = await client.get_prompt("complex_prompt", {"temperature": "0.7", "style": "formal"})
            embedded = await client.get_prompt("resource_prompt", {"resourceId": "8"})
            with pytest.raises(MCPError) as missing:
                await client.get_prompt("complex_prompt", {"style": "formal"})
            with pytest.raises(MCPError) as unknown:
                await client.get_prompt("no_such_prompt")
    assert [p.name for p in listed.prompts] == ["simple_prompt", "complex_prompt", "resource_prompt"]
    assert [(m.role, dump(m.content)) for m in simple.messages] == [
        ("user", {"type": "text", "text": "This is a simple prompt without arguments."})
    ]
    assert [m.role for m in complex_.messages] == ["user", "assistant", "user"]
    first = complex_.messages[0].content
    assert isinstance(first, types.TextContent)
    assert first.text == "This is a complex prompt with arguments: temperature=0.7, style=formal"
    image = complex_.messages[2].content
    assert isinstance(image, types.ImageContent)
    assert_tiny_png(image)
    resource = embedded.messages[1].content
    assert isinstance(resource, types.EmbeddedResource)
    assert dump(resource.resource) == expected_contents(8)
    assert missing.value.code == INVALID_PARAMS
    assert "temperature" in missing.value.message
    assert unknown.value.code == INVALID_PARAMS


async def test_completions(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            styles = await client.complete(
                types.PromptReference(name="complex_prompt"), {"name": "style", "value": "f"}
            )
            ids = await client.complete(types.ResourceTemplateReference(uri=TEMPLATE), {"name": "id", "value": "1"})
            with pytest.raises(MCPError) as unknown:
                await client.complete(types.PromptReference(name="nope"), {"name": "x", "value": ""})
    assert styles.completion.values == ["formal", "friendly"]
    assert ids.completion.values == ["1", *(str(i) for i in range(10, 20)), "100"]
    assert ids.completion.total == 12
    assert not ids.completion.has_more
    assert unknown.value.code == INVALID_PARAMS


# --- logging: opt-in per request ---------------------------------------------------------------------------


async def test_no_log_notifications_without_a_log_level(mixed_server: ServerProcess) -> None:
    recorder = Recorder()
    wire: list[types.JSONRPCMessage] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(tapped(streamable_http_client(mixed_server.mcp_url), wire), recorder) as client:
            # Without a session there is no standing stream either, so the server's periodic demo messages
            # (every 0.5 s on this server) have nowhere to go: only the call's own stream could carry a log.
            result = await client.call_tool("test_tool_with_logging", {})
    assert only_text(result) == "Tool with logging executed successfully"
    assert notifications(wire, "notifications/message") == []
    assert recorder.logs == []


@pytest.mark.parametrize(("level", "expected"), [("debug", 3), ("info", 3), ("warning", 0)])
async def test_log_level_opts_in_to_the_tools_logs(mixed_server: ServerProcess, level: Any, expected: int) -> None:
    recorder = Recorder()
    wire: list[types.JSONRPCMessage] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with logged_client(mixed_server.mcp_url, recorder, wire=wire, log_level=level) as (client, log):
            result = await client.call_tool("test_tool_with_logging", {})
            with trio.fail_after(EVENT_WAIT):
                await recorder.wait_for(lambda: len(recorder.logs) >= expected)
    assert only_text(result) == "Tool with logging executed successfully"
    # Every log notification came on the call's own stream, before its result.
    on_wire = notifications(wire, "notifications/message")
    assert [(m["level"], m["data"]) for m in on_wire] == [
        ("info", "Tool execution started"),
        ("info", "Tool processing data"),
        ("info", "Tool execution completed"),
    ][:expected]
    assert [m.data for m in recorder.logs] == [m["data"] for m in on_wire]
    (call,) = [s for s in log.sent if s.rpc_method == "tools/call"]
    assert call.meta[LOG_LEVEL_KEY] == level


# --- subscriptions/listen ----------------------------------------------------------------------------------


async def next_event(subscription: Subscription) -> Any:
    async for event in subscription:
        return event
    raise AssertionError("the subscription ended without an event")


async def test_listen_receives_a_tool_list_change_made_by_another_client(mixed_server: ServerProcess) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(mixed_server.mcp_url) as listener, make_client(mixed_server.mcp_url) as other:
            async with listener.listen(tools_list_changed=True) as subscription:
                assert subscription.honored is not None
                assert subscription.honored.tools_list_changed is True
                triggered = await other.call_tool("test_trigger_tool_change", {})
                with trio.fail_after(EVENT_WAIT):
                    event = await next_event(subscription)
            # The listener's own requests still work after its stream closed.
            echoed = await listener.call_tool("echo", {"message": "after listen"})
    assert only_text(triggered) == "Tool list change published."
    assert isinstance(event, ToolsListChanged)
    assert only_text(echoed) == "Echo: after listen"


async def test_listen_to_a_resource_receives_its_periodic_updates(url: str) -> None:
    watched = resource_uri(3)
    wire: list[types.JSONRPCMessage] = []
    events: list[Any] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            make_client(tapped(streamable_http_client(url), wire)) as client,
            client.listen(resource_subscriptions=[watched]) as subscription,
        ):
            assert subscription.honored is not None
            assert subscription.honored.resource_subscriptions == [watched]
            # The server sends an update every 0.5 s; the SDK folds duplicates still unread into one.
            with trio.fail_after(EVENT_WAIT):
                for _ in range(2):
                    events.append(await next_event(subscription))
    assert events == [ResourceUpdated(uri=watched), ResourceUpdated(uri=watched)]
    sent_uris = {p["uri"] for p in notifications(wire, "notifications/resources/updated")}
    assert sent_uris == {watched}, "the server sent updates for resources nobody listened to"


# --- the SDK's response cache --------------------------------------------------------------------------------


async def test_default_cache_honors_ttl_ms_and_a_refresh_reaches_the_server(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with logged_client(url, cache=CacheConfig()) as (client, log):
            assert client._response_cache is not None
            first = await client.list_tools()
            second = await client.list_tools()
            assert log.count("tools/list") == 1, "the second listing within ttlMs reached the server"
            refreshed = await client.list_tools(cache_mode="refresh")
            assert log.count("tools/list") == 2
            await client.list_prompts()
            await client.list_prompts()
            assert log.count("prompts/list") == 1
    assert first.ttl_ms is not None
    assert first.ttl_ms > 0
    assert [t.name for t in second.tools] == [t.name for t in first.tools] == [t.name for t in refreshed.tools]


# --- both eras on one server at once -------------------------------------------------------------------------


async def test_a_2025_and_a_2026_client_share_one_server_concurrently(mixed_server: ServerProcess) -> None:
    legacy_recorder = Recorder(sampled_text="legacy answer")
    modern_recorder = Recorder(sampled_text="modern answer")
    watched = resource_uri(5)
    results: dict[str, list[str]] = {"legacy": [], "modern": []}
    modern_events: list[Any] = []
    progress_seen: list[float] = []
    all_progress = trio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progress_seen.append(progress)
        if len(progress_seen) == 2 * 4 * 2:  # two clients, four operations each, two steps each
            all_progress.set()

    async def exercise(name: str, client: Client, rounds: int = 4) -> None:
        for i in range(rounds):
            results[name].append(only_text(await client.call_tool("echo", {"message": f"{name} {i}"})))
            results[name].append(only_text(await client.call_tool("sampleLLM", {"prompt": f"{name} {i}"})))
            operation = await client.call_tool(
                "longRunningOperation", {"duration": 0.2, "steps": 2}, progress_callback=on_progress
            )
            results[name].append(only_text(operation))

    with trio.fail_after(TEST_TIMEOUT):
        async with logged_http() as (legacy_http, legacy_log), logged_http() as (modern_http, modern_log):
            legacy = make_client(
                streamable_http_client(mixed_server.mcp_url, http_client=legacy_http), legacy_recorder, mode="legacy"
            )
            modern = make_client(streamable_http_client(mixed_server.mcp_url, http_client=modern_http), modern_recorder)
            async with legacy, modern:
                assert legacy.protocol_version == "2025-11-25"
                assert modern.protocol_version == MODERN_VERSION
                await legacy.subscribe_resource(watched)
                async with modern.listen(resource_subscriptions=[watched]) as subscription, trio.open_nursery() as n:
                    n.start_soon(exercise, "legacy", legacy)
                    n.start_soon(exercise, "modern", modern)
                    with trio.fail_after(EVENT_WAIT):
                        modern_events.append(await next_event(subscription))
                        await legacy_recorder.wait_for(lambda: watched in legacy_recorder.resource_updates())
                with trio.fail_after(EVENT_WAIT):
                    await all_progress.wait()  # progress callbacks run in tasks the SDK spawns
                await legacy.unsubscribe_resource(watched)
                # The legacy session survived all of it.
                assert only_text(await legacy.call_tool("echo", {"message": "still"})) == "Echo: still"

    for name in ("legacy", "modern"):
        expected = []
        for i in range(4):
            expected += [
                f"Echo: {name} {i}",
                f"LLM sampling result: {name} answer",
                "Long running operation completed. Duration: 0.2 seconds, Steps: 2.",
            ]
        assert results[name] == expected
    assert len(legacy_recorder.sampling_requests) == len(modern_recorder.sampling_requests) == 4
    assert modern_events == [ResourceUpdated(uri=watched)]

    # The 2025 client kept one session for every request after initialize; the 2026 one never had one.
    assert legacy_log.rpc_methods()[0] == "initialize"
    legacy_ids = {s.session_id for s in legacy_log.sent[1:]}
    assert len(legacy_ids) == 1
    assert None not in legacy_ids
    assert "server/discover" not in legacy_log.rpc_methods()
    assert {s.session_id for s in modern_log.sent} == {None}
    assert "initialize" not in modern_log.rpc_methods()
    assert legacy_recorder.transport_errors == []
    assert modern_recorder.transport_errors == []


# --- with authentication on ----------------------------------------------------------------------------------


async def test_a_bearer_token_through_the_sdks_http_client(tmp_path: Path) -> None:
    server = mcp_server(tmp_path, auth_mode="embedded", log_message_interval=3600)
    with running(server), trio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as http:
            tokens = await obtain_tokens(http, server.mcp_url, user="alice", client_name="sdk 2026 tests")
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        async with logged_client(server.mcp_url, headers=bearer) as (client, log):
            assert client.protocol_version == MODERN_VERSION
            await client.list_tools()
            echoed = await client.call_tool("echo", {"message": "with a token"})
        # Without the token the probe and the handshake it falls back to are both refused.
        refused = pytest.RaisesGroup(
            pytest.RaisesExc(MCPError, match="authentication required"), flatten_subgroups=True
        )
        async with logged_http() as (anonymous, _):
            with refused:
                async with make_client(streamable_http_client(server.mcp_url, http_client=anonymous)):
                    pass
    assert only_text(echoed) == "Echo: with a token"
    assert log.rpc_methods() == ["server/discover", "tools/list", "tools/call"]

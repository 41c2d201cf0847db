"""The official `mcp` SDK client (legacy 2025-11-25 handshake) against a real refserver process.

Every feature of the reference module is driven through `mcp.Client` over Streamable HTTP, and a
subset over the legacy HTTP+SSE transport, so that the server is checked against what a real
client library sends and accepts, not only against hand-written JSON.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import jsonschema
import mcp_types as types
import pytest
import trio
from mcp import Client, MCPError
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from tests.conftest import ServerProcess, free_port, server_env

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

TEST_TIMEOUT = 30.0
"""Upper bound on any one test body: nothing may hang."""
READ_TIMEOUT = 15.0
"""The SDK's own per-request timeout, a second line behind `trio.fail_after`."""

RESOURCE_NOT_FOUND = -32002
INVALID_PARAMS = -32602

TOOL_NAMES = {
    "echo",
    "add",
    "longRunningOperation",
    "sampleLLM",
    "getTinyImage",
    "annotatedMessage",
    "getResourceReference",
    "elicitInputs",
    "getWeather",
    "whoAmI",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
TEMPLATE = "test://static/resource/{id}"


def resource_uri(resource_id: int) -> str:
    return f"test://static/resource/{resource_id}"


# --- a wire tap: what the client received, in the order it received it -----------------------------


class _TappedReadStream:
    """Wraps a transport's read stream and records every inbound JSON-RPC message in arrival order.

    The SDK hands notifications to callbacks in spawned tasks, so callback order says nothing
    about wire order; this tap does.
    """

    def __init__(self, inner: Any, wire: list[types.JSONRPCMessage]) -> None:
        self._inner = inner
        self._wire = wire

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    def _record(self, item: Any) -> Any:
        if isinstance(item, SessionMessage):
            self._wire.append(item.message)
        return item

    async def receive(self) -> Any:
        return self._record(await self._inner.receive())

    def __aiter__(self) -> _TappedReadStream:
        return self

    async def __anext__(self) -> Any:
        return self._record(await self._inner.__anext__())

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _TappedReadStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        suppress: bool | None = await self._inner.__aexit__(exc_type, exc, tb)
        return suppress


@asynccontextmanager
async def tapped(transport: Any, wire: list[types.JSONRPCMessage]) -> AsyncIterator[tuple[Any, Any]]:
    async with transport as (read_stream, write_stream):
        yield _TappedReadStream(read_stream, wire), write_stream


# --- client-side callbacks that record what the server asked ---------------------------------------


class Recorder:
    """Callbacks for `mcp.Client` that remember every server-initiated request and notification."""

    def __init__(
        self,
        sampled_text: str = "sampled!",
        elicit_result: types.ElicitResult | None = None,
    ) -> None:
        self.sampled_text = sampled_text
        self.elicit_result = elicit_result or types.ElicitResult(action="accept", content={"name": "Ada"})
        self.sampling_requests: list[types.CreateMessageRequestParams] = []
        self.elicitation_requests: list[types.ElicitRequestParams] = []
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.notifications: list[types.ServerNotification] = []
        self.transport_errors: list[Exception] = []
        self.changed = trio.Event()

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampling_requests.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(text=self.sampled_text),
            model="test-model",
            stop_reason="endTurn",
        )

    async def elicitation(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicitation_requests.append(params)
        return self.elicit_result

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)
        self._poke()

    async def messages(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            self.transport_errors.append(message)
        else:
            self.notifications.append(message)
        self._poke()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds; the caller bounds the wait with trio.fail_after."""
        while not condition():
            await self.changed.wait()

    def resource_updates(self, since: int = 0) -> list[str]:
        """The uris of the `notifications/resources/updated` received from index `since` on."""
        return [
            str(n.params.uri) for n in self.notifications[since:] if isinstance(n, types.ResourceUpdatedNotification)
        ]


def make_client(
    server: Any,
    recorder: Recorder | None = None,
    *,
    sampling: bool = True,
    elicitation: bool = True,
) -> Client:
    kwargs: dict[str, Any] = {}
    if recorder is not None:
        kwargs["logging_callback"] = recorder.logging
        kwargs["message_handler"] = recorder.messages
        if sampling:
            kwargs["sampling_callback"] = recorder.sampling
        if elicitation:
            kwargs["elicitation_callback"] = recorder.elicitation
    # cache=None: every call must reach the server, this suite tests the server, not the SDK cache.
    return Client(server, mode="legacy", cache=None, read_timeout_seconds=READ_TIMEOUT, **kwargs)


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Only the seed's feature module, so listings are exactly the reference server's."""
    port = free_port()
    server = ServerProcess(
        port,
        server_env(
            base_url=f"http://127.0.0.1:{port}",
            features="reference",
            subscription_update_interval=0.5,
            log_message_interval=0.5,
        ),
        tmp_path_factory.mktemp("reference") / "server.log",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def url(reference_server: ServerProcess) -> str:
    return reference_server.mcp_url


def only_text(result: types.CallToolResult) -> str:
    assert len(result.content) == 1, result.content
    block = result.content[0]
    assert isinstance(block, types.TextContent), block
    return block.text


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


# --- handshake and listing -----------------------------------------------------------------------


async def test_initialize_negotiates_2025_11_25_and_advertises_capabilities(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            assert client.protocol_version == "2025-11-25"
            assert client.server_info is not None
            assert client.server_info.name == "refserver"
            caps = client.server_capabilities
            assert caps.tools is not None
            assert caps.resources is not None
            assert caps.resources.subscribe is True
            assert caps.prompts is not None
            assert caps.logging is not None
            assert caps.completions is not None
            assert client.instructions
            assert "refserver" in client.instructions


async def test_list_tools_names_and_schemas(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            listed = await client.list_tools()
    assert listed.next_cursor is None
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == TOOL_NAMES
    assert len(listed.tools) == len(TOOL_NAMES)
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
    assert tools["echo"].input_schema["required"] == ["message"]
    weather_schema = tools["getWeather"].output_schema
    assert weather_schema is not None
    jsonschema.Draft202012Validator.check_schema(weather_schema)
    assert set(weather_schema["required"]) == {"temperature", "conditions", "humidity"}
    assert all(tool.output_schema is None for name, tool in tools.items() if name != "getWeather")


# --- tools ---------------------------------------------------------------------------------------


async def test_echo(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.call_tool("echo", {"message": "hello, wörld ✓"})
    assert not result.is_error
    assert only_text(result) == "Echo: hello, wörld ✓"


async def test_echo_schema_violation_is_a_tool_error_not_a_protocol_error(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            missing = await client.call_tool("echo", {})
            wrong_type = await client.call_tool("echo", {"message": 5})
            extra = await client.call_tool("echo", {"message": "x", "other": 1})
    for result in (missing, wrong_type, extra):
        assert result.is_error is True
        assert only_text(result).startswith("Invalid arguments for tool echo: ")
    assert "'message' is a required property" in only_text(missing)
    assert "message: 5 is not of type 'string'" in only_text(wrong_type)


async def test_unknown_tool_is_a_protocol_error(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("noSuchTool", {})
    assert caught.value.code == INVALID_PARAMS
    assert "noSuchTool" in caught.value.message


@pytest.mark.parametrize(
    ("a", "b", "text"),
    [
        (2, 3, "The sum of 2 and 3 is 5."),
        (2, 3.5, "The sum of 2 and 3.5 is 5.5."),
        (-1.25, 0.25, "The sum of -1.25 and 0.25 is -1."),
    ],
)
async def test_add(url: str, a: float, b: float, text: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.call_tool("add", {"a": a, "b": b})
    assert not result.is_error
    assert only_text(result) == text


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
            await client.list_tools()  # so that result validation needs no further round trip
            started = trio.current_time()
            result = await client.call_tool(
                "longRunningOperation", {"duration": 0.8, "steps": steps}, progress_callback=on_progress
            )
            elapsed = trio.current_time() - started
            # Callbacks run in tasks the SDK spawns; give the last one a moment to run.
            with trio.fail_after(2):
                await progress_seen.wait()

    assert not result.is_error
    assert only_text(result) == f"Long running operation completed. Duration: 0.8 seconds, Steps: {steps}."
    assert elapsed >= 0.7
    expected = [(float(step), float(steps), f"Step {step} of {steps}") for step in range(1, steps + 1)]
    assert updates == expected

    # Wire order: every progress notification precedes the tools/call response.
    call_response = next(
        i
        for i, m in enumerate(wire)
        if isinstance(m, types.JSONRPCResponse) and "Long running operation" in json.dumps(m.result)
    )
    call_id = wire[call_response].id  # type: ignore[union-attr]
    progress_at = [
        (i, m.params)
        for i, m in enumerate(wire)
        if isinstance(m, types.JSONRPCNotification) and m.method == "notifications/progress"
    ]
    assert [params for _, params in progress_at] == [
        {"progressToken": call_id, "progress": step, "total": steps, "message": f"Step {step} of {steps}"}
        for step in range(1, steps + 1)
    ]
    assert all(i < call_response for i, _ in progress_at)


async def test_long_running_operation_without_progress_token_sends_no_progress(url: str) -> None:
    wire: list[types.JSONRPCMessage] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(tapped(streamable_http_client(url), wire)) as client:
            result = await client.call_tool("longRunningOperation", {"duration": 0.2, "steps": 2})
    assert only_text(result) == "Long running operation completed. Duration: 0.2 seconds, Steps: 2."
    assert not [m for m in wire if isinstance(m, types.JSONRPCNotification) and m.method == "notifications/progress"]


async def test_sample_llm_round_trips_through_the_sampling_callback(url: str) -> None:
    recorder = Recorder(sampled_text="The sky is blue.")
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder) as client:
            result = await client.call_tool("sampleLLM", {"prompt": "Why is the sky blue?", "maxTokens": 42})
            default_tokens = await client.call_tool("sampleLLM", {"prompt": "again"})

    assert not result.is_error
    assert only_text(result) == "LLM sampling result: The sky is blue."
    assert only_text(default_tokens) == "LLM sampling result: The sky is blue."
    assert len(recorder.sampling_requests) == 2
    first, second = recorder.sampling_requests
    assert first.messages == [
        types.SamplingMessage(
            role="user", content=types.TextContent(text="Resource sampleLLM context: Why is the sky blue?")
        )
    ]
    assert first.max_tokens == 42
    assert first.system_prompt == "You are a helpful test server."
    assert first.temperature == 0.7
    assert first.include_context == "thisServer"
    assert second.max_tokens == 100  # the schema's default
    assert second.messages[0].content == types.TextContent(text="Resource sampleLLM context: again")


async def test_sample_llm_when_the_client_refuses_is_a_tool_error(url: str) -> None:
    async def refuse(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> types.ErrorData:
        return types.ErrorData(code=-1, message="User rejected sampling request")

    with trio.fail_after(TEST_TIMEOUT):
        async with Client(url, mode="legacy", cache=None, sampling_callback=refuse) as client:
            result = await client.call_tool("sampleLLM", {"prompt": "hi"})
            # The session is still usable afterwards.
            echoed = await client.call_tool("echo", {"message": "still here"})
    assert result.is_error is True
    assert "User rejected sampling request" in only_text(result)
    assert only_text(echoed) == "Echo: still here"


async def test_sample_llm_and_elicit_without_the_client_capability(url: str) -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder, sampling=False, elicitation=False) as client:
            sampled = await client.call_tool("sampleLLM", {"prompt": "hi"})
            elicited = await client.call_tool("elicitInputs", {})
    assert sampled.is_error is True
    assert only_text(sampled) == "the client did not declare the sampling capability"
    assert elicited.is_error is True
    assert only_text(elicited) == "the client did not declare the elicitation capability"
    assert recorder.sampling_requests == []
    assert recorder.elicitation_requests == []


class EchoingSampler(Recorder):
    """Answers each sampling request with its own prompt, once `together` of them are waiting: they overlap."""

    def __init__(self, together: int) -> None:
        super().__init__()
        self.together = together

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampling_requests.append(params)
        self._poke()
        await self.wait_for(lambda: len(self.sampling_requests) >= self.together)
        content = params.messages[0].content
        assert isinstance(content, types.TextContent)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(text=f"answer to {content.text}"), model="test-model"
        )


async def test_concurrent_sampling_requests_reach_their_own_calls(url: str) -> None:
    recorder = EchoingSampler(together=8)
    results: dict[int, str] = {}

    async def call(client: Client, i: int) -> None:
        results[i] = only_text(await client.call_tool("sampleLLM", {"prompt": f"question {i}"}))

    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder) as client, trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(call, client, i)
    assert results == {i: f"LLM sampling result: answer to Resource sampleLLM context: question {i}" for i in range(8)}
    assert len(recorder.sampling_requests) == 8


async def test_cancelled_tool_call_stops_and_the_session_survives(url: str) -> None:
    wire: list[types.JSONRPCMessage] = []
    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(tapped(streamable_http_client(url), wire)) as client:
            await client.list_tools()
            with trio.move_on_after(0.7) as scope:
                await client.call_tool(
                    "longRunningOperation", {"duration": 3, "steps": 10}, progress_callback=on_progress
                )
            assert scope.cancelled_caught
            at_cancel = len(updates)
            # A real sleep: the server paces the steps by its clock, and only their absence shows the cancellation.
            await trio.sleep(1.0)  # long enough for three more steps had the operation gone on
            echoed = await client.call_tool("echo", {"message": "after cancel"})
    assert 1 <= at_cancel <= 3
    assert len(updates) <= at_cancel + 1, "progress kept arriving after notifications/cancelled"
    assert only_text(echoed) == "Echo: after cancel"
    assert not [m for m in wire if isinstance(m, types.JSONRPCResponse) and "Long running" in json.dumps(m.result)], (
        "the server answered a cancelled request"
    )


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks = []
    offset = len(PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        payload = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + payload), f"bad CRC in {kind!r}"
        chunks.append((kind, payload))
        offset += 12 + length
    return chunks


def assert_tiny_png(image: types.ImageContent) -> None:
    assert image.mime_type == "image/png"
    png = base64.b64decode(image.data, validate=True)
    assert png.startswith(PNG_SIGNATURE)
    chunks = _png_chunks(png)
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1] == (b"IEND", b"")
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert (width, height) == (16, 16)
    raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + width * 4)  # 8-bit RGBA rows, each with its filter byte


async def test_get_tiny_image(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.call_tool("getTinyImage", {})
    assert not result.is_error
    assert len(result.content) == 3
    intro, image, outro = result.content
    assert isinstance(intro, types.TextContent)
    assert intro.text == "This is a tiny image:"
    assert isinstance(image, types.ImageContent)
    assert_tiny_png(image)
    assert isinstance(outro, types.TextContent)
    assert outro.text == "The image above is the MCP tiny image."


@pytest.mark.parametrize(
    ("message_type", "text", "priority", "audience"),
    [
        ("error", "Error: Operation failed", 1.0, ["user", "assistant"]),
        ("success", "Operation completed successfully", 0.7, ["user"]),
        ("debug", "Debug: Cache hit ratio 0.95, latency 150ms", 0.3, ["assistant"]),
    ],
)
async def test_annotated_message(url: str, message_type: str, text: str, priority: float, audience: list[str]) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            plain = await client.call_tool("annotatedMessage", {"messageType": message_type})
            with_image = await client.call_tool("annotatedMessage", {"messageType": message_type, "includeImage": True})
            without_image = await client.call_tool(
                "annotatedMessage", {"messageType": message_type, "includeImage": False}
            )

    for result in (plain, with_image, without_image):
        assert not result.is_error
        block = result.content[0]
        assert isinstance(block, types.TextContent)
        assert block.text == text
        assert block.annotations is not None
        assert block.annotations.priority == priority
        assert block.annotations.audience == audience
    assert len(plain.content) == 1
    assert len(without_image.content) == 1
    assert len(with_image.content) == 2
    image = with_image.content[1]
    assert isinstance(image, types.ImageContent)
    assert_tiny_png(image)
    assert image.annotations is not None
    assert image.annotations.priority == 0.5
    assert image.annotations.audience == ["user"]


async def test_annotated_message_rejects_unknown_type(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.call_tool("annotatedMessage", {"messageType": "fatal"})
    assert result.is_error is True
    assert "messageType" in only_text(result)


@pytest.mark.parametrize("resource_id", [1, 2, 57, 100])
async def test_get_resource_reference_embeds_what_resources_read_returns(url: str, resource_id: int) -> None:
    uri = resource_uri(resource_id)
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.call_tool("getResourceReference", {"resourceId": resource_id})
            read = await client.read_resource(uri)
    assert not result.is_error
    assert len(result.content) == 3
    intro, embedded, outro = result.content
    assert isinstance(intro, types.TextContent)
    assert intro.text == f"Returning resource reference for Resource {resource_id}:"
    assert isinstance(embedded, types.EmbeddedResource)
    assert isinstance(outro, types.TextContent)
    assert outro.text == f"You can access this resource using the URI: {uri}"
    assert len(read.contents) == 1
    assert dump(embedded.resource) == dump(read.contents[0])
    assert str(embedded.resource.uri) == uri


async def test_get_resource_reference_out_of_range(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            zero = await client.call_tool("getResourceReference", {"resourceId": 0})
            too_big = await client.call_tool("getResourceReference", {"resourceId": 101})
    assert zero.is_error is True
    assert too_big.is_error is True


async def test_elicit_inputs_accept(url: str) -> None:
    content = {"name": "Ada Lovelace", "check": True, "email": "ada@example.org", "age": 36, "color": "blue"}
    recorder = Recorder(elicit_result=types.ElicitResult(action="accept", content=content))
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder) as client:
            result = await client.call_tool("elicitInputs", {})
    assert not result.is_error
    assert only_text(result) == "✅ User provided the requested information:\n" + json.dumps(
        content, indent=2, ensure_ascii=False
    )
    (request,) = recorder.elicitation_requests
    assert isinstance(request, types.ElicitRequestFormParams)
    assert request.message == "Please provide inputs for the following fields:"
    schema = request.requested_schema
    schema_dict = schema if isinstance(schema, dict) else dump(schema)
    assert schema_dict["type"] == "object"
    assert schema_dict["required"] == ["name"]
    assert set(schema_dict["properties"]) == {"name", "check", "email", "age", "color"}
    assert schema_dict["properties"]["age"]["type"] == "integer"
    # What we answered satisfies what we were asked for.
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


@pytest.mark.parametrize("location", ["London", "Tokyo", "10001", "São Paulo"])
async def test_get_weather_structured_content(url: str, location: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            result = await client.call_tool("getWeather", {"location": location})
            again = await client.call_tool("getWeather", {"location": f"  {location.upper()} "})
    schema = tools["getWeather"].output_schema
    assert schema is not None
    assert not result.is_error
    assert result.structured_content is not None
    jsonschema.Draft202012Validator(schema).validate(result.structured_content)
    assert set(result.structured_content) == {"temperature", "conditions", "humidity"}
    assert json.loads(only_text(result)) == result.structured_content
    assert again.structured_content == result.structured_content  # stable per normalized place


async def test_get_weather_rejects_blank_location(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            empty = await client.call_tool("getWeather", {"location": ""})
            blank = await client.call_tool("getWeather", {"location": "   "})
    assert empty.is_error is True
    assert blank.is_error is True
    assert empty.structured_content is None
    assert blank.structured_content is None


# --- resources -----------------------------------------------------------------------------------


def expected_contents(resource_id: int) -> dict[str, Any]:
    uri = resource_uri(resource_id)
    if resource_id % 2:
        return {
            "uri": uri,
            "mimeType": "text/plain",
            "text": f"Resource {resource_id}: This is a plaintext resource",
        }
    blob = base64.b64encode(f"Resource {resource_id}: This is a base64 blob".encode()).decode()
    return {"uri": uri, "mimeType": "application/octet-stream", "blob": blob}


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
    assert cursor is None, "the listing did not end within 20 pages"
    assert [len(page.resources) for page in pages] == [10] * 10
    resources = [resource for page in pages for resource in page.resources]
    uris = [str(resource.uri) for resource in resources]
    assert len(set(uris)) == 100
    assert uris == [resource_uri(i) for i in range(1, 101)]
    for i, resource in enumerate(resources, start=1):
        assert resource.name == f"Resource {i}"
        assert resource.mime_type == ("text/plain" if i % 2 else "application/octet-stream")
    cursors = [page.next_cursor for page in pages[:-1]]
    assert len(set(cursors)) == 9


async def test_list_resources_rejects_a_bogus_cursor(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.list_resources(cursor="not-a-cursor")
    assert caught.value.code == INVALID_PARAMS


@pytest.mark.parametrize("resource_id", [1, 2, 3, 50, 99, 100])
async def test_read_resource(url: str, resource_id: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            read = await client.read_resource(resource_uri(resource_id))
    assert [dump(c) for c in read.contents] == [expected_contents(resource_id)]
    (contents,) = read.contents
    if resource_id % 2:
        assert isinstance(contents, types.TextResourceContents)
    else:
        assert isinstance(contents, types.BlobResourceContents)
        assert base64.b64decode(contents.blob) == f"Resource {resource_id}: This is a base64 blob".encode()


async def test_resource_template_listing_and_reads_through_it(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            listed = await client.list_resource_templates()
            (template,) = listed.resource_templates
            assert template.uri_template == TEMPLATE
            assert template.name == "Static Resource"
            expanded = [template.uri_template.replace("{id}", str(i)) for i in (7, 42)]
            reads = [await client.read_resource(uri) for uri in expanded]
            bad = {}
            for raw_id in ("101", "0", "007", "abc", "-1"):
                with pytest.raises(MCPError) as caught:
                    await client.read_resource(template.uri_template.replace("{id}", raw_id))
                bad[raw_id] = caught.value
    assert [dump(r.contents[0]) for r in reads] == [expected_contents(7), expected_contents(42)]
    for raw_id, error in bad.items():
        assert error.code == RESOURCE_NOT_FOUND, raw_id
        assert resource_uri(raw_id) in error.message  # type: ignore[arg-type]


async def test_read_unknown_resource_is_an_error(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.read_resource("test://nowhere/1")
            # The session survives the error.
            assert (await client.read_resource(resource_uri(1))).contents
    assert caught.value.code == RESOURCE_NOT_FOUND
    assert "test://nowhere/1" in caught.value.message


async def test_subscribe_receives_updates_until_unsubscribed(url: str) -> None:
    watched, kept = resource_uri(3), resource_uri(4)
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder) as client:
            await client.subscribe_resource(watched)
            await client.subscribe_resource(kept)
            # The shared server sends updates every 0.5 s.
            with trio.fail_after(5):
                await recorder.wait_for(lambda: recorder.resource_updates().count(watched) >= 2)
            assert set(recorder.resource_updates()) <= {watched, kept}

            await client.unsubscribe_resource(watched)
            # An update already on its way may still land. A round's updates are one batch in uri order (watched
            # before kept) on one stream: what that round and those before it sent comes before its `kept`.
            unsubscribed = len(recorder.notifications)
            with trio.fail_after(5):
                await recorder.wait_for(lambda: kept in recorder.resource_updates(unsubscribed))
            seen = 1 + next(
                index
                for index, n in enumerate(recorder.notifications)
                if index >= unsubscribed
                and isinstance(n, types.ResourceUpdatedNotification)
                and str(n.params.uri) == kept
            )
            # Keep watching while the other subscription proves updates are still being sent.
            with trio.fail_after(6):
                await recorder.wait_for(lambda: recorder.resource_updates(seen).count(kept) >= 3)
            late = recorder.resource_updates(seen).count(watched)
            assert late == 0, f"{late} updates for {watched} arrived after resources/unsubscribe"
    assert recorder.transport_errors == []


async def test_subscribe_to_unknown_resource_is_an_error(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.subscribe_resource("test://nowhere/1")
    assert caught.value.code == RESOURCE_NOT_FOUND


# --- prompts -------------------------------------------------------------------------------------


async def test_list_prompts(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            listed = await client.list_prompts()
    prompts = {prompt.name: prompt for prompt in listed.prompts}
    assert list(prompts) == ["simple_prompt", "complex_prompt", "resource_prompt"]
    assert not prompts["simple_prompt"].arguments
    complex_args = prompts["complex_prompt"].arguments or []
    assert [(a.name, a.required) for a in complex_args] == [("temperature", True), ("style", False)]
    resource_args = prompts["resource_prompt"].arguments or []
    assert [(a.name, a.required) for a in resource_args] == [("resourceId", True)]


async def test_get_simple_prompt(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.get_prompt("simple_prompt")
    assert result.description == "A prompt without arguments"
    assert [(m.role, dump(m.content)) for m in result.messages] == [
        ("user", {"type": "text", "text": "This is a simple prompt without arguments."})
    ]


@pytest.mark.parametrize(
    ("arguments", "settings"),
    [
        ({"temperature": "0.7", "style": "formal"}, "temperature=0.7, style=formal"),
        ({"temperature": "0.7"}, "temperature=0.7"),
    ],
)
async def test_get_complex_prompt(url: str, arguments: dict[str, str], settings: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.get_prompt("complex_prompt", arguments)
    assert result.description == "A prompt with arguments"
    assert [m.role for m in result.messages] == ["user", "assistant", "user"]
    first, second, third = (m.content for m in result.messages)
    assert isinstance(first, types.TextContent)
    assert first.text == f"This is a complex prompt with arguments: {settings}"
    assert isinstance(second, types.TextContent)
    assert "temperature and style" in second.text
    assert isinstance(third, types.ImageContent)
    assert_tiny_png(third)


async def test_get_complex_prompt_without_temperature_is_an_error(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.get_prompt("complex_prompt", {"style": "formal"})
            with pytest.raises(MCPError) as unknown:
                await client.get_prompt("no_such_prompt")
    assert caught.value.code == INVALID_PARAMS
    assert "temperature" in caught.value.message
    assert unknown.value.code == INVALID_PARAMS


@pytest.mark.parametrize("resource_id", [3, 8])
async def test_get_resource_prompt_embeds_the_resource(url: str, resource_id: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.get_prompt("resource_prompt", {"resourceId": str(resource_id)})
            read = await client.read_resource(resource_uri(resource_id))
    assert result.description == f"A prompt that includes Resource {resource_id}"
    assert [m.role for m in result.messages] == ["user", "user"]
    intro, embedded = (m.content for m in result.messages)
    assert isinstance(intro, types.TextContent)
    assert intro.text == f"This prompt includes Resource {resource_id}. Please analyze the following resource:"
    assert isinstance(embedded, types.EmbeddedResource)
    assert dump(embedded.resource) == expected_contents(resource_id) == dump(read.contents[0])


@pytest.mark.parametrize("resource_id", ["0", "101", "abc", ""])
async def test_get_resource_prompt_rejects_bad_ids(url: str, resource_id: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.get_prompt("resource_prompt", {"resourceId": resource_id})
    assert caught.value.code == INVALID_PARAMS


# --- completions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "argument", "value", "expected"),
    [
        ("complex_prompt", "temperature", "0", ["0", "0.5", "0.7"]),
        ("complex_prompt", "temperature", "1", ["1.0"]),
        ("complex_prompt", "temperature", "", ["0", "0.5", "0.7", "1.0"]),
        ("complex_prompt", "style", "f", ["formal", "friendly"]),
        ("complex_prompt", "style", "TECH", ["technical"]),
        ("complex_prompt", "style", "z", []),
        (
            "resource_prompt",
            "resourceId",
            "9",
            ["9", "90", "91", "92", "93", "94", "95", "96", "97", "98", "99"],
        ),
    ],
)
async def test_complete_prompt_arguments(url: str, prompt: str, argument: str, value: str, expected: list[str]) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            result = await client.complete(types.PromptReference(name=prompt), {"name": argument, "value": value})
    assert result.completion.values == expected
    assert result.completion.total == len(expected)
    assert not result.completion.has_more


async def test_complete_resource_template_id(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            ref = types.ResourceTemplateReference(uri=TEMPLATE)
            ones = await client.complete(ref, {"name": "id", "value": "1"})
            everything = await client.complete(ref, {"name": "id", "value": ""})
            none = await client.complete(ref, {"name": "id", "value": "x"})
            prompt_ids = await client.complete(
                types.PromptReference(name="resource_prompt"), {"name": "resourceId", "value": "1"}
            )
    values = ones.completion.values
    assert values
    assert all(v.startswith("1") for v in values)
    assert values == ["1", *(str(i) for i in range(10, 20)), "100"]
    assert ones.completion.total == len(values) == 12
    assert not ones.completion.has_more
    assert prompt_ids.completion.values == values
    assert everything.completion.values == [str(i) for i in range(1, 101)]
    assert everything.completion.total == 100
    assert not everything.completion.has_more
    assert none.completion.values == []


async def test_complete_unknown_prompt_is_an_error(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            with pytest.raises(MCPError) as caught:
                await client.complete(types.PromptReference(name="nope"), {"name": "x", "value": ""})
    assert caught.value.code == INVALID_PARAMS


# --- logging -------------------------------------------------------------------------------------


def below(level: str, threshold: str) -> bool:
    return LOG_LEVELS.index(level) < LOG_LEVELS.index(threshold)


async def test_logging_set_level_filters_periodic_messages(url: str) -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url, recorder) as client:
            # Before any logging/setLevel the server sends every level; half of them are below "error".
            with trio.fail_after(8):
                await recorder.wait_for(lambda: any(below(m.level, "error") for m in recorder.logs))
            for message in recorder.logs:
                assert message.logger == "refserver.demo"
                assert message.data == f"{message.level.capitalize()}-level message"

            await client.set_logging_level("error")
            # A message sent just before the change may still be on its way: watch from the first one to arrive
            # now (the demo sends one every 0.5 s on one stream, so any earlier one comes before it).
            changed = len(recorder.logs)
            with trio.fail_after(8):
                await recorder.wait_for(lambda: len(recorder.logs) > changed)
            seen = changed + 1
            started = trio.current_time()
            # Watch for at least ~2 s and until a few messages got through, so the filter is exercised.
            with trio.fail_after(15):
                await recorder.wait_for(lambda: len(recorder.logs) - seen >= 3 and trio.current_time() - started >= 2.0)
            after = recorder.logs[seen:]
            assert [m.level for m in after if below(m.level, "error")] == []
            assert all(m.data == f"{m.level.capitalize()}-level message" for m in after)

            # Lowering the threshold again lets low levels through again.
            await client.set_logging_level("debug")
            seen = len(recorder.logs)  # nothing below "error" was sent before the change: no message to skip
            with trio.fail_after(8):
                await recorder.wait_for(lambda: any(below(m.level, "error") for m in recorder.logs[seen:]))


async def test_logging_set_level_rejects_unknown_level(url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(url) as client:
            unknown: Any = "loud"  # bypasses the SDK's own validation, so the server sees it
            with pytest.raises(MCPError) as caught:
                await client.session.send_request(
                    types.SetLevelRequest(params=types.SetLevelRequestParams.model_construct(level=unknown)),
                    types.EmptyResult,
                )
    assert caught.value.code == INVALID_PARAMS
    assert "logging/setLevel" in caught.value.message  # the server's wording, not the SDK's


# --- the legacy HTTP+SSE transport ---------------------------------------------------------------


async def test_legacy_sse_transport(reference_server: ServerProcess) -> None:
    recorder = Recorder(sampled_text="over SSE")
    with trio.fail_after(TEST_TIMEOUT):
        async with make_client(sse_client(f"{reference_server.url}/sse"), recorder) as client:
            assert client.protocol_version == "2025-11-25"
            assert client.server_info is not None
            assert client.server_info.name == "refserver"

            echoed = await client.call_tool("echo", {"message": "via sse"})
            assert only_text(echoed) == "Echo: via sse"

            sampled = await client.call_tool("sampleLLM", {"prompt": "legacy", "maxTokens": 7})
            assert only_text(sampled) == "LLM sampling result: over SSE"
            (request,) = recorder.sampling_requests
            assert request.max_tokens == 7
            assert request.messages[0].content == types.TextContent(text="Resource sampleLLM context: legacy")

            page = await client.list_resources()
            assert [str(r.uri) for r in page.resources] == [resource_uri(i) for i in range(1, 11)]
            assert page.next_cursor is not None
            second = await client.list_resources(cursor=page.next_cursor)
            assert [str(r.uri) for r in second.resources] == [resource_uri(i) for i in range(11, 21)]

            prompt = await client.get_prompt("complex_prompt", {"temperature": "0.5", "style": "casual"})
            first = prompt.messages[0].content
            assert isinstance(first, types.TextContent)
            assert first.text == "This is a complex prompt with arguments: temperature=0.5, style=casual"

            updates: list[tuple[float, float | None, str | None]] = []
            all_progress = trio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                updates.append((progress, total, message))
                if len(updates) == 3:
                    all_progress.set()

            done = await client.call_tool(
                "longRunningOperation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
            )
            assert only_text(done) == "Long running operation completed. Duration: 0.3 seconds, Steps: 3."
            with trio.fail_after(2):
                await all_progress.wait()
            assert updates == [(float(i), 3.0, f"Step {i} of 3") for i in (1, 2, 3)]

            await client.subscribe_resource(resource_uri(5))
            with trio.fail_after(5):
                await recorder.wait_for(lambda: resource_uri(5) in recorder.resource_updates())
            assert set(recorder.resource_updates()) == {resource_uri(5)}
            # The SDK's sse_client crashes (BrokenResourceError) if a message arrives while it closes:
            # quiet the periodic traffic first.
            await client.unsubscribe_resource(resource_uri(5))
            await client.set_logging_level("emergency")
    assert recorder.transport_errors == []


async def test_a_feature_module_of_your_own_is_served(tmp_path_factory: pytest.TempPathFactory) -> None:
    """REFSERVER_FEATURES accepts a dotted module path (docs/customization-guide.md)."""
    root = tmp_path_factory.mktemp("custom")
    package = root / "mycompany"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mcp_features.py").write_text(
        "import mcp_types as types\n"
        "from refserver.features.catalog import Catalog, Tool\n"
        "async def shout(arguments, ctx):\n"
        "    return types.CallToolResult(content=[types.TextContent(text=arguments['text'].upper())])\n"
        "def build_catalog():\n"
        "    schema = {'type': 'object', 'properties': {'text': {'type': 'string'}}, 'required': ['text']}\n"
        "    definition = types.Tool(name='shout', description='Upper-case', input_schema=schema)\n"
        "    return Catalog(tools=[Tool(definition, shout)])\n"
    )
    port = free_port()
    env = server_env(base_url=f"http://127.0.0.1:{port}", features="reference,mycompany.mcp_features")
    env["PYTHONPATH"] = str(root)
    server = ServerProcess(port, env, root / "server.log")
    server.start()
    try:
        with trio.fail_after(TEST_TIMEOUT):
            async with Client(server.mcp_url, mode="legacy", cache=None) as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert {"shout", "echo"} <= names
                result = await client.call_tool("shout", {"text": "quiet"})
        assert only_text(result) == "QUIET"
    finally:
        server.stop()

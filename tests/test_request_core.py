"""The request core without I/O: a request and its metadata in, an outcome out (h11's style).

No server, no session, no socket: the emitter the core is given records what a request sends while it runs.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from refserver.dispatch import RequestCore
from refserver.errors import InvalidParams, MethodNotFound
from refserver.features import conformance, reference
from refserver.features.catalog import FeatureIndex
from refserver.protocol.core import (
    Complete,
    CoreRequest,
    Failed,
    Initialized,
    InputFailure,
    InputRequired,
    LogLevelSet,
    RequestMeta,
    Subscribed,
    Unsubscribed,
)
from refserver.protocol.jsonrpc import Notification
from refserver.protocol.lifecycle import log_level_allows
from refserver.protocol.session_state import SessionState

VERSION = "2025-11-25"
SAMPLING_CLIENT = RequestMeta(VERSION, client_capabilities={"sampling": {}, "elicitation": {}})
BARE_CLIENT = RequestMeta(VERSION)


@attrs.define
class RecordingEmitter:
    """The adapter's side of the seam, reduced to lists: what the core asked to send."""

    log_level: str | None = None
    sent: list[Notification] = attrs.field(factory=list)
    connections_ended: int = 0
    updated: list[str] = attrs.field(factory=list)

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)

    async def end_connection(self) -> None:
        self.connections_ended += 1

    async def resource_updated(self, uri: str) -> None:
        self.updated.append(uri)

    async def list_changed(self, kind: str) -> None:
        self.updated.append(f"list:{kind}")

    def allows_log(self, level: str) -> bool:
        return log_level_allows(self.log_level, level)


@pytest.fixture(scope="module")
def core() -> RequestCore:
    return RequestCore(FeatureIndex.build([reference.build_catalog(), conformance.build_catalog()]))


def call(name: str, arguments: dict[str, Any], meta: RequestMeta = SAMPLING_CLIENT, **more: Any) -> CoreRequest:
    return CoreRequest(1, "tools/call", {"name": name, "arguments": arguments}, meta, **more)


def text_of(outcome: object) -> str:
    assert isinstance(outcome, Complete), outcome
    return str(outcome.result["content"][0]["text"])


async def test_initialize_reports_the_session_change_and_answers_in_the_negotiated_version(core: RequestCore) -> None:
    client_info = {"name": "t", "version": "1"}
    params = {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}}, "clientInfo": client_info}
    outcome = await core.handle(CoreRequest(0, "initialize", params, RequestMeta(VERSION)), RecordingEmitter())
    assert isinstance(outcome, Complete)
    assert outcome.result["protocolVersion"] == "2025-06-18"
    assert outcome.changes == (Initialized("2025-06-18", {"sampling": {}}, client_info),)
    state = SessionState()
    assert state.apply(outcome.changes[0]) is True
    assert state.ready and state.lifecycle.client_supports("sampling")


@pytest.mark.parametrize(
    ("method", "params", "change"),
    [
        ("logging/setLevel", {"level": "error"}, LogLevelSet("error")),
        ("resources/subscribe", {"uri": "test://static/resource/1"}, Subscribed("test://static/resource/1")),
        ("resources/unsubscribe", {"uri": "test://static/resource/1"}, Unsubscribed("test://static/resource/1")),
    ],
)
async def test_state_changes_are_values_not_mutations(
    core: RequestCore, method: str, params: dict[str, Any], change: object
) -> None:
    outcome = await core.handle(CoreRequest(2, method, params, BARE_CLIENT), RecordingEmitter())
    assert outcome == Complete({}, (change,))
    state = SessionState()
    state.apply(outcome.changes[0])
    assert state.apply(outcome.changes[0]) is False  # the same change twice changes nothing the second time


async def test_sampling_tool_asks_then_completes_with_the_answer(core: RequestCore) -> None:
    first = await core.handle(call("sampleLLM", {"prompt": "hi"}), RecordingEmitter())
    assert isinstance(first, InputRequired)
    (key,) = first.input_requests
    request = first.input_requests[key]
    assert request.method == "sampling/createMessage"
    assert request.params["messages"][0]["content"]["text"] == "Resource sampleLLM context: hi"
    reply = {"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"}
    second = await core.handle(call("sampleLLM", {"prompt": "hi"}, input_responses={key: reply}), RecordingEmitter())
    assert text_of(second) == "LLM sampling result: hello"


async def test_a_client_without_the_capability_is_never_asked(core: RequestCore) -> None:
    outcome = await core.handle(call("sampleLLM", {"prompt": "hi"}, meta=BARE_CLIENT), RecordingEmitter())
    assert isinstance(outcome, Complete)
    assert outcome.result["isError"] is True
    assert "sampling capability" in text_of(outcome)


async def test_a_failed_answer_reaches_the_tool_as_an_error(core: RequestCore) -> None:
    responses = {"elicit": InputFailure("client returned an error for elicitation/create: no")}
    outcome = await core.handle(
        call("test_elicitation", {"message": "m"}, input_responses=responses), RecordingEmitter()
    )
    assert text_of(outcome) == (
        "Elicitation not supported or error: client returned an error for elicitation/create: no"
    )


async def test_a_malformed_answer_is_a_clear_tool_error(core: RequestCore) -> None:
    responses = {"elicit": {"action": "maybe"}}
    outcome = await core.handle(
        call("test_elicitation", {"message": "m"}, input_responses=responses), RecordingEmitter()
    )
    assert text_of(outcome).startswith("Elicitation not supported or error: the client's answer is not a valid")


async def test_elicitation_params_follow_the_clients_version(core: RequestCore) -> None:
    first = await core.handle(call("elicitInputs", {}), RecordingEmitter())
    assert isinstance(first, InputRequired)
    (request,) = first.input_requests.values()
    assert request.wire_params("2025-11-25")["mode"] == "form"
    assert "mode" not in request.wire_params("2025-06-18")


async def test_progress_and_logs_go_to_the_emitter_at_the_emitters_level(core: RequestCore) -> None:
    emitter = RecordingEmitter(log_level="error")
    request = call("test_tool_with_logging", {})
    assert text_of(await core.handle(request, emitter)) == "Tool with logging executed successfully"
    assert emitter.sent == []  # info messages, below the threshold
    emitter.log_level = None
    await core.handle(request, emitter)
    assert [n.params["data"] for n in emitter.sent if n.params] == [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ]
    emitter.sent.clear()
    params = {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": 7}}
    outcome = await core.handle(CoreRequest(3, "tools/call", params, BARE_CLIENT), emitter)
    assert text_of(outcome) == "7"
    assert [n.params["progress"] for n in emitter.sent if n.params] == [0, 50, 100]


async def test_closing_the_stream_is_an_action_for_the_adapter(core: RequestCore) -> None:
    emitter = RecordingEmitter()
    await core.handle(call("test_reconnection", {}), emitter)
    assert emitter.connections_ended == 1


@pytest.mark.parametrize(
    ("method", "params", "error"),
    [
        ("no/such", {}, MethodNotFound),
        ("tools/call", {"name": 5}, InvalidParams),
        ("logging/setLevel", {"level": "loud"}, InvalidParams),
    ],
)
async def test_errors_are_outcomes(core: RequestCore, method: str, params: dict[str, Any], error: type) -> None:
    outcome = await core.handle(CoreRequest(4, method, params, BARE_CLIENT), RecordingEmitter())
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, error)


# --- the 2026-07-28 revision: the same core, results and errors shaped for it ---------------------------------

MODERN = "2026-07-28"


def modern(
    method: str, params: dict[str, Any] | None = None, capabilities: dict[str, Any] | None = None
) -> CoreRequest:
    capabilities = {"sampling": {}, "elicitation": {}} if capabilities is None else capabilities
    envelope = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    }
    return CoreRequest(9, method, {**(params or {}), "_meta": envelope}, RequestMeta(MODERN, capabilities))


async def test_modern_results_are_typed_identify_the_server_and_carry_cache_hints(core: RequestCore) -> None:
    discovered = await core.handle(modern("server/discover"), RecordingEmitter())
    assert isinstance(discovered, Complete)
    result = discovered.result
    assert result["supportedVersions"] == [MODERN] and result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "refserver"
    assert result["ttlMs"] >= 0 and result["cacheScope"] in ("public", "private")
    listings = [await core.handle(modern("tools/list"), RecordingEmitter()) for _ in range(3)]
    names = [[t["name"] for t in outcome.result["tools"]] for outcome in listings if isinstance(outcome, Complete)]
    assert len(names) == 3 and names[0] == names[1] == names[2]  # a deterministic order
    assert all(isinstance(o, Complete) and o.result["cacheScope"] == "public" for o in listings)
    called = await core.handle(
        modern("tools/call", {"name": "echo", "arguments": {"message": "m"}}), RecordingEmitter()
    )
    assert isinstance(called, Complete) and called.result["resultType"] == "complete"
    assert "ttlMs" not in called.result  # a tool call is not cacheable


async def test_removed_methods_are_unknown_in_the_modern_era(core: RequestCore) -> None:
    for method in ("initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"):
        outcome = await core.handle(modern(method), RecordingEmitter())
        assert isinstance(outcome, Failed) and isinstance(outcome.error, MethodNotFound), method
    legacy = await core.handle(CoreRequest(1, "server/discover", None, SAMPLING_CLIENT), RecordingEmitter())
    assert isinstance(legacy, Failed) and isinstance(legacy.error, MethodNotFound)


async def test_a_missing_capability_is_the_requests_error_in_the_modern_era_only(core: RequestCore) -> None:
    outcome = await core.handle(
        modern("tools/call", {"name": "sampleLLM", "arguments": {"prompt": "p"}}, {}), RecordingEmitter()
    )
    assert isinstance(outcome, Failed) and outcome.error.jsonrpc_code == -32021
    assert outcome.error.data == {"requiredCapabilities": {"sampling": {}}}
    legacy = await core.handle(call("sampleLLM", {"prompt": "p"}, BARE_CLIENT), RecordingEmitter())
    assert isinstance(legacy, Complete) and legacy.result["isError"] is True


async def test_url_mode_elicitation_needs_its_own_capability(core: RequestCore) -> None:
    arguments = {"url": "https://example.com/connect"}
    form_only = await core.handle(
        modern("tools/call", {"name": "elicitInputs", "arguments": arguments}), RecordingEmitter()
    )
    assert isinstance(form_only, Failed) and form_only.error.jsonrpc_code == -32021
    assert form_only.error.data == {"requiredCapabilities": {"elicitation": {"url": {}}}}
    capable = {"elicitation": {"form": {}, "url": {}}}
    asked = await core.handle(
        modern("tools/call", {"name": "elicitInputs", "arguments": arguments}, capable), RecordingEmitter()
    )
    assert isinstance(asked, InputRequired)
    (request,) = asked.input_requests.values()
    assert request.params["mode"] == "url" and request.params["url"] == arguments["url"]
    answered = await core.handle(
        attrs.evolve(
            modern("tools/call", {"name": "elicitInputs", "arguments": arguments}, capable),
            input_responses={"visit": {"action": "accept"}},
        ),
        RecordingEmitter(),
    )
    assert text_of(answered) == "✅ User completed the step at https://example.com/connect"


async def test_an_unknown_resource_is_invalid_params_in_the_modern_era(core: RequestCore) -> None:
    outcome = await core.handle(modern("resources/read", {"uri": "test://nope"}), RecordingEmitter())
    assert isinstance(outcome, Failed) and outcome.error.jsonrpc_code == -32602
    legacy = await core.handle(
        CoreRequest(1, "resources/read", {"uri": "test://nope"}, SAMPLING_CLIENT), RecordingEmitter()
    )
    assert isinstance(legacy, Failed) and legacy.error.jsonrpc_code == -32002

"""Fuzzed input against a real server, both protocol eras: more than 10,000 generated requests, each answered
with a JSON-RPC error or a 4xx that says what was wrong (or a proper success where the input happens to be valid),
never a 5xx; afterwards the log holds no traceback, and sessions, tasks, streams and memory are back to baseline.

Hypothesis generates the requests (HTTP method, headers, body bytes) from composite strategies, one `@given` per
family: garbage bodies, 2025 session requests, 2026 stateless requests, headers and session ids, forged
`requestState` and task ids, and a smaller run with auth on whose bad `Authorization` headers must get 401.
Every run is derandomized (the same examples each time); the failures found so far stay as `@example`s.

The families share one server (auth off, so the fuzz reaches the protocol code), and the last test of the module
checks what the whole run left behind, so run the module whole.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import secrets
import string
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, cast

import attrs
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from refserver.protocol.sse import SSEDecoder
from refserver.protocol.tasks import TASKS_EXTENSION
from tests.conftest import (
    INIT_PARAMS,
    MODERN_META,
    MODERN_VERSION,
    POST_HEADERS,
    ServerProcess,
    free_port,
    modern_request,
    server_env,
)
from tests.test_observability import Samples, value

REQUESTS_AT_LEAST: Final = 10_000
"""What the issue asks of the whole module (the families' `max_examples` below sum past it)."""
RESPONSE_TIMEOUT: Final = 15.0
"""Seconds one answer may take: every fuzzed call is quick; a hang is a finding, not a wait."""
RSS_GROWTH_BOUND: Final = 24 * 1024 * 1024
"""Bytes the worker's RSS may grow between the warmed-up baseline and the end of the run. CPython keeps freed
arenas and its allocator fragments, so RSS never comes back exactly: measured here it grows by about 8 MiB over the
run (derandomized and random examples alike). The bound is three times that; a leak of one 2.5 KiB object per
request (the size of a small parsed body and its answer) would exceed it over 10,000 requests."""
SETTLE_TIMEOUT: Final = 20.0
"""Seconds the server gets to close what the run left (deleted sessions, cancelled tasks, closed streams)."""
CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
WITH_TASKS: Final[dict[str, Any]] = {
    **cast(dict[str, Any], MODERN_META[CAPABILITIES_KEY]),
    "extensions": {TASKS_EXTENSION: {}},
}
TASKS_META: Final[dict[str, Any]] = {CAPABILITIES_KEY: WITH_TASKS}
"""The `_meta` of a client that takes tasks."""
SESSION_VERSION: Final = "2025-11-25"
HEADERS_TOO_LARGE: Final = 431
FAMILIES: Final = frozenset({"garbage", "session", "stateless", "headers", "forgeries", "auth"})

FUZZ_SETTINGS: Final = settings(
    deadline=None,
    database=None,
    # The same examples every run (set FUZZ_EXPLORE to draw new ones while hunting).
    derandomize=os.environ.get("FUZZ_EXPLORE") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)

# Tools that, called validly, wait on the client (sampling, elicitation, roots in 2025) or sleep for as long as
# their arguments say: the fuzz only sends them arguments their schema refuses, so none of them runs.
WAITING_TOOLS: Final = frozenset(
    {
        "longRunningOperation",
        "sampleLLM",
        "elicitInputs",
        "slow_compute",
        "side_effect_job",
        "confirm_delete",
        "multi_input",
        "test_sampling",
        "test_elicitation",
        "test_elicitation_sep1034_defaults",
        "test_elicitation_sep1330_enums",
        "test_reconnection",
        "test_streaming_elicitation",
        "test_input_required_result_elicitation",
        "test_input_required_result_sampling",
        "test_input_required_result_list_roots",
        "test_input_required_result_request_state",
        "test_input_required_result_multiple_inputs",
        "test_input_required_result_multi_round",
        "test_input_required_result_tampered_state",
        "test_input_required_result_capabilities",
        "test_missing_capability",
        "test_tool_with_task",
        "test_tool_with_progress",
        "test_trigger_tool_change",
        "test_trigger_prompt_change",
    }
)


# --- the run: one server, one client, what it sent and what it opened ---------------------------------------


@attrs.define
class FuzzRun:
    server: ServerProcess
    client: httpx.Client
    tools: list[dict[str, Any]]
    resource_uri: str
    prompt_name: str
    live_session: str = ""
    ended_session: str = ""
    sent: dict[str, int] = attrs.Factory(dict)
    statuses: collections.Counter[int] = attrs.Factory(collections.Counter)
    families_done: set[str] = attrs.Factory(set)
    opened_sessions: set[str] = attrs.Factory(set)
    task_ids: set[str] = attrs.Factory(set)
    baseline_rss: int = 0
    baseline: Samples = attrs.Factory(dict)
    log_start: int = 0

    def send(
        self, family: str, method: str, headers: Mapping[str, str], content: bytes, *, url: str | None = None
    ) -> tuple[httpx.Response, list[dict[str, Any]]]:
        """Send one request; return the response and the JSON documents it carried (one, or an SSE stream's)."""
        self.sent[family] = self.sent.get(family, 0) + 1
        with self.client.stream(method, url or self.server.mcp_url, content=content, headers=headers) as response:
            documents = read_documents(response, method)
        self.statuses[response.status_code] += 1
        if session_id := response.headers.get("mcp-session-id"):
            self.opened_sessions.add(session_id)
        for document in documents:
            self.note_task(document)
        return response, documents

    def note_task(self, document: Any) -> None:
        """Remember every task a valid-by-chance call created, to cancel it at the end."""
        result = document.get("result") if isinstance(document, dict) else None
        if not isinstance(result, dict):
            return
        if result.get("resultType") == "task" and isinstance(result.get("taskId"), str):
            self.task_ids.add(result["taskId"])
        task = result.get("task")
        if isinstance(task, dict) and isinstance(task.get("taskId"), str):
            self.task_ids.add(task["taskId"])

    def post_json(self, body: Any, headers: Mapping[str, str]) -> dict[str, Any]:
        response, documents = self.send("setup", "POST", headers, json.dumps(body).encode())
        assert response.status_code == 200 and documents, (response.status_code, documents)
        answer = documents[-1]
        assert isinstance(answer, dict)
        return answer

    def open_session(self) -> str:
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
        response, _ = self.send("setup", "POST", POST_HEADERS, json.dumps(body).encode())
        assert response.status_code == 200, response.text
        session_id = response.headers["mcp-session-id"]
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        accepted, _ = self.send("setup", "POST", {**POST_HEADERS, "Mcp-Session-Id": session_id}, note)
        assert accepted.status_code == 202
        return session_id

    def session(self) -> str:
        """The live 2025 session (a new one when a fuzzed DELETE ended it)."""
        if not self.live_session:
            self.live_session = self.open_session()
        return self.live_session

    def scrape(self) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        response = self.client.get(f"{self.server.url}/metrics")
        assert response.status_code == 200
        samples: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def new_log(self) -> str:
        return self.server.log()[self.log_start :]


def read_documents(response: httpx.Response, method: str) -> list[dict[str, Any]]:
    """The JSON an answer carried. An SSE answer is read up to its JSON-RPC response (or, for a stream that only
    listens, its first event) and then left: the server must close what the client walked away from."""
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        body = response.read()
        if not body or not content_type.startswith("application/json"):
            return []
        document = json.loads(body)
        return [document]
    assert response.status_code == 200, response.status_code
    if method == "GET":
        return []  # the 2025 standalone stream: open is the answer
    decoder = SSEDecoder()
    documents: list[dict[str, Any]] = []
    for chunk in response.iter_bytes():
        for event in decoder.feed(chunk):
            if not event.data:
                continue
            document = json.loads(event.data)
            documents.append(document)
            if "id" in document and ("result" in document or "error" in document) and "method" not in document:
                return documents
            if document.get("method") == "notifications/subscriptions/acknowledged":
                return documents
            assert "method" in document, document
            assert document.get("id") is None, f"a server-to-client request the fuzz never asked for: {document}"
    return documents


def assert_clear_answer(response: httpx.Response, documents: list[dict[str, Any]]) -> None:
    """No 5xx; a 4xx says what was wrong; a 2xx is a JSON-RPC answer (or 202 for what needs none)."""
    status = response.status_code
    assert status < 500, f"{status}: {response.text if not response.is_stream_consumed else documents}"
    if status in (202, 204):  # accepted (a notification, a response), or a session ended by DELETE
        assert not documents, documents
        return
    content_type = response.headers.get("content-type", "")
    if status == HEADERS_TOO_LARGE:
        # Hypercorn's own answer (h11_max_incomplete_size), before the app sees the request: the status says it.
        assert response.headers.get("server", "").startswith("hypercorn"), response.headers
        return
    if status >= 400:
        assert content_type.startswith("application/json"), (status, response.headers)
        assert len(documents) == 1, documents
        assert_error_document(documents[0])
        return
    assert status == 200, status
    if not documents:
        assert content_type.startswith("text/event-stream"), response.headers  # a GET stream was opened
        return
    for document in documents:
        assert isinstance(document, dict) and document.get("jsonrpc") == "2.0", document
    last = documents[-1]
    if "error" in last:
        assert_error_document(last)
    elif "method" not in last:
        assert isinstance(last.get("result"), dict), last


def assert_error_document(document: Any) -> None:
    assert isinstance(document, dict), document
    assert document.get("jsonrpc") == "2.0", document
    error = document.get("error")
    assert isinstance(error, dict) and isinstance(error.get("code"), int), document
    message = error.get("message")
    assert isinstance(message, str) and message.strip(), document


def worker_pid(master: int) -> int:
    """The Hypercorn worker serving the requests (beside it runs multiprocessing's resource tracker)."""
    workers = []
    for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        command_line = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in command_line:
            workers.append(int(child))
    assert len(workers) == 1, workers
    return workers[0]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzRun]:
    port = free_port()
    server = ServerProcess(
        port,
        server_env(
            base_url=f"http://127.0.0.1:{port}",
            metrics="on",
            access_log="on",
            log_message_interval=3600,
            subscription_update_interval=3600,
        ),
        tmp_path_factory.mktemp("fuzz") / "server.log",
    )
    server.start()
    try:
        with httpx.Client(timeout=httpx.Timeout(RESPONSE_TIMEOUT)) as client:
            body, headers = modern_request("tools/list")
            tools = client.post(server.mcp_url, json=body, headers=headers).json()["result"]["tools"]
            body, headers = modern_request("resources/list")
            resources = client.post(server.mcp_url, json=body, headers=headers).json()["result"]["resources"]
            body, headers = modern_request("prompts/list")
            prompts = client.post(server.mcp_url, json=body, headers=headers).json()["result"]["prompts"]
            run = FuzzRun(server, client, tools, resources[0]["uri"], prompts[0]["name"])
            run.ended_session = run.open_session()
            ended = run.client.delete(server.mcp_url, headers={"Mcp-Session-Id": run.ended_session})
            assert ended.status_code in (200, 204), ended.text
            warm_up(run)
            run.baseline = run.scrape()
            run.baseline_rss = rss_bytes(worker_pid(server.process.pid if server.process else 0))
            run.log_start = len(server.log())
            yield run
    finally:
        server.stop()


# --- strategies ------------------------------------------------------------------------------------------------

JSON_SCALARS: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES: Final = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)
HUGE_VALUES: Final = st.one_of(
    st.integers(min_value=1_000, max_value=300_000).map(lambda n: "x" * n),
    st.integers(min_value=20, max_value=400).map(lambda n: 10**n),
    st.sampled_from([1e308, -1e308, 2**63, -(2**63) - 1, 5e-324]),
)
REQUEST_IDS: Final = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
"""Valid ids (a string or an integer) and every other JSON type."""
HEADER_TEXT: Final = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
"""What h11 lets a client send in a header value; the server must cope with any of it."""
SESSION_VERSIONS: Final = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
OTHER_VERSIONS: Final = st.one_of(
    st.sampled_from([*SESSION_VERSIONS, MODERN_VERSION, "2099-01-01", "", "2026-07-28, 2025-11-25", "latest", "1"]),
    HEADER_TEXT,
)


def wrong_type_for(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """A JSON value its schema's `type` refuses (booleans are no numbers in JSON Schema; 1.0 is an integer)."""
    declared = schema.get("type")
    choices: dict[str, st.SearchStrategy[Any]] = {
        "string": st.one_of(st.integers(), st.floats(allow_nan=False), st.none(), st.booleans()),
        "number": st.one_of(st.text(max_size=8), st.none(), st.booleans(), st.lists(st.integers(), max_size=2)),
        "integer": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
            st.text(max_size=8),
            st.none(),
            st.booleans(),
        ),
        "boolean": st.one_of(st.integers(), st.text(max_size=8), st.none()),
        "object": st.one_of(st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=2)),
        "array": st.one_of(st.integers(), st.text(max_size=8), st.dictionaries(st.text(max_size=3), st.integers())),
    }
    if isinstance(declared, str) and declared in choices:
        return choices[declared]
    return st.nothing()


def out_of_range_for(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Right type, out of the schema's bounds (or its enum): refused as well."""
    options: list[st.SearchStrategy[Any]] = []
    if isinstance(schema.get("maximum"), (int, float)):
        options.append(st.sampled_from([schema["maximum"] + 1, 10**30, 1e300]))
    if isinstance(schema.get("minimum"), (int, float)):
        options.append(st.sampled_from([schema["minimum"] - 1, -(10**30), -1e300]))
    if "enum" in schema:
        options.append(st.text(max_size=10).filter(lambda s: s not in schema["enum"]))
    if schema.get("minLength") == 1:
        options.append(st.just(""))
    return st.one_of(options) if options else st.nothing()


NOT_AN_OBJECT: Final = st.one_of(
    JSON_SCALARS.filter(lambda value: value is not None), st.lists(JSON_VALUES, max_size=3)
)
"""Tool arguments the schema refuses outright. Not null: `"arguments": null` is a call without arguments, which
would run a waiting tool for real."""


@st.composite
def tool_arguments(draw: st.DrawFn, tool: Mapping[str, Any]) -> Any:
    """Arguments for `tool`: refused by its schema when the tool would wait or sleep, anything otherwise."""
    schema = tool["inputSchema"]
    properties: dict[str, Any] = schema.get("properties") or {}
    if not properties or draw(st.integers(0, 5)) == 0:
        if tool["name"] not in WAITING_TOOLS and draw(st.booleans()):
            return draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3))
        return draw(NOT_AN_OBJECT)
    arguments: dict[str, Any] = {}
    for name, field in properties.items():
        arguments[name] = draw(st.one_of(JSON_VALUES, HUGE_VALUES, wrong_type_for(field)))
    spoiled = draw(st.sampled_from(sorted(properties)))
    spoilers = st.one_of(wrong_type_for(properties[spoiled]), out_of_range_for(properties[spoiled]))
    if tool["name"] in WAITING_TOOLS or draw(st.booleans()):
        if spoilers.is_empty:
            return draw(NOT_AN_OBJECT)
        arguments[spoiled] = draw(spoilers)
    return arguments


@st.composite
def mutated(draw: st.DrawFn, template: Any, depth: int = 0) -> Any:
    """`template` with some of its values replaced by other JSON (wrong types, huge), dropped or joined by junk."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.one_of(JSON_VALUES, HUGE_VALUES))
    if isinstance(template, dict) and depth < 4:
        result = {}
        for key, inner in template.items():
            action = draw(st.integers(0, 6))
            if action == 0:
                continue  # dropped
            result[key] = draw(mutated(inner, depth + 1)) if action == 1 else inner
        if choice == 1:
            result[draw(st.text(max_size=10))] = draw(JSON_VALUES)
        return result
    if choice == 2:
        return draw(JSON_SCALARS)
    return template


Draw = Callable[[st.SearchStrategy[Any]], Any]
"""What draws a value: a composite's `draw`, or `st.data().draw` inside a test."""


RESOURCE_TEMPLATE: Final = "test://static/resource/{id}"
RESOURCE_URIS: Final = st.one_of(
    st.sampled_from(
        ["test://static/resource/1", "test://static/resource/100", RESOURCE_TEMPLATE, "ui://refserver/weather-card"]
    ),
    st.builds(
        "test://static/resource/".__add__,
        st.one_of(
            st.integers(min_value=-(10**30), max_value=10**30).map(str),
            st.sampled_from(["0", "101", "01", "1.5", "%00", "../1", "1/2", "1?x=1", "1#f", " 1", "\u0661"]),
            st.text(max_size=12),
        ),
    ),
    st.text(max_size=40),
)
"""Resource URIs: real ones, the template, ids out of range or not numbers, other schemes, not URIs."""
PROMPT_NAMES: Final = ("simple_prompt", "complex_prompt", "resource_prompt")
PROMPT_ARGUMENTS: Final = ("temperature", "style", "resourceId", "x")


def method_templates(run: FuzzRun) -> dict[str, Callable[[Draw], Any]]:
    """For each method, how to draw its (mostly wrong) params."""
    tools = st.sampled_from(run.tools)

    def tool_call(draw: Draw) -> Any:
        if draw(st.integers(0, 9)) == 0:
            return draw(mutated({"name": draw(st.text(max_size=20)), "arguments": {}}))
        tool = draw(tools)
        params: dict[str, Any] = {"name": tool["name"], "arguments": draw(tool_arguments(tool))}
        if draw(st.integers(0, 4)) == 0:
            params["task"] = draw(st.one_of(JSON_VALUES, st.fixed_dictionaries({"ttl": JSON_SCALARS})))
        if draw(st.integers(0, 4)) == 0:
            params["inputResponses"] = draw(JSON_VALUES)
        if draw(st.integers(0, 4)) == 0:
            params["requestState"] = draw(JSON_VALUES)
        return params

    def fixed(template: Any) -> Callable[[Draw], Any]:
        return lambda draw: draw(mutated(template))

    def with_uri(draw: Draw) -> Any:
        return draw(mutated({"uri": draw(RESOURCE_URIS)}))

    def prompt_get(draw: Draw) -> Any:
        name = draw(st.one_of(st.sampled_from(PROMPT_NAMES), st.text(max_size=20)))
        arguments = draw(st.dictionaries(st.sampled_from(PROMPT_ARGUMENTS), st.one_of(JSON_VALUES, HUGE_VALUES)))
        return draw(mutated({"name": name, "arguments": arguments}))

    def completion(draw: Draw) -> Any:
        ref = draw(
            st.one_of(
                st.fixed_dictionaries({"type": st.just("ref/prompt"), "name": st.sampled_from(PROMPT_NAMES)}),
                st.fixed_dictionaries({"type": st.just("ref/resource"), "uri": st.just(RESOURCE_TEMPLATE)}),
                st.fixed_dictionaries({"type": st.text(max_size=12), "uri": RESOURCE_URIS}),
            )
        )
        argument = {"name": draw(st.sampled_from(PROMPT_ARGUMENTS)), "value": draw(st.one_of(JSON_VALUES, HUGE_VALUES))}
        template: dict[str, Any] = {"ref": ref, "argument": argument}
        if draw(st.booleans()):
            template["context"] = {"arguments": draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))}
        return draw(mutated(template))

    return {
        "tools/call": tool_call,
        "client response": fixed({}),  # its body is drawn apart (CLIENT_RESPONSES)
        "tools/list": fixed({"cursor": "0"}),
        "resources/list": fixed({"cursor": "0"}),
        "resources/templates/list": fixed({}),
        "resources/read": with_uri,
        "resources/subscribe": with_uri,
        "resources/unsubscribe": with_uri,
        "prompts/list": fixed({}),
        "prompts/get": prompt_get,
        "completion/complete": completion,
        "logging/setLevel": fixed({"level": "info"}),
        "ping": fixed({}),
        "server/discover": fixed({}),
        "tasks/get": fixed({"taskId": "t"}),
        "tasks/result": fixed({"taskId": "t"}),
        "tasks/list": fixed({"cursor": "c"}),
        "tasks/cancel": fixed({"taskId": "t"}),
        "tasks/update": fixed({"taskId": "t", "inputResponses": {}}),
        "initialize": fixed(INIT_PARAMS),
        "notifications/cancelled": fixed({"requestId": 1, "reason": "x"}),
        "notifications/initialized": fixed({}),
        "no/such": fixed({}),
    }


def subscriptions_listen(draw: Draw) -> Any:
    """A listen request's params: most refused; a valid one opens a stream the fuzz reads once and leaves."""
    return draw(mutated({"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["x://y"]}}))


@st.composite
def json_rpc_body(draw: st.DrawFn, method: str, params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if not method.startswith("notifications/") or draw(st.integers(0, 5)) == 0:
        body["id"] = draw(REQUEST_IDS)
    if draw(st.integers(0, 9)) > 0:
        body["params"] = params
    if draw(st.integers(0, 15)) == 0:
        body["jsonrpc"] = draw(JSON_SCALARS)
    if draw(st.integers(0, 15)) == 0:
        body[draw(st.sampled_from(["result", "error", "extra"]))] = draw(JSON_VALUES)
    return body


def encode(body: Any, draw: Draw) -> bytes:
    """Most bodies as JSON; a few as a batch."""
    if draw(st.integers(0, 19)) == 0:
        return json.dumps([body, body]).encode()
    return json.dumps(body).encode()


# --- family 1: garbage bodies ----------------------------------------------------------------------------------


def nested(depth: int, opener: str, closed: bool) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    tail = closer * depth if closed else ""
    inner = "1" if closed else ""
    return (opener * depth + inner + tail).encode()


GARBAGE_BODIES: Final = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(nested, st.integers(1, 200_000), st.sampled_from(["[", '{"a":']), st.booleans()),
    st.integers(1, 20_000).map(lambda n: b'{"jsonrpc":"2.0","id":' + b"9" * n + b',"method":"ping"}'),
    st.integers(1, 20_000).map(
        lambda n: b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1e' + b"9" * n + b"}}"
    ),
    st.sampled_from(
        [
            b'{"jsonrpc":"2.0","id":1,"method":"ping"}garbage',
            b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"ping"}',
            b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}',
            b'{"jsonrpc":"2.0","id":"\\udfff","method":"ping"}',
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"\\ud83d"}}}',
            b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":NaN}',
            b'{"jsonrpc":"2.0","id":Infinity,"method":"ping"}',
            b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}',
            b"[]",
            b"null",
            b"",
        ]
    ),
)


@st.composite
def truncated_requests(draw: st.DrawFn) -> bytes:
    """A valid request of either era, cut anywhere."""
    method = draw(st.sampled_from(["tools/list", "tools/call", "ping", "server/discover", "resources/read"]))
    params = {"name": "echo", "arguments": {"message": "hello"}} if method == "tools/call" else {}
    body, _ = modern_request(method, params)
    encoded = json.dumps(body).encode()
    return encoded[: draw(st.integers(0, len(encoded) - 1))]


ERAS: Final = ("2025", "2026", "none")


def era_headers(run: FuzzRun, era: str, method: str = "tools/list") -> dict[str, str]:
    """The headers of a request of one era or the other (or of neither)."""
    if era == "2025":
        return {**POST_HEADERS, "Mcp-Session-Id": run.session(), "MCP-Protocol-Version": SESSION_VERSION}
    if era == "2026":
        return {**POST_HEADERS, "MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
    return dict(POST_HEADERS)


LONE_SURROGATE_ID: Final = b'{"jsonrpc":"2.0","id":"\\udfff","method":"ping"}'
LONE_SURROGATE_METHOD: Final = b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}'


def test_garbage_bodies_get_clear_errors(fuzz: FuzzRun) -> None:
    @settings(FUZZ_SETTINGS, max_examples=2_000)
    @given(body=st.one_of(GARBAGE_BODIES, truncated_requests()), era=st.sampled_from(ERAS))
    @example(body=LONE_SURROGATE_ID, era="2025")  # was a 500: the id could not be encoded in the answer
    @example(body=LONE_SURROGATE_METHOD, era="2026")  # was a 500: the method could not be encoded in the error
    @example(body=LONE_SURROGATE_METHOD, era="none")
    def run_one(body: bytes, era: str) -> None:
        response, documents = fuzz.send("garbage", "POST", era_headers(fuzz, era), body)
        assert_clear_answer(response, documents)

    run_one()
    assert_log_clean(fuzz)
    fuzz.families_done.add("garbage")


# --- family 2: 2025 session requests ---------------------------------------------------------------------------

SESSION_METHODS: Final = (
    "tools/call",
    "tools/call",
    "tools/call",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "ping",
    "initialize",
    "server/discover",
    "tasks/get",
    "tasks/list",
    "tasks/cancel",
    "notifications/cancelled",
    "notifications/initialized",
    "no/such",
    "client response",
)
SESSION_META: Final = st.one_of(
    st.fixed_dictionaries({"progressToken": st.one_of(REQUEST_IDS, HUGE_VALUES)}),
    st.dictionaries(
        st.sampled_from(["progressToken", "io.modelcontextprotocol/related-task", "traceparent", "x"]),
        JSON_VALUES,
        max_size=3,
    ),
    JSON_SCALARS,
)
"""A 2025 request's `_meta`: a progress token of any type (or huge), a related task, junk, not an object."""
CLIENT_RESPONSES: Final = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": REQUEST_IDS},
    optional={
        "result": JSON_VALUES,
        "error": st.one_of(
            st.fixed_dictionaries({"code": st.one_of(st.integers(), JSON_SCALARS), "message": JSON_SCALARS}),
            JSON_VALUES,
        ),
    },
)
"""What a client sends back for a request the server never made (or the shape of no answer at all)."""


def test_2025_session_requests_with_wrong_params(fuzz: FuzzRun) -> None:
    templates = method_templates(fuzz)

    @settings(FUZZ_SETTINGS, max_examples=2_400)
    @given(data=st.data())
    def run_one(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(SESSION_METHODS), label="method")
        params = templates[method](data.draw)
        if isinstance(params, dict) and data.draw(st.integers(0, 3)) == 0:
            params["_meta"] = data.draw(SESSION_META, label="_meta")
        if method == "client response":
            body: Any = data.draw(CLIENT_RESPONSES, label="body")
        else:
            body = data.draw(json_rpc_body(method, params), label="body")
        version = data.draw(st.one_of(st.just(SESSION_VERSION), OTHER_VERSIONS), label="version")
        headers = {**POST_HEADERS, "Mcp-Session-Id": fuzz.session(), "MCP-Protocol-Version": version}
        response, documents = fuzz.send("session", "POST", headers, encode(body, data.draw))
        assert_clear_answer(response, documents)

    run_one()
    assert_log_clean(fuzz)
    fuzz.families_done.add("session")


# --- family 3: 2026 stateless requests -------------------------------------------------------------------------

STATELESS_METHODS: Final = (
    "tools/call",
    "tools/call",
    "tools/call",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "server/discover",
    "subscriptions/listen",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "initialize",
    "ping",
    "logging/setLevel",
    "notifications/cancelled",
    "no/such",
)
META_EXTRAS: Final = st.dictionaries(
    st.sampled_from(
        [
            "io.modelcontextprotocol/logLevel",
            "io.modelcontextprotocol/related-task",
            "io.modelcontextprotocol/subscriptionId",
            "progressToken",
            "traceparent",
            "tracestate",
            "io.modelcontextprotocol/protocolVersion",
        ]
    ),
    st.one_of(st.sampled_from(["debug", "info", "emergency", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"]), JSON_VALUES),
    max_size=3,
)


@st.composite
def modern_meta(draw: st.DrawFn) -> Any:
    """The 2026 envelope: right, wrong in one of its fields, or not an object at all."""
    capabilities = draw(st.sampled_from([MODERN_META[CAPABILITIES_KEY], WITH_TASKS]))
    meta = draw(mutated({**MODERN_META, CAPABILITIES_KEY: capabilities}))
    if isinstance(meta, dict):
        meta.update(draw(META_EXTRAS))
    return meta


def sendable(headers: dict[str, str]) -> dict[str, str]:
    """Header values that are not plain visible ASCII (a name or task id echoed into `Mcp-Name`) Base64-encoded,
    the way SEP-2243 says: a client could not send them raw anyway."""
    sent = {}
    for name, header in headers.items():
        if not all(0x21 <= ord(c) <= 0x7E for c in header.replace(" ", "!")) or header != header.strip():
            header = "=?base64?" + base64.b64encode(header.encode("utf-8", "surrogatepass")).decode() + "?="
        sent[name] = header
    return sent


@st.composite
def routing_headers(draw: st.DrawFn, body: Any) -> dict[str, str]:
    """The routing headers the body calls for (as `modern_request` builds them), some spoiled or dropped."""
    method = body.get("method") if isinstance(body, dict) else None
    params = body.get("params") if isinstance(body, dict) else None
    try:
        _, headers = modern_request(
            method if isinstance(method, str) else "x", params if isinstance(params, dict) else {}
        )
    except (TypeError, AttributeError):
        headers = {**POST_HEADERS, "MCP-Protocol-Version": MODERN_VERSION}
    headers = sendable(headers)
    for name in ("MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"):
        action = draw(st.integers(0, 12))
        if action == 0:
            headers.pop(name, None)
        elif action == 1:
            headers[name] = draw(st.one_of(HEADER_TEXT, OTHER_VERSIONS))
        elif action == 2:
            headers[name] = "=?base64?" + base64.b64encode(draw(st.binary(max_size=12))).decode() + "?="
    return headers


def test_2026_stateless_requests_with_wrong_params_and_meta(fuzz: FuzzRun) -> None:
    templates = {**method_templates(fuzz), "subscriptions/listen": subscriptions_listen}

    @settings(FUZZ_SETTINGS, max_examples=2_600)
    @given(data=st.data())
    def run_one(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(STATELESS_METHODS), label="method")
        params = templates[method](data.draw)
        if isinstance(params, dict) and data.draw(st.integers(0, 19)) > 0:
            params["_meta"] = data.draw(modern_meta(), label="_meta")
        body = data.draw(json_rpc_body(method, params), label="body")
        headers = data.draw(routing_headers(body), label="headers")
        response, documents = fuzz.send("stateless", "POST", headers, encode(body, data.draw))
        assert_clear_answer(response, documents)

    run_one()
    assert_log_clean(fuzz)
    fuzz.families_done.add("stateless")


# --- family 4: headers, HTTP methods and session ids -----------------------------------------------------------

TOKEN_NAMES: Final = st.text(alphabet=string.ascii_letters + string.digits + "-_.!#$%&'*+^`|~", min_size=1, max_size=20)
ACCEPTS: Final = (
    "application/json, text/event-stream",
    "application/json",
    "text/event-stream",
    "*/*",
    "text/html",
    "application/json;q=0, text/event-stream;q=0",
    "",
)
CONTENT_TYPES: Final = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
)


@st.composite
def fuzzed_headers(draw: st.DrawFn, run: FuzzRun) -> dict[str, str]:
    headers: dict[str, str] = {}

    def maybe(name: str, strategy: st.SearchStrategy[str]) -> None:
        if draw(st.integers(0, 3)) > 0:
            headers[name] = draw(strategy)

    maybe("Accept", st.one_of(st.sampled_from(ACCEPTS), HEADER_TEXT))
    maybe("Content-Type", st.one_of(st.sampled_from(CONTENT_TYPES), HEADER_TEXT))
    maybe("MCP-Protocol-Version", OTHER_VERSIONS)
    session = draw(st.sampled_from(["none", "live", "ended", "foreign", "junk", "huge"]))
    if session == "live":
        headers["Mcp-Session-Id"] = run.session()
    elif session == "ended":
        headers["Mcp-Session-Id"] = run.ended_session
    elif session == "foreign":
        headers["Mcp-Session-Id"] = secrets.token_urlsafe(32)
    elif session == "junk":
        headers["Mcp-Session-Id"] = draw(HEADER_TEXT)
    elif session == "huge":
        headers["Mcp-Session-Id"] = "s" * draw(st.integers(1_000, 16_000))
    if draw(st.integers(0, 3)) == 0:
        headers["Mcp-Method"] = draw(st.one_of(st.sampled_from(STATELESS_METHODS), HEADER_TEXT))
    if draw(st.integers(0, 5)) == 0:
        headers["Mcp-Name"] = draw(HEADER_TEXT)
    if draw(st.integers(0, 5)) == 0:
        headers["Last-Event-ID"] = draw(st.one_of(HEADER_TEXT, st.just(f"{secrets.token_urlsafe(8)}.999999")))
    if draw(st.integers(0, 5)) == 0:
        own = run.server.url
        headers["Origin"] = draw(st.one_of(st.sampled_from([own, "http://evil.example", "null"]), HEADER_TEXT))
    if draw(st.integers(0, 7)) == 0:
        headers["Host"] = draw(st.one_of(st.sampled_from(["evil.example", "127.0.0.1", "localhost:1"]), HEADER_TEXT))
    if draw(st.integers(0, 5)) == 0:
        headers.update(draw(st.dictionaries(TOKEN_NAMES, HEADER_TEXT, max_size=4)))
    return headers


@st.composite
def plain_bodies(draw: st.DrawFn) -> bytes:
    """Bodies a header decides the fate of: valid requests of either era, or nothing."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return b""
    if choice == 1:
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    if choice == 2:
        return json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}).encode()
    if choice == 3:
        return json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    return json.dumps(modern_request(draw(st.sampled_from(["tools/list", "server/discover"])))[0]).encode()


HTTP_METHODS: Final = ("POST", "POST", "POST", "POST", "GET", "GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD")


def test_headers_methods_and_session_ids(fuzz: FuzzRun) -> None:
    @settings(FUZZ_SETTINGS, max_examples=2_200)
    @given(data=st.data())
    def run_one(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(HTTP_METHODS), label="http method")
        headers = data.draw(fuzzed_headers(fuzz), label="headers")
        body = data.draw(plain_bodies(), label="body") if method not in ("GET", "HEAD") else b""
        response, documents = fuzz.send("headers", method, headers, body)
        if method == "DELETE" and response.status_code < 300 and headers.get("Mcp-Session-Id") == fuzz.live_session:
            fuzz.live_session = ""  # ended by this very request: the next family member opens another
        if method == "OPTIONS":
            # A CORS preflight: allowed (204) or refused (403, no body: a browser shows a script neither).
            assert response.status_code in (204, 403), response.status_code
            return
        if method == "HEAD":
            assert response.status_code < 500, response.status_code  # the GET's status, without its body
            return
        assert_clear_answer(response, documents)

    run_one()
    assert_log_clean(fuzz)
    fuzz.families_done.add("headers")


# --- family 5: forged requestState and task ids ----------------------------------------------------------------

STATE_TOOL: Final = "test_input_required_result_multi_round"
BASE64URL: Final = string.ascii_letters + string.digits + "-_"


@st.composite
def forged_text(draw: st.DrawFn, genuine: str) -> Any:
    """A forgery of `genuine`: one character changed, cut, extended, re-made, or not a string at all."""
    choice = draw(st.integers(0, 6))
    if choice == 0:
        at = draw(st.integers(0, len(genuine) - 1))
        replacement = draw(st.sampled_from(BASE64URL).filter(lambda c: c != genuine[at]))
        return genuine[:at] + replacement + genuine[at + 1 :]
    if choice == 1:
        return genuine[: draw(st.integers(0, len(genuine) - 1))]
    if choice == 2:
        return genuine + draw(st.text(min_size=1, max_size=20))
    if choice == 3:
        prefix = genuine.split(".", 1)[0] + "." if "." in genuine else ""
        return prefix + base64.urlsafe_b64encode(draw(st.binary(max_size=200))).decode().rstrip("=")
    if choice == 4:
        return draw(st.one_of(JSON_VALUES, HUGE_VALUES))
    if choice == 5:
        return secrets.token_urlsafe(len(genuine) * 3 // 4)
    return ".".join(reversed(genuine.split(".")))


def test_forged_request_state_and_task_ids(fuzz: FuzzRun) -> None:
    state, task_id = genuine_state_and_task(fuzz)
    tools = [tool["name"] for tool in fuzz.tools]

    @st.composite
    def forged_2026(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
        method = draw(st.sampled_from(["tools/call", "tools/call", "tasks/get", "tasks/update", "tasks/cancel"]))
        meta = {CAPABILITIES_KEY: WITH_TASKS}
        if method == "tools/call":
            name = draw(st.one_of(st.just(STATE_TOOL), st.sampled_from(tools)))
            params: dict[str, Any] = {"name": name, "arguments": draw(st.sampled_from([{}, {"x": 1}]))}
            params["requestState"] = draw(st.one_of(forged_text(state), st.just(state)))
            params["inputResponses"] = draw(
                st.one_of(st.just({"step1": {"action": "accept", "content": {"name": "Ada"}}}), JSON_VALUES)
            )
            if name in WAITING_TOOLS and name != STATE_TOOL:
                params["arguments"] = []  # never run a waiting tool for real
        else:
            params = {"taskId": draw(forged_text(task_id))}
            if method == "tasks/update":
                params["inputResponses"] = draw(JSON_VALUES)
        return modern_request(method, params, draw(REQUEST_IDS), **meta)

    @st.composite
    def forged_2025(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
        method = draw(st.sampled_from(["tasks/get", "tasks/result", "tasks/cancel", "tasks/list"]))
        key = "cursor" if method == "tasks/list" else "taskId"
        body = {
            "jsonrpc": "2.0",
            "id": draw(REQUEST_IDS),
            "method": method,
            "params": {key: draw(forged_text(task_id))},
        }
        return body, {**POST_HEADERS, "Mcp-Session-Id": fuzz.session(), "MCP-Protocol-Version": SESSION_VERSION}

    @settings(FUZZ_SETTINGS, max_examples=1_800)
    @given(request=st.one_of(forged_2026(), forged_2025()))
    def run_one(request: tuple[dict[str, Any], dict[str, str]]) -> None:
        body, headers = request
        response, documents = fuzz.send("forgeries", "POST", sendable(headers), json.dumps(body).encode())
        assert_clear_answer(response, documents)
        answer = documents[-1] if documents else {}
        if answer.get("result", {}).get("resultType") == "complete" and body["method"] == "tools/call":
            raise AssertionError(f"a forged requestState completed the call: {body}")

    run_one()
    assert_log_clean(fuzz)
    fuzz.families_done.add("forgeries")


def genuine_state_and_task(run: FuzzRun) -> tuple[str, str]:
    """A real sealed requestState (round one of the multi-round tool) and a real, finished task's id."""
    body, headers = modern_request("tools/call", {"name": STATE_TOOL, "arguments": {}})
    first = run.post_json(body, headers)["result"]
    assert first["resultType"] == "input_required", first
    body, headers = modern_request(
        "tools/call",
        {"name": "longRunningOperation", "arguments": {"duration": 0, "steps": 1}},
        **TASKS_META,
    )
    handle = run.post_json(body, headers)["result"]
    assert handle["resultType"] == "task", handle
    task_id = handle["taskId"]
    for _ in range(500):  # bounded: a zero-second operation finishes within milliseconds
        body, headers = modern_request("tasks/get", {"taskId": task_id}, **TASKS_META)
        if run.post_json(body, headers)["result"]["status"] == "completed":
            break
    else:
        raise AssertionError("the task did not complete")
    return str(first["requestState"]), str(task_id)


def assert_log_clean(run: FuzzRun) -> None:
    log = run.new_log()
    assert "Traceback" not in log, log[-5000:]
    for line in log.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            assert " 500 " not in line, line
            continue
        if not isinstance(document, dict):
            continue
        assert document.get("level") not in ("ERROR", "CRITICAL"), line
        assert not (document.get("event") == "http.access" and int(document.get("status", 0)) >= 500), line


# --- family 6: auth on, bad Authorization headers --------------------------------------------------------------


@st.composite
def bad_authorization(draw: st.DrawFn) -> str | None:
    def segment(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    choice = draw(st.integers(0, 6))
    if choice == 0:
        return None
    if choice == 1:
        return "Bearer " + draw(HEADER_TEXT.filter(bool))
    if choice == 2:
        return draw(st.sampled_from(["Bearer", "bearer x", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b"]))
    if choice == 3:
        header = {"alg": draw(st.sampled_from(["none", "HS256", "RS256", "ES256", "EdDSA"])), "typ": "at+jwt"}
        claims = draw(
            st.dictionaries(st.sampled_from(["iss", "aud", "sub", "exp", "scope", "client_id"]), JSON_SCALARS)
        )
        signature = base64.urlsafe_b64encode(draw(st.binary(max_size=64))).decode().rstrip("=")
        return f"Bearer {segment(header)}.{segment(claims)}.{signature}"
    if choice == 4:
        return "Bearer " + "A" * draw(st.integers(1_000, 12_000))
    if choice == 5:
        return draw(HEADER_TEXT)
    return "Bearer " + ".".join(
        draw(st.lists(st.text(alphabet=BASE64URL, min_size=1, max_size=30), min_size=1, max_size=6))
    )


def test_bad_authorization_headers_get_401(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(
        port, server_env(base_url=f"http://127.0.0.1:{port}", auth_mode="embedded"), tmp_path / "auth-server.log"
    )
    server.start()
    sent = 0
    try:
        with httpx.Client(timeout=httpx.Timeout(RESPONSE_TIMEOUT)) as client:

            @settings(FUZZ_SETTINGS, max_examples=400)
            @given(authorization=bad_authorization(), era=st.sampled_from(["2025", "2026"]))
            def run_one(authorization: str | None, era: str) -> None:
                nonlocal sent
                if era == "2025":
                    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
                    headers = dict(POST_HEADERS)
                else:
                    body, headers = modern_request("tools/list")
                if authorization is not None:
                    headers["Authorization"] = authorization
                sent += 1
                response = client.post(server.mcp_url, content=json.dumps(body).encode(), headers=headers)
                assert response.status_code == 401, response.text
                assert response.headers["www-authenticate"].startswith("Bearer "), response.headers
                assert_error_document(response.json())

            run_one()
        log = server.log()
        assert "Traceback" not in log, log[-5000:]
        assert '"level": "ERROR"' not in log, log[-5000:]
    finally:
        server.stop()
    AUTH_REQUESTS.append(sent)


AUTH_REQUESTS: list[int] = []
"""Requests the auth-on family sent (its own server, so counted apart)."""


# --- what the whole run left behind ----------------------------------------------------------------------------


def test_the_run_sent_enough_and_left_nothing_behind(fuzz: FuzzRun) -> None:
    missing = FAMILIES - fuzz.families_done - ({"auth"} if AUTH_REQUESTS else set())
    assert not missing, f"run the whole module: families {sorted(missing)} did not run"
    fuzzed = sum(count for family, count in fuzz.sent.items() if family != "setup") + sum(AUTH_REQUESTS)
    assert fuzzed >= REQUESTS_AT_LEAST, fuzz.sent
    # What valid-by-chance requests opened is ended the way a client would: sessions deleted, tasks cancelled.
    for session_id in fuzz.opened_sessions:
        fuzz.client.delete(fuzz.server.mcp_url, headers={"Mcp-Session-Id": session_id})
    for task_id in fuzz.task_ids:
        body, headers = modern_request("tasks/cancel", {"taskId": task_id}, **TASKS_META)
        fuzz.client.post(fuzz.server.mcp_url, json=body, headers=headers)
    gauges = (
        "refserver_sessions",
        "refserver_mcp_requests_in_flight",
        "refserver_tasks_running",
        "refserver_task_queue_length",
        "refserver_event_log_streams",
        "refserver_http_open_streams",
        "refserver_http_pending_writes",
    )
    expected = {name: value(fuzz.baseline, name) for name in gauges}
    # The baseline's live session (and its one stream) is among those deleted above; a 2026 request's stream
    # lives as long as its request.
    expected["refserver_sessions"] = expected["refserver_event_log_streams"] = 0.0
    current: dict[str, float] = {}
    for _ in range(int(SETTLE_TIMEOUT / 0.05)):
        samples = fuzz.scrape()
        current = {name: value(samples, name) for name in gauges}
        if current == expected:
            break
        time.sleep(0.05)  # polling another process: no event crosses the boundary
    assert current == expected, (current, expected)
    health = fuzz.client.get(f"{fuzz.server.url}/health").json()
    assert health["status"] == "ok" and health["sessions"] == 0 and health["runningTasks"] == 0, health
    assert health["inFlightRequests"] == 0, health
    rss = rss_bytes(worker_pid(fuzz.server.process.pid if fuzz.server.process else 0))
    growth = rss - fuzz.baseline_rss
    assert growth <= RSS_GROWTH_BOUND, f"worker RSS grew by {growth / 2**20:.1f} MiB over {fuzzed} requests"
    assert_log_clean(fuzz)
    print(f"fuzzed {fuzzed} requests {dict(fuzz.sent)}, statuses {dict(sorted(fuzz.statuses.items()))}")
    print(
        f"worker RSS grew by {growth / 2**20:.1f} MiB; {len(fuzz.opened_sessions)} sessions, {len(fuzz.task_ids)} tasks"
    )


def warm_up(run: FuzzRun) -> None:
    """One valid request of each kind in each era, a few times over: what the run allocates once (caches,
    validators, imported code paths) is allocated before the RSS baseline is taken."""
    session = run.session()
    templates: dict[str, dict[str, Any]] = {
        "tools/list": {},
        "tools/call": {"name": "echo", "arguments": {"message": "warm"}},
        "resources/read": {"uri": run.resource_uri},
        "prompts/list": {},
        "completion/complete": {
            "ref": {"type": "ref/prompt", "name": run.prompt_name},
            "argument": {"name": "style", "value": "c"},
        },
    }
    for _ in range(20):
        for method, params in templates.items():
            body, headers = modern_request(method, params)
            run.send("setup", "POST", headers, json.dumps(body).encode())
            legacy = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            run.send("setup", "POST", {**POST_HEADERS, "Mcp-Session-Id": session}, json.dumps(legacy).encode())
            run.send("setup", "POST", POST_HEADERS, b'{"jsonrpc":')

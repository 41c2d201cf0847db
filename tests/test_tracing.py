"""OpenTelemetry traces from real server processes, received by a real OTLP/HTTP collector the test runs.

Each instance exports with the SDK's own OTLP exporter (`OTEL_TRACES_EXPORTER=otlp`) to a small collector here
that decodes the protobuf requests, so what is checked is what a real collector would store: span names, kinds,
parents, attributes. Across two instances sharing Redis, a task created through one and run again by the other
after the first is stopped keeps one trace: the run's span is a child of the creating request's span.
"""

from __future__ import annotations

import gc
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import httpx2
import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import NonRecordingSpan

from refserver.dispatch import RequestCore
from refserver.features import reference
from refserver.features.catalog import FeatureIndex
from refserver.observability.tracing import TRACING, TracingConfigError, configure_tracing
from refserver.protocol.core import CoreRequest
from tests.conftest import (
    MODERN_VERSION,
    ServerProcess,
    free_port,
    initialize,
    modern_request,
    server_env,
    session_headers,
)
from tests.local_http import LocalHttpServer, QuietHandler
from tests.redis_server import RedisServer
from tests.tasks_client import TasksClient
from tests.test_request_core import SAMPLING_CLIENT, RecordingEmitter
from tests.test_scaling_tasks import wait_running

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

WAIT = 30.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
HEADER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
HEADER_SPAN = "b7ad6b7169203331"
HEADER_TRACEPARENT = f"00-{HEADER_TRACE_ID}-{HEADER_SPAN}-01"
SERVER, CLIENT = 2, 3  # the OTLP SpanKind values


@attrs.frozen
class ReceivedSpan:
    instance: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    events: tuple[str, ...]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class Collector(LocalHttpServer):
    """An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.receive(request)
                self.answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        super().__init__(Handler)

    @property
    def endpoint(self) -> str:
        return f"{self.origin}/v1/traces"

    def receive(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                instance=str(resource.get("service.instance.id")),
                                name=span.name,
                                kind=span.kind,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                status_code=span.status.code,
                                events=tuple(event.name for event in span.events),
                            )
                        )

    def named(self, name: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.name == name]

    async def wait_for(self, name: str, count: int = 1, **attributes: Any) -> list[ReceivedSpan]:
        with trio.fail_after(WAIT):
            while True:
                found = [s for s in self.named(name) if all(s.attributes.get(k) == v for k, v in attributes.items())]
                if len(found) >= count:
                    return found
                await trio.sleep(0.05)


def traced_env(collector: Collector, instance: str, **settings: Any) -> dict[str, str]:
    env = server_env(**settings)
    env.update(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_SERVICE_NAME="refserver-test",
        OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id={instance}",
    )
    return env


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture(scope="module")
def traced(collector: Collector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    server = ServerProcess(
        port,
        traced_env(
            collector, "solo", base_url=f"http://127.0.0.1:{port}", log_message_interval=3600, log_level="debug"
        ),
        tmp_path_factory.mktemp("traced") / "server.log",
    )
    server.start()
    yield server
    server.stop()


async def post(http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def test_a_2026_request_joins_the_trace_in_its_meta(traced: ServerProcess, collector: Collector) -> None:
    body, headers = modern_request(
        "tools/call", {"name": "echo", "arguments": {"message": "secret words"}}, "t-1", traceparent=TRACEPARENT
    )
    headers["traceparent"] = HEADER_TRACEPARENT  # `_meta` (SEP-414) wins over the HTTP header
    async with httpx.AsyncClient(timeout=10.0) as http:
        await post(http, traced.mcp_url, body, headers)
        (span,) = await collector.wait_for("tools/call echo", **{"jsonrpc.request.id": "t-1"})
    assert span.kind == SERVER
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, CALLER_SPAN)
    assert span.attributes == {
        "mcp.method.name": "tools/call",
        "jsonrpc.request.id": "t-1",
        "mcp.protocol.version": MODERN_VERSION,
        "refserver.era": "2026",
        "network.transport": "tcp",
        "gen_ai.tool.name": "echo",
        "gen_ai.operation.name": "execute_tool",
        "refserver.outcome": "complete",
    }
    assert "secret words" not in json.dumps([s.attributes for s in collector.spans])  # never the arguments
    # Log lines of the request carry its trace id.
    await wait_for_log(traced, f'"trace_id": "{TRACE_ID}"')


async def test_a_2025_session_request_joins_the_trace_of_its_http_headers(
    traced: ServerProcess, collector: Collector
) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        session = await initialize(http, traced.mcp_url)
        headers = {**session_headers(session), "traceparent": HEADER_TRACEPARENT}
        call = {"jsonrpc": "2.0", "id": "s-1", "method": "tools/call", "params": {"name": "nosuchtool"}}
        await post(http, traced.mcp_url, call, headers)
        read = {
            "jsonrpc": "2.0",
            "id": "s-2",
            "method": "resources/read",
            "params": {"uri": "test://static/resource/1"},
        }
        await post(http, traced.mcp_url, read, headers)
        (failed,) = await collector.wait_for("tools/call nosuchtool", **{"jsonrpc.request.id": "s-1"})
        (reading,) = await collector.wait_for("resources/read", **{"jsonrpc.request.id": "s-2"})
    for span in (failed, reading):
        assert (span.trace_id, span.parent_span_id) == (HEADER_TRACE_ID, HEADER_SPAN)
        assert span.attributes["refserver.era"] == "2025" and span.attributes["mcp.protocol.version"] == "2025-11-25"
        assert len(span.attributes["mcp.session.id"]) == 16 and span.attributes["mcp.session.id"] not in session
    assert failed.attributes["error.type"] == "-32602" and failed.status_code == 2  # an unknown tool: invalid params
    assert reading.attributes["mcp.resource.uri"] == "test://static/resource/1"


async def test_a_2026_retry_continues_the_trace_its_request_state_carries(
    traced: ServerProcess, collector: Collector
) -> None:
    """The client sends no trace context with its retry: the sealed requestState brings the first round's."""
    name, arguments = "test_input_required_result_multi_round", {}
    body, headers = modern_request("tools/call", {"name": name, "arguments": arguments}, "m-1", traceparent=TRACEPARENT)
    async with httpx.AsyncClient(timeout=10.0) as http:
        first = (await post(http, traced.mcp_url, body, headers)).json()["result"]
        assert first["resultType"] == "input_required"
        answer = {"step1": {"action": "accept", "content": {"name": "Ada"}}}
        params = {"name": name, "arguments": arguments, "inputResponses": answer, "requestState": first["requestState"]}
        await post(http, traced.mcp_url, *modern_request("tools/call", params, "m-2"))
        (asking,) = await collector.wait_for(f"tools/call {name}", **{"jsonrpc.request.id": "m-1"})
        (retry,) = await collector.wait_for(f"tools/call {name}", **{"jsonrpc.request.id": "m-2"})
    assert asking.attributes["refserver.outcome"] == "input_required" and "mcp.input_required" in asking.events
    assert (retry.trace_id, retry.parent_span_id) == (TRACE_ID, asking.span_id)


async def test_a_protocol_error_sets_the_span_status(traced: ServerProcess, collector: Collector) -> None:
    body, headers = modern_request("no/such/method", {}, "e-1")
    async with httpx.AsyncClient(timeout=10.0) as http:
        await http.post(traced.mcp_url, json=body, headers=headers)
        (span,) = await collector.wait_for("no/such/method")
    assert span.status_code == 2  # STATUS_CODE_ERROR
    assert span.attributes["error.type"] == "-32601" and span.attributes["rpc.response.status_code"] == "-32601"
    assert span.trace_id not in (TRACE_ID, HEADER_TRACE_ID)  # no caller trace: a new one


async def test_a_server_to_client_request_is_a_client_span_and_carries_the_trace(
    traced: ServerProcess, collector: Collector
) -> None:
    seen_meta: list[dict[str, Any]] = []

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen_meta.append(dict(params.meta or {}))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled"), model="test-model"
        )

    with trio.fail_after(WAIT):
        async with (
            httpx2.AsyncClient(headers={"traceparent": HEADER_TRACEPARENT}, timeout=httpx2.Timeout(20.0)) as http,
            Client(
                streamable_http_client(traced.mcp_url, http_client=http),
                mode="legacy",
                cache=None,
                sampling_callback=sampling,
            ) as client,
        ):
            result = await client.call_tool("sampleLLM", {"prompt": "hi", "maxTokens": 10})
        assert not result.is_error
        (call,) = await collector.wait_for("tools/call sampleLLM")
        (asked,) = await collector.wait_for("sampling/createMessage")
    assert asked.kind == CLIENT and asked.parent_span_id == call.span_id and asked.trace_id == HEADER_TRACE_ID
    (meta,) = seen_meta
    assert meta["traceparent"].split("-")[1] == HEADER_TRACE_ID  # the client's handler may join the trace


def test_the_console_exporter_prints_spans(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(base_url=f"http://127.0.0.1:{port}", log_message_interval=3600)
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="50")
    server = ServerProcess(port, env, tmp_path / "server.log")
    server.start()
    try:
        body, headers = modern_request("tools/call", {"name": "echo", "arguments": {"message": "x"}}, 1)
        assert httpx.post(server.mcp_url, json=body, headers=headers, timeout=10).status_code == 200
    finally:
        server.stop()  # the exporter flushes at shutdown
    assert '"name": "tools/call echo"' in server.log()


def test_tracing_off_builds_no_tracer_and_imports_no_sdk() -> None:
    assert configure_tracing({}) is TRACING and not TRACING.enabled
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "none"}) is TRACING and not TRACING.enabled
    assert not configure_tracing({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}).enabled
    off = TRACING.server_span("tools/call echo", {})
    assert off is TRACING.client_span("redis") and off is TRACING.internal_span("x")  # one shared no-op
    with off as span:
        assert span is None and TRACING.carrier() is None and TRACING.current_trace_id() is None
    with pytest.raises(TracingConfigError, match="unknown exporter"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingConfigError, match="http/protobuf"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def live_spans() -> int:
    gc.collect()
    return sum(isinstance(o, NonRecordingSpan | SdkSpan) for o in gc.get_objects())


async def test_tracing_off_creates_no_span_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core and its adapters' span calls, a few hundred times, with tracing off: not one span is made."""
    made: list[object] = []
    for span_class in (NonRecordingSpan, SdkSpan):
        original = span_class.__init__

        def counting(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            made.append(self)
            __original(self, *args, **kwargs)

        monkeypatch.setattr(span_class, "__init__", counting)
    core = RequestCore(FeatureIndex.build([reference.build_catalog()]))
    emitter = RecordingEmitter()
    before = live_spans()
    for index in range(200):
        request = CoreRequest(index, "tools/call", {"name": "echo", "arguments": {"message": "x"}}, SAMPLING_CLIENT)
        with core.request_span(request) as span, TRACING.client_span("redis"):
            span.record(await core.handle(request, emitter))
        assert TRACING.carrier() is None
    assert made == []
    assert live_spans() == before  # (the official client's own spans, from the tests above, may still be around)


async def test_a_task_rerun_on_another_instance_stays_in_the_creating_request_trace(
    collector: Collector, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis = redis_server
    instances = []
    try:
        for name in ("a", "b"):
            port = free_port()
            settings = {"redis_url": redis.url, "base_url": "http://127.0.0.1:3232", "allowed_hosts": "127.0.0.1"}
            env = traced_env(collector, name, task_lease=60, log_message_interval=3600, **settings)
            instances.append(ServerProcess(port, env, tmp_path / f"instance-{name}.log"))
        for instance in instances:
            instance.start()
        names = {instance.url: name for instance, name in zip(instances, ("a", "b"), strict=True)}
        first = instances[0]
        async with httpx.AsyncClient(timeout=10.0) as http:
            client = TasksClient(http, [first.url])
            meta = {"traceparent": TRACEPARENT}
            task_id = await client.start("slow_compute", {"seconds": 3, "label": "traced"}, meta=meta)
            running = await wait_running(http, instances, 10)
            running.stop(signal.SIGTERM)  # gives its lease back: the other instance runs the task again
            other = next(instance for instance in instances if instance is not running)
            client.urls = [other.url]
            done = await client.wait_terminal(task_id, WAIT)
        assert done["status"] == "completed", done
        created = [
            span
            for span in await collector.wait_for("tools/call slow_compute")
            if "refserver.task" not in span.attributes and span.trace_id == TRACE_ID
        ]
        (creating,) = created
        assert creating.instance == "a" and creating.parent_span_id == CALLER_SPAN
        runs = await collector.wait_for("tools/call slow_compute", count=2, **{"refserver.task": True})
        assert {run.trace_id for run in runs} == {TRACE_ID}
        assert {run.parent_span_id for run in runs} == {creating.span_id}  # children of the creating request
        assert {run.instance for run in runs} == {
            names[running.url],
            names[other.url],
        }  # lost on one, done on the other
        in_trace = {span.span_id for span in collector.spans if span.trace_id == TRACE_ID}
        redis_calls = [
            s for s in collector.spans if s.trace_id == TRACE_ID and s.attributes.get("db.system.name") == "redis"
        ]
        assert redis_calls and all(s.kind == CLIENT and s.parent_span_id in in_trace for s in redis_calls)
    finally:
        for instance in instances:
            instance.stop()


async def wait_for_log(server: ServerProcess, text: str) -> None:
    with trio.fail_after(WAIT):
        while text not in server.log():
            await trio.sleep(0.05)

"""OpenTelemetry traces, configured by the standard `OTEL_*` variables, and nothing at all when none are asked for.

`OTEL_TRACES_EXPORTER` names the exporters (`console`, `otlp`, or both comma-separated; unset or `none`: tracing
off); `OTEL_SDK_DISABLED=true` turns it off whatever else is set. The SDK itself reads the rest: the OTLP endpoint
and headers (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_*`), the batch processor's bounds
(`OTEL_BSP_*`: a bounded queue, spans beyond it are dropped, never waited for), the sampler
(`OTEL_TRACES_SAMPLER`), the resource (`OTEL_SERVICE_NAME`, default `refserver`; `OTEL_RESOURCE_ATTRIBUTES`).
The SDK and the OTLP exporter are the optional extra `refserver[otel]`; without them only `none` is possible.

Off, every entry point below returns one shared do-nothing context manager: no tracer, no span objects, no
context lookups. On, spans follow the OpenTelemetry MCP semantic conventions where they name something.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

EXPORTERS: Final = frozenset({"console", "otlp"})
SHUTDOWN_TIMEOUT_MILLIS: Final = 5000
"""Bound on flushing the last spans at shutdown: an unreachable collector must not hold the exit."""
CARRIED_FIELDS: Final = ("traceparent", "tracestate", "baggage")
"""The W3C fields a trace context travels in (`_meta`, HTTP headers, the bus, task records, `requestState`)."""

_OFF: Final = contextlib.nullcontext()
"""Reusable (nullcontext keeps no state): what every entry point returns while tracing is off."""

Carrier = Mapping[str, str]


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something this installation cannot do (the message says what)."""


class Tracing:
    def __init__(self) -> None:
        self._tracer: trace.Tracer | None = None
        self._provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def install(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("refserver")

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking, bounded); tracing is off afterwards."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is not None:
            provider.shutdown()

    def server_span(
        self,
        name: str,
        attributes: Mapping[str, Any],
        *,
        carrier: Carrier | None = None,
        links: Sequence[Carrier] = (),
    ) -> contextlib.AbstractContextManager[trace.Span | None]:
        """A SERVER span; its parent from `carrier` (e.g. `_meta`) when it holds a trace, else the current one."""
        if self._tracer is None:
            return _OFF
        return self._span(name, attributes, trace.SpanKind.SERVER, carrier, links)

    def internal_span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        carrier: Carrier | None = None,
        links: Sequence[Carrier] = (),
    ) -> contextlib.AbstractContextManager[trace.Span | None]:
        """A child of the current span (or of `carrier`); none at all outside a trace, so idle work stays quiet."""
        if self._tracer is None:
            return _OFF
        if carrier is None and not trace.get_current_span().get_span_context().is_valid:
            return _OFF
        return self._span(name, attributes or {}, trace.SpanKind.INTERNAL, carrier, links)

    def client_span(
        self, name: str, attributes: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[trace.Span | None]:
        """A CLIENT child span (a server-to-client request, a Redis round trip); none outside a trace."""
        if self._tracer is None or not trace.get_current_span().get_span_context().is_valid:
            return _OFF
        return self._span(name, attributes or {}, trace.SpanKind.CLIENT, None, ())

    def carrier(self) -> dict[str, str] | None:
        """The current trace context as W3C fields, to send along (None while off or outside a trace)."""
        if self._tracer is None or not trace.get_current_span().get_span_context().is_valid:
            return None
        fields: dict[str, str] = {}
        propagate.inject(fields)
        return fields or None

    def attached(self, carrier: Carrier | None) -> contextlib.AbstractContextManager[object]:
        """Make `carrier`'s trace the current context for a block (an HTTP request's headers, say)."""
        if self._tracer is None or not carrier or "traceparent" not in carrier:
            return _OFF
        return _attached(carrier)

    def current_trace_id(self) -> str | None:
        if self._tracer is None:
            return None
        span_context = trace.get_current_span().get_span_context()
        return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None

    def current_span_id(self) -> str | None:
        if self._tracer is None:
            return None
        span_context = trace.get_current_span().get_span_context()
        return trace.format_span_id(span_context.span_id) if span_context.is_valid else None

    @contextlib.contextmanager
    def _span(
        self,
        name: str,
        attributes: Mapping[str, Any],
        kind: trace.SpanKind,
        carrier: Carrier | None,
        links: Sequence[Carrier],
    ) -> Iterator[trace.Span]:
        assert self._tracer is not None
        parent = _extracted(carrier) if carrier else None
        span_links = [trace.Link(context) for context in map(_span_context, links) if context is not None]
        with self._tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=dict(attributes), links=span_links
        ) as span:
            yield span


def _extracted(carrier: Carrier) -> otel_context.Context | None:
    """The context `carrier` holds, or None (keep the current one) when it holds no valid trace."""
    extracted = propagate.extract(dict(carrier))
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def _span_context(carrier: Carrier) -> trace.SpanContext | None:
    span_context = trace.get_current_span(propagate.extract(dict(carrier))).get_span_context()
    return span_context if span_context.is_valid else None


@contextlib.contextmanager
def _attached(carrier: Carrier) -> Iterator[object]:
    extracted = _extracted(carrier)
    if extracted is None:
        yield None
        return
    token = otel_context.attach(extracted)
    try:
        yield None
    finally:
        otel_context.detach(token)


TRACING: Final = Tracing()
"""The process's tracing, like its logging: configured once at start-up (`configure_tracing`)."""


def carried_fields(source: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The W3C fields of `source` (a `_meta`, headers, a stored record) that are strings, or None if none are."""
    if not source:
        return None
    fields = {key: value for key in CARRIED_FIELDS if isinstance(value := source.get(key), str)}
    return fields or None


def configure_tracing(environ: Mapping[str, str]) -> Tracing:
    """Install the exporters the OTEL_* variables name (see the module's doc); off when they name none."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TRACING
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names:
        return TRACING
    unknown = sorted(set(names) - EXPORTERS)
    if unknown:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter(s) {unknown}; use console, otlp or none")
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if "otlp" in names and protocol not in (None, "", "http/protobuf"):
        raise TracingConfigError(f"OTLP protocol {protocol!r} is not supported here: use http/protobuf")
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        raise TracingConfigError(
            "OTEL_TRACES_EXPORTER is set but the OpenTelemetry SDK is not installed: pip install 'refserver[otel]'"
        ) from None
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise TracingConfigError(
                    "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'refserver[otel]'"
                ) from None
            exporters.append(OTLPSpanExporter())
    defaults = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "refserver"}
    provider = TracerProvider(resource=Resource.create(defaults), shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    TRACING.install(provider)
    logger.info("tracing on: exporting spans to %s", ", ".join(names), extra={"event": "tracing.configured"})
    return TRACING

"""OpenTelemetry tracing, off unless an OTLP exporter is configured: the API's HTTP spans and Temporal's
(StartWorkflow, RunWorkflow, StartActivity, RunActivity...) in one trace, exported over OTLP/HTTP.

Off means off: no tracer provider, no FastAPI middleware, no Temporal interceptor. On, the provider is this
process's own and is handed to the FastAPI instrumentation and to Temporal's `TracingInterceptor` explicitly;
the global one is left alone, so nothing else in the process starts tracing behind our back (and tests may build
several apps in one process).

Every span passes `ScrubbingSpanExporter` on its way out. The instrumentations record what they see of a request:
its URL with the query (the OAuth callback's `code` and `state`, the start link's `state`), the client's address
and user agent, any header an operator asks them to capture (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*: the
Authorization header, cookies), and exception messages (which may quote QuickBooks, and so a client's name).
None of that leaves the process: the exporter keeps paths, routes, methods, status codes, workflow and activity
ids (account, invoice and company ids: bounded, never personal data) and exception types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue
from temporalio.contrib.opentelemetry import TracingInterceptor

from settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

API_SERVICE_NAME = "qbo-sync-api"
WORKER_SERVICE_NAME = "qbo-sync-worker"
# OTLP/HTTP's path for traces, appended to OTEL_EXPORTER_OTLP_ENDPOINT (as the SDK does with its own variable).
TRACES_PATH = "v1/traces"
# Probes and scrapes, every few seconds each: traces of them say nothing and would drown the rest.
EXCLUDED_URLS = "/healthz,/readyz,/metrics"

# Attributes that name the caller or carry what a request sent besides its path: its address, its browser, and
# the query and headers in their old and new semantic-convention names.
_DROPPED_ATTRIBUTES = frozenset(
    {
        "url.query",
        "client.address",
        "client.port",
        "network.peer.address",
        "network.peer.port",
        "net.peer.ip",
        "net.peer.port",
        "net.sock.peer.addr",
        "net.sock.peer.port",
        "http.client_ip",
        "http.user_agent",
        "user_agent.original",
        "user_agent.synthetic.type",
    }
)
_DROPPED_PREFIXES = ("http.request.header.", "http.response.header.")
# URL-valued attributes kept without their query and fragment.
_URL_ATTRIBUTES = frozenset({"http.url", "url.full", "http.target"})
# Of an exception event, only what kind of exception it was: its message and stack trace may quote a value.
_KEPT_EXCEPTION_ATTRIBUTES = frozenset({"exception.type", "exception.escaped"})
# A status description is kept up to "TypeName:" (how the instrumentations write `f"{type}: {message}"`).
_EXCEPTION_TYPE = re.compile(r"[A-Za-z_][\w.]*")


def traces_endpoint(settings: Settings) -> str | None:
    """Where spans go, or None when tracing is off (no endpoint, OTEL_TRACES_EXPORTER=none, OTEL_SDK_DISABLED)."""
    if settings.otel_sdk_disabled or settings.otel_traces_exporter == "none":
        return None
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return f"{settings.otel_exporter_otlp_endpoint.removesuffix('/')}/{TRACES_PATH}"
    return None


def _without_query(url: str) -> str:
    return url.split("#", 1)[0].split("?", 1)[0]


def _scrubbed_attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    kept: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if key in _DROPPED_ATTRIBUTES or key.startswith(_DROPPED_PREFIXES):
            continue
        kept[key] = _without_query(value) if key in _URL_ATTRIBUTES and isinstance(value, str) else value
    return kept


def _scrubbed_event(event: Event) -> Event:
    attributes: Mapping[str, AttributeValue] = _scrubbed_attributes(event.attributes)
    if event.name == "exception":
        attributes = {key: value for key, value in attributes.items() if key in _KEPT_EXCEPTION_ATTRIBUTES}
    return Event(event.name, attributes, event.timestamp)


def _scrubbed_status(status: Status) -> Status:
    kind = (status.description or "").split(":", 1)[0].strip()
    return Status(status.status_code, kind if _EXCEPTION_TYPE.fullmatch(kind) else None)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """The span as it may leave the process (see the module's docstring)."""
    return ReadableSpan(
        name=_without_query(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_scrubbed_attributes(span.attributes),
        events=[_scrubbed_event(event) for event in span.events],
        links=span.links,
        kind=span.kind,
        status=_scrubbed_status(span.status),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanExporter(SpanExporter):
    """Exports through `exporter` what `scrubbed` keeps of each span: the one gate every span passes, whichever
    instrumentation made it and whatever its environment variables asked it to capture."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._exporter.export([scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class TraceContextInterceptor(TracingInterceptor):
    """Temporal's interceptor, passing on the W3C trace context and nothing else.

    Its default propagator also passes W3C baggage on, which a caller may fill with anything (a user's email, say)
    and which would travel in the `_tracer-data` header: headers are not encoded, so Temporal would keep it in
    plain text in every history it reaches. With the API's and the workers' clients sending the trace context
    only, no baggage enters a header, and the workflow side (which passes on what it received) adds none.
    """

    def __init__(self, tracer: Tracer) -> None:
        super().__init__(tracer)
        self.text_map_propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Tracing:
    """This process's tracer provider, and the instrumentations that use it."""

    provider: TracerProvider

    def temporal_interceptor(self) -> TracingInterceptor:
        """Temporal's interceptor, for `Client.connect`: the client's calls get spans, and so do the workflows and
        activities of workers built on that client. The trace context travels in a `_tracer-data` header, which
        the payload codec leaves alone (headers are not encoded unless the client asks for it)."""
        return TraceContextInterceptor(self.provider.get_tracer("qbo-sync"))

    def instrument(self, app: FastAPI) -> None:
        """A server span for every request but the probes', named after its route template."""
        # Here, not at the top: the worker never loads FastAPI (its instrumentation takes a third of a second).
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            excluded_urls=EXCLUDED_URLS,
            # The ASGI messages of a request as spans of their own: noise.
            exclude_spans=["receive", "send"],
        )

    def shutdown(self) -> None:
        """Export what is still queued, then stop (blocks up to the exporter's timeout: call it off the loop)."""
        self.provider.shutdown()


def start_tracing(settings: Settings, *, service_name: str) -> Tracing | None:
    """This process's tracing, or None (and nothing set up) when no exporter is configured."""
    endpoint = traces_endpoint(settings)
    if endpoint is None:
        return None
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name or service_name})
    )
    provider.add_span_processor(
        BatchSpanProcessor(ScrubbingSpanExporter(OTLPSpanExporter(endpoint=endpoint)))
    )
    return Tracing(provider)

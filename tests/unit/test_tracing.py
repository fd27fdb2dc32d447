"""Tracing is off unless an exporter is configured (OpenTelemetry's own variables), and what a span may carry out."""

from __future__ import annotations

from typing import Any

import opentelemetry.trace
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

import temporal_support
from api.main import create_app
from observability.tracing import (
    API_SERVICE_NAME,
    ScrubbingSpanExporter,
    Tracing,
    start_tracing,
    traces_endpoint,
)
from settings import Settings

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
)


@pytest.fixture
def otel_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without any OpenTelemetry variable a developer's shell may have set."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def middleware_stack(settings: Settings) -> list[type[Any]]:
    """The classes of the ASGI stack the API's app builds, outermost first."""
    layer: Any = create_app(settings).build_middleware_stack()
    found: list[type[Any]] = []
    while layer is not None and len(found) < 50:
        found.append(type(layer))
        layer = getattr(layer, "app", None)
    return found


def interceptors(client: Client) -> list[Any]:
    return list(client.config()["interceptors"])


async def test_with_no_exporter_configured_no_provider_middleware_or_interceptor_is_installed(
    otel_environment: pytest.MonkeyPatch,
) -> None:
    settings = Settings(_env_file=None)
    assert traces_endpoint(settings) is None
    assert start_tracing(settings, service_name=API_SERVICE_NAME) is None
    assert OpenTelemetryMiddleware not in middleware_stack(settings)
    client = await temporal_support.connect(settings, lazy=True)
    assert not any(isinstance(interceptor, TracingInterceptor) for interceptor in interceptors(client))
    # Nor anything global: the process's tracer provider is still OpenTelemetry's no-op proxy.
    assert isinstance(opentelemetry.trace.get_tracer_provider(), opentelemetry.trace.ProxyTracerProvider)


@pytest.mark.parametrize(
    "switch_off", [{"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_SDK_DISABLED": "true"}], ids=["none", "disabled"]
)
def test_an_endpoint_does_not_turn_tracing_on_when_opentelemetry_is_told_off(
    otel_environment: pytest.MonkeyPatch, switch_off: dict[str, str]
) -> None:
    otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.test:4318")
    for name, value in switch_off.items():
        otel_environment.setenv(name, value)
    settings = Settings(_env_file=None)
    assert start_tracing(settings, service_name=API_SERVICE_NAME) is None
    assert OpenTelemetryMiddleware not in middleware_stack(settings)


def test_the_traces_endpoint_follows_opentelemetrys_variables(otel_environment: pytest.MonkeyPatch) -> None:
    otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.test:4318/")
    # The base URL gets the signal's path, as the SDK's own exporters do.
    assert traces_endpoint(Settings(_env_file=None)) == "http://collector.test:4318/v1/traces"
    # The signal's own endpoint is taken as it is, and wins.
    otel_environment.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.test/otlp/spans")
    assert traces_endpoint(Settings(_env_file=None)) == "https://traces.test/otlp/spans"


async def test_with_an_endpoint_the_api_and_its_temporal_client_are_traced(
    otel_environment: pytest.MonkeyPatch,
) -> None:
    otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    settings = Settings(_env_file=None)
    tracing = start_tracing(settings, service_name=API_SERVICE_NAME)
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "qbo-sync-api"
        # Outermost: the request's span covers every middleware of ours.
        assert middleware_stack(settings)[1] is OpenTelemetryMiddleware
        client = await temporal_support.connect(settings, lazy=True, tracing=tracing)
        assert isinstance(interceptors(client)[0], TracingInterceptor)
        assert isinstance(opentelemetry.trace.get_tracer_provider(), opentelemetry.trace.ProxyTracerProvider)
    finally:
        tracing.shutdown()
    otel_environment.setenv("OTEL_SERVICE_NAME", "billing-sync")
    named = start_tracing(Settings(_env_file=None), service_name=API_SERVICE_NAME)
    assert named is not None
    named.shutdown()
    assert named.provider.resource.attributes["service.name"] == "billing-sync"


def test_spans_leave_without_queries_headers_client_addresses_or_exception_messages() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingSpanExporter(exported)))
    tracer = Tracing(provider).provider.get_tracer("test")
    with tracer.start_as_current_span(
        "GET /oauth/quickbooks/callback",
        attributes={
            "http.url": "http://127.0.0.1:8000/oauth/quickbooks/callback?code=the-code&state=the-state",
            "url.full": "http://127.0.0.1:8000/oauth/quickbooks/callback?code=the-code#frag",
            "http.target": "/oauth/quickbooks/callback?code=the-code&state=the-state",
            "url.path": "/oauth/quickbooks/callback",
            "url.query": "code=the-code&state=the-state",
            "http.route": "/oauth/quickbooks/callback",
            "http.request.header.authorization": ("Bearer the-token",),
            "http.request.header.cookie": ("qbo_oauth_x=the-cookie",),
            "http.response.header.set_cookie": ("qbo_oauth_x=the-cookie",),
            "client.address": "203.0.113.7",
            "net.peer.ip": "203.0.113.7",
            "user_agent.original": "Mozilla/5.0 (Ada's laptop)",
            "http.status_code": 500,
        },
    ) as span:
        span.record_exception(ValueError("no customer named Ada Lovelace <ada@example.com>"))
        span.set_status(
            opentelemetry.trace.Status(
                opentelemetry.trace.StatusCode.ERROR, "ValueError: no customer named Ada Lovelace"
            )
        )
    (finished,) = exported.get_finished_spans()
    assert dict(finished.attributes or {}) == {
        "http.url": "http://127.0.0.1:8000/oauth/quickbooks/callback",
        "url.full": "http://127.0.0.1:8000/oauth/quickbooks/callback",
        "http.target": "/oauth/quickbooks/callback",
        "url.path": "/oauth/quickbooks/callback",
        "http.route": "/oauth/quickbooks/callback",
        "http.status_code": 500,
    }
    (event,) = finished.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {"exception.type": "ValueError", "exception.escaped": "False"}
    assert finished.status.status_code is opentelemetry.trace.StatusCode.ERROR
    assert finished.status.description == "ValueError"
    assert finished.name == "GET /oauth/quickbooks/callback"

"""Tracing through the whole engine: an invoice sent through the API is one trace, from the API's HTTP span to the
worker's activity, exported over OTLP/HTTP to a receiver this test runs, with nothing personal or secret in it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from temporalio.testing import WorkflowEnvironment

from tests.engine import SERVICE_TOKEN, invoice_payload, running_engine, start_worker_process
from tests.support import Emulator
from workflows.ids import invoice_workflow_id

CLIENT_NAME = "Grace Hopper"
CLIENT_EMAIL = "grace.hopper@example.com"
# Long enough that the batch processors export nothing on their own during the test: what arrives, arrives
# because the processes flushed it as they stopped.
BATCH_DELAY_MILLIS = "600000"


@dataclass
class ReceivedSpan:
    service: str
    span: Span

    @property
    def attributes(self) -> dict[str, str]:
        return {item.key: _text(item.value) for item in self.span.attributes}


def _text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


@dataclass
class OtlpReceiver:
    """A tiny OTLP/HTTP trace receiver on 127.0.0.1: keeps every export request, answers as a collector does."""

    url: str
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            bodies = list(self.bodies)
        found: list[ReceivedSpan] = []
        for body in bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                service = next(
                    _text(item.value)
                    for item in resource_spans.resource.attributes
                    if item.key == "service.name"
                )
                for scope_spans in resource_spans.scope_spans:
                    found.extend(ReceivedSpan(service, span) for span in scope_spans.spans)
        return found


@contextlib.contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    # A thread of its own: the API under test runs in this test's event loop, and exports from its own thread.
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = OtlpReceiver(url=f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            with receiver.lock:
                receiver.bodies.append(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def one(spans: list[ReceivedSpan], name: str, trace_id: bytes) -> ReceivedSpan:
    matching = [found for found in spans if found.span.name == name and found.span.trace_id == trace_id]
    assert len(matching) == 1, (name, [found.span.name for found in spans if found.span.trace_id == trace_id])
    return matching[0]


async def test_a_sent_invoice_is_one_trace_from_the_api_request_to_the_activity_without_personal_data(
    dev_env: WorkflowEnvironment,
    migrated_database: str,
    emulator: Emulator,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API runs in this process: its batch processor reads these as it is built. And an operator who asks the
    # instrumentation to capture every header still gets no Authorization header or cookie out of it.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", BATCH_DELAY_MILLIS)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*")
    browser_queries: list[str] = []

    async def remember_query(request: httpx.Request) -> None:
        query = parse_qsl(urlsplit(str(request.url)).query)
        browser_queries.extend(value for key, value in query if key in ("code", "state"))

    invoice_id = f"inv-{uuid.uuid4().hex[:8]}"
    with otlp_receiver() as receiver:
        async with running_engine(
            env=dev_env, database_url=migrated_database, emulator=emulator, task_queue=task_queue,
            with_worker=False, api_connects_itself=True,
            temporal_address=dev_env.client.service_client.config.target_host,
            otel_exporter_otlp_endpoint=receiver.url,
        ) as engine:  # fmt: skip
            worker = start_worker_process(
                engine, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY=BATCH_DELAY_MILLIS
            )
            try:
                account = await engine.create_account()
                realm = await emulator.create_company()
                # The user's browser: the start link (its `state`), Intuit's page, the callback (`code`, `state`).
                async with httpx.AsyncClient(
                    timeout=30, event_hooks={"request": [remember_query]}
                ) as browser:
                    callback_url = await engine.consent(account, realm, browser)
                    # The sign-in's cookie, which the callback clears.
                    cookies = [cookie.value for cookie in browser.cookies.jar if cookie.value]
                    callback = await browser.get(callback_url, follow_redirects=False)
                    assert "quickbooks=connected" in callback.headers["location"], callback.headers
                # The platform may pass W3C baggage on (here, its user's email): it must not reach Temporal.
                sent = await engine.api.post(
                    f"/v1/accounts/{account}/invoices/{invoice_id}/send",
                    json=invoice_payload(client_name=CLIENT_NAME, client_email=CLIENT_EMAIL),
                    headers={"baggage": f"user.email={CLIENT_EMAIL}"},
                )
                assert sent.status_code == 202, sent.text
                await engine.wait_for_invoice(account, invoice_id, "synced")
                history = await dev_env.client.get_workflow_handle(
                    invoice_workflow_id(account, invoice_id)
                ).fetch_history()
                # Nothing was exported on the batch processors' own schedule.
                assert receiver.spans() == []
            finally:
                worker.terminate()
                assert await asyncio.to_thread(worker.wait, 60) == 0
        # Both processes have stopped; what they flushed on the way out is all there is.

    spans = receiver.spans()
    assert {found.service for found in spans} == {"qbo-sync-api", "qbo-sync-worker"}
    (http,) = [
        found
        for found in spans
        if found.span.name == "POST /v1/accounts/{account_id}/invoices/{invoice_id}/send"
        and found.service == "qbo-sync-api"
    ]
    assert http.span.kind == Span.SPAN_KIND_SERVER
    trace_id = http.span.trace_id
    start = one(spans, "StartWorkflow:InvoiceWorkflow", trace_id)
    run = one(spans, "RunWorkflow:InvoiceWorkflow", trace_id)
    start_activity = one(spans, "StartActivity:sync_invoice", trace_id)
    run_activity = one(spans, "RunActivity:sync_invoice", trace_id)
    # The API's client starts the workflow within the request's span. Temporal's interceptor hangs what the workflow
    # does under the span that started it (RunWorkflow takes no time: a workflow's run outlives any span), and the
    # activity's run under its start.
    assert start.span.parent_span_id == http.span.span_id and start.service == "qbo-sync-api"
    assert run.span.parent_span_id == start.span.span_id and run.service == "qbo-sync-worker"
    assert start_activity.span.parent_span_id == start.span.span_id
    assert run_activity.span.parent_span_id == start_activity.span.span_id
    assert run_activity.service == "qbo-sync-worker"
    assert run.attributes["temporalWorkflowID"] == invoice_workflow_id(account, invoice_id)

    # The trace context travelled in the workflow's `_tracer-data` header, which the payload codec leaves as it is
    # (headers are not encoded): the trace context only, no baggage. Everything else in history is encrypted.
    started = history.events[0].workflow_execution_started_event_attributes
    carrier = json.loads(started.header.fields["_tracer-data"].data)
    assert list(carrier) == ["traceparent"] and carrier["traceparent"].split("-")[1] == trace_id.hex()
    for event in history.events:
        assert CLIENT_EMAIL.encode() not in event.SerializeToString(), event

    # The sign-in was traced too (so what follows looked at it): its routes by template, never with the query.
    names = {found.span.name for found in spans if found.service == "qbo-sync-api"}
    assert {"GET /oauth/quickbooks/start", "GET /oauth/quickbooks/callback"} <= names, sorted(names)
    secrets = [CLIENT_NAME, CLIENT_EMAIL, SERVICE_TOKEN, *browser_queries, *cookies]
    assert len(browser_queries) >= 3 and cookies  # the start link's state; the callback's code and state
    for body in receiver.bodies:
        for secret in secrets:
            assert secret.encode() not in body, secret
    for found in spans:
        for key, value in found.attributes.items():
            assert "?" not in value and not key.startswith("http.request.header."), (found.span.name, key)

"""The Temporal worker: registers every workflow and activity (`python worker.py`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
)
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import temporal_support
from activities.change_sweep import ChangeSweepActivities
from activities.company_check import CompanyCheckActivities
from activities.connection import ConnectionActivities
from activities.disconnect import DisconnectActivities
from activities.events import EventActivities
from activities.health import HealthActivities
from activities.invoice_sync import InvoiceSyncActivities
from activities.notify import PlatformEventActivities
from activities.operator_events import OperatorEventActivities
from activities.quickbooks_access import QuickBooksAccess
from activities.store import StoreActivities
from logging_setup import configure_logging
from models.crypto import TokenCipher
from models.db import (
    SchemaMismatch,
    SessionFactory,
    create_engine,
    create_session_factory,
    libpq_conninfo,
    refuse_mismatched_schema,
)
from observability.metrics import TokenHorizon, loopback_port, serve_worker_metrics
from observability.tracing import WORKER_SERVICE_NAME, start_tracing
from qbo.client import endpoints_for
from qbo.company_budget import company_limiter
from qbo.limits import RealmLimiter
from qbo.oauth import QboOAuth
from settings import Settings, get_settings
from workflows.connection import TOKEN_TASK_QUEUE_SUFFIX, ConnectionWorkflow
from workflows.events import QuickBooksEventsWorkflow
from workflows.invoice import InvoiceWorkflow
from workflows.platform_events import PlatformEventRedeliveryWorkflow

# The exit code of a worker that refuses to start on a schema that is not its code's (uvicorn's for the API).
EXIT_SCHEMA_MISMATCH = 3
# On shutdown, activities under way get this long to finish before they are abandoned (and retried elsewhere).
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


@dataclass
class WorkerResources:
    """What activities are built with; one set per worker process."""

    engine: AsyncEngine
    sessions: SessionFactory
    http: httpx.AsyncClient
    cipher: TokenCipher
    oauth: QboOAuth
    limiter: RealmLimiter


@asynccontextmanager
async def worker_resources(settings: Settings) -> AsyncIterator[WorkerResources]:
    engine = create_engine(settings.database_url)
    http = httpx.AsyncClient(timeout=settings.qbo_request_timeout_seconds)
    endpoints = endpoints_for(settings.qbo_environment, settings.qbo_base_url)
    limiter = company_limiter(
        libpq_conninfo(settings.database_url),
        max_in_flight=settings.qbo_max_in_flight_per_company,
        per_minute=settings.qbo_requests_per_minute_per_company,
    )
    try:
        yield WorkerResources(
            engine=engine,
            sessions=create_session_factory(engine),
            http=http,
            cipher=TokenCipher(settings.token_encryption_key.get_secret_value()),
            oauth=QboOAuth(
                client_id=settings.qbo_client_id,
                client_secret=settings.qbo_client_secret.get_secret_value(),
                redirect_uri=settings.qbo_redirect_uri,
                endpoints=endpoints,
                http=http,
                timeout=settings.qbo_request_timeout_seconds,
            ),
            limiter=limiter,
        )
    finally:
        await limiter.aclose()
        await http.aclose()
        await engine.dispose()


def build_workers(
    client: Client, settings: Settings, resources: WorkerResources, *, max_cached_workflows: int = 1000
) -> list[Worker]:
    """The main worker (workflows, QuickBooks and store activities) and the token worker.

    `max_cached_workflows=0` turns off the sticky cache (every workflow task replays history).
    """
    endpoints = endpoints_for(settings.qbo_environment, settings.qbo_base_url)
    access = QuickBooksAccess(
        sessions=resources.sessions,
        cipher=resources.cipher,
        temporal=client,
        http=resources.http,
        limiter=resources.limiter,
        api_base_url=endpoints.api_base_url,
        minor_version=settings.qbo_minor_version,
        timeout=settings.qbo_request_timeout_seconds,
    )
    invoices = InvoiceSyncActivities(access=access, sessions=resources.sessions)
    events = EventActivities(access=access, sessions=resources.sessions, temporal=client)
    operator_events = OperatorEventActivities(
        sessions=resources.sessions, temporal=client, task_queue=settings.temporal_task_queue
    )
    sweep = ChangeSweepActivities(
        access=access, sessions=resources.sessions, temporal=client, task_queue=settings.temporal_task_queue
    )
    health = HealthActivities(access=access, sessions=resources.sessions)
    company = CompanyCheckActivities(access=access, sessions=resources.sessions)
    disconnect = DisconnectActivities(
        access=access,
        sessions=resources.sessions,
        temporal=client,
        cipher=resources.cipher,
        oauth=resources.oauth,
    )
    store = StoreActivities(resources.sessions)
    platform = PlatformEventActivities(
        http=resources.http,
        sessions=resources.sessions,
        url=settings.platform_events_url,
        secrets=settings.platform_events_secret.get_secret_value(),
    )
    connection = ConnectionActivities(
        sessions=resources.sessions,
        cipher=resources.cipher,
        oauth=resources.oauth,
        temporal=client,
        task_queue=settings.temporal_task_queue,
    )
    main = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_cached_workflows=max_cached_workflows,
        # settings.py says why the sandbox is off by default, and what guards the workflows instead.
        workflow_runner=SandboxedWorkflowRunner()
        if settings.worker_workflow_sandbox
        else UnsandboxedWorkflowRunner(),
        workflows=[
            InvoiceWorkflow,
            ConnectionWorkflow,
            QuickBooksEventsWorkflow,
            PlatformEventRedeliveryWorkflow,
        ],
        activities=[
            invoices.sync_invoice,
            invoices.void_invoice,
            invoices.read_invoice,
            events.process_pending_events,
            health.check_connection,
            company.check_company,
            sweep.sweep_changes,
            disconnect.void_for_disconnect,
            store.record_invoice,
            store.pause_invoice,
            platform.deliver_platform_event,
            platform.redeliver_platform_event,
            operator_events.replay_parked_events,
            operator_events.reprocess_webhook_delivery,
        ],
    )
    tokens = Worker(
        client,
        task_queue=settings.temporal_task_queue + TOKEN_TASK_QUEUE_SUFFIX,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        activities=[
            connection.adopt_grant,
            connection.settle_connecting,
            connection.refresh_tokens,
            connection.record_connection,
            connection.signal_invoices,
            connection.drain_realm_events,
            disconnect.begin_disconnect,
            disconnect.finish_disconnect,
        ],
    )
    return [main, tokens]


async def run_workers(client: Client, settings: Settings, *, horizon: TokenHorizon | None = None) -> None:
    """Run until SIGINT/SIGTERM, then stop polling and let the activities under way finish. `horizon`: the
    token horizon gauge, which reads this worker's database while it runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker_resources(settings) as resources:
        workers = build_workers(client, settings, resources)
        running = [asyncio.create_task(worker.run()) for worker in workers]
        if horizon is not None:
            horizon.attach(loop, resources.sessions)
        await asyncio.wait([*running, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if horizon is not None:
            horizon.detach()
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*running, return_exceptions=True)


def metrics_runtime() -> tuple[Runtime, str]:
    """The SDK's runtime, exporting its metrics on an internal loopback port (and its core's logs to Python's
    logging), and that exporter's URL."""
    address = f"127.0.0.1:{loopback_port()}"
    runtime = Runtime(
        telemetry=TelemetryConfig(
            # The SDK core's own lines go through Python's logging (the same format and filters), not straight
            # to stderr in a format of its own.
            logging=LoggingConfig(
                filter=LoggingConfig.default.filter,
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            ),
            metrics=PrometheusConfig(
                bind_address=address, counters_total_suffix=True, durations_as_seconds=True
            ),
        )
    )
    return runtime, f"http://{address}/metrics"


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("worker")
    await refuse_mismatched_schema(settings.database_url, log=log, wait=True)
    runtime, sdk_metrics_url = metrics_runtime()
    horizon = TokenHorizon()
    metrics_url, _server = serve_worker_metrics(
        settings.worker_metrics_host, settings.worker_metrics_port, sdk_url=sdk_metrics_url, horizon=horizon
    )
    log.info("worker metrics at %s", metrics_url)
    tracing = start_tracing(settings, service_name=WORKER_SERVICE_NAME)
    try:
        client = await temporal_support.connect_when_reachable(
            settings, log=log, runtime=runtime, tracing=tracing
        )
        log.info(
            "worker polling %s on %s (namespace %s)",
            settings.temporal_task_queue,
            settings.temporal_address,
            settings.temporal_namespace,
        )
        await run_workers(client, settings, horizon=horizon)
    finally:
        if tracing is not None:
            # The spans of the last activities are still queued: export them before the process leaves.
            await asyncio.to_thread(tracing.shutdown)


def run_loop() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop where it is installed (not on Windows): libuv's event loop costs the worker less CPU per activity."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    try:
        run_loop()(main())
    except KeyboardInterrupt:
        temporal_support.exit_without_finalizing(130)
    except SchemaMismatch:
        temporal_support.exit_without_finalizing(EXIT_SCHEMA_MISMATCH)  # already logged, in words
    temporal_support.exit_without_finalizing(0)

"""The Temporal worker: registers every workflow and activity (`python worker.py`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker

import temporal_support
from activities.change_sweep import ChangeSweepActivities
from activities.company_check import CompanyCheckActivities
from activities.connection import ConnectionActivities
from activities.disconnect import DisconnectActivities
from activities.events import EventActivities
from activities.health import HealthActivities
from activities.invoice_sync import InvoiceSyncActivities
from activities.notify import PlatformEventActivities
from activities.quickbooks_access import QuickBooksAccess
from activities.store import StoreActivities
from logging_setup import configure_logging
from models.crypto import TokenCipher
from models.db import SessionFactory, create_engine, create_session_factory, libpq_conninfo
from qbo.client import endpoints_for
from qbo.company_budget import company_limiter
from qbo.limits import RealmLimiter
from qbo.oauth import QboOAuth
from settings import Settings, get_settings
from workflows.connection import TOKEN_TASK_QUEUE_SUFFIX, ConnectionWorkflow
from workflows.events import QuickBooksEventsWorkflow
from workflows.invoice import InvoiceWorkflow

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
        url=settings.platform_events_url,
        secret=settings.platform_events_secret.get_secret_value(),
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
        workflows=[InvoiceWorkflow, ConnectionWorkflow, QuickBooksEventsWorkflow],
        activities=[
            invoices.sync_invoice,
            invoices.void_invoice,
            events.process_pending_events,
            health.check_connection,
            company.check_company,
            sweep.sweep_changes,
            disconnect.void_for_disconnect,
            store.record_invoice,
            store.pause_invoice,
            platform.deliver_platform_event,
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


async def run_workers(client: Client, settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then stop polling and let the activities under way finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker_resources(settings) as resources:
        workers = build_workers(client, settings, resources)
        running = [asyncio.create_task(worker.run()) for worker in workers]
        await asyncio.wait([*running, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*running, return_exceptions=True)


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    client = await temporal_support.connect_when_reachable(settings, log=logging.getLogger("worker"))
    logging.getLogger("worker").info(
        "worker polling %s on %s (namespace %s)",
        settings.temporal_task_queue,
        settings.temporal_address,
        settings.temporal_namespace,
    )
    await run_workers(client, settings)


def _exit_without_finalizing(code: int) -> NoReturn:
    """Leave once everything is shut down, without the interpreter's finalization.

    The SDK's Rust runtime keeps threads that may still touch the GIL while CPython finalizes, which aborts the
    process now and then ("Fatal Python error: PyGILState_Release", SIGABRT; temporalio/sdk-python#300, open).
    By then the workers have shut down gracefully and nothing is left to flush but the standard streams.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        _exit_without_finalizing(130)
    _exit_without_finalizing(0)

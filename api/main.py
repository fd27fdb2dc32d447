"""The FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from fastapi import FastAPI
from temporalio.client import Client

import temporal_support
from api.body_limit import RequestBodyLimit
from api.deps import Services
from api.errors import install_error_handlers
from api.openapi import install_openapi, operation_id
from api.relay import Relay
from api.routes import (
    accounts,
    attention,
    company,
    events,
    invoices,
    notifications,
    ops,
    quickbooks,
    webhooks,
)
from api.web import mount_web_app
from logging_setup import RequestContext, configure_logging
from models.bounds import MAX_JSON_BODY_BYTES
from models.crypto import TokenCipher
from models.db import create_engine, create_session_factory, libpq_conninfo, refuse_mismatched_schema
from observability.tracing import API_SERVICE_NAME, start_tracing
from qbo.client import QboEndpoints, endpoints_for
from qbo.companies import CompanyVerifier
from qbo.company_budget import company_limiter
from qbo.oauth import QboOAuth
from settings import Settings, get_settings


def browser_facing_endpoints(settings: Settings) -> QboEndpoints:
    """Intuit's endpoints, with the authorization page where the browser can reach it."""
    endpoints = endpoints_for(settings.qbo_environment, settings.qbo_base_url)
    if settings.qbo_environment == "emulator" and settings.qbo_browser_base_url:
        browser = settings.qbo_browser_base_url.rstrip("/")
        endpoints = dataclasses.replace(endpoints, authorize_url=f"{browser}/connect/oauth2")
    return endpoints


def create_app(settings: Settings | None = None, *, temporal: Client | None = None) -> FastAPI:
    """Build the app. Tests pass their own settings and a client connected to their Temporal server."""
    settings = settings or get_settings()
    # None (nothing set up) unless an OTLP endpoint is configured.
    tracing = start_tracing(settings, service_name=API_SERVICE_NAME)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A schema that is not this code's stops the start (uvicorn exits 3) instead of answering 500s.
        await refuse_mismatched_schema(settings.database_url, log=logging.getLogger("api"), wait=False)
        engine = create_engine(settings.database_url)
        http = httpx.AsyncClient(timeout=settings.qbo_request_timeout_seconds)
        # Lazily: the API starts, stores and acknowledges while Temporal is away; its relay hands over the rest.
        # A call gives up on a Temporal that does not answer within the RPC timeout (the SDK would retry for 10 s):
        # a send, a webhook or a void is answered at once either way.
        client = temporal or await temporal_support.connect(
            settings,
            lazy=True,
            tracing=tracing,
            give_up_after=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
        )
        # The same shared company budget as the workers': the callback's calls count like any other.
        limiter = company_limiter(
            libpq_conninfo(settings.database_url),
            max_in_flight=settings.qbo_max_in_flight_per_company,
            per_minute=settings.qbo_requests_per_minute_per_company,
        )
        app.state.services = Services(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            temporal=client,
            oauth=QboOAuth(
                client_id=settings.qbo_client_id,
                client_secret=settings.qbo_client_secret.get_secret_value(),
                redirect_uri=settings.qbo_redirect_uri,
                endpoints=browser_facing_endpoints(settings),
                http=http,
                timeout=settings.qbo_request_timeout_seconds,
            ),
            cipher=TokenCipher(settings.token_encryption_key.get_secret_value()),
            http=http,
            # The OAuth callback reads the new company's CompanyInfo before it stores anything; those calls count
            # toward the company's limits like any other.
            company_verifier=CompanyVerifier(
                api_base_url=endpoints_for(settings.qbo_environment, settings.qbo_base_url).api_base_url,
                http=http,
                limiter=limiter,
                minor_version=settings.qbo_minor_version,
                timeout=settings.qbo_request_timeout_seconds,
            ),
        )
        app.state.events_teller = webhooks.events_teller(app.state.services)
        app.state.delivery_writer = webhooks.DeliveryWriter(app.state.services)
        app.state.sync_starter = invoices.sync_starter(app.state.services)
        relay = asyncio.create_task(Relay(app.state.services).run())
        try:
            yield
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await app.state.sync_starter.aclose()
            await app.state.events_teller.aclose()
            await limiter.aclose()
            await http.aclose()
            await engine.dispose()
            if tracing is not None:
                # The last requests' spans are still queued; the export blocks, so off the event loop.
                await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(
        title="qbo-sync",
        version="1.0.0",
        description="Keeps an invoicing platform's invoices in step with each user's QuickBooks Online company.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.add_middleware(
        RequestBodyLimit,
        default_limit=MAX_JSON_BODY_BYTES,
        # Intuit's webhook enforces WEBHOOK_MAX_BODY_BYTES itself.
        limits={"/webhooks/": None},
    )
    install_error_handlers(app)
    install_openapi(app)
    # Outermost: every line logged while a request is handled names its route's ids.
    app.add_middleware(RequestContext)
    for module in (accounts, quickbooks, company, invoices, notifications, events, attention, webhooks, ops):
        app.include_router(module.router)
    mount_web_app(app)
    if tracing is not None:
        tracing.instrument(app)
    return app


def _app_from_environment() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


app = _app_from_environment()

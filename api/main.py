"""The FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from temporalio.client import Client

import temporal_support
from api.body_limit import RequestBodyLimit
from api.deps import Services
from api.errors import install_error_handlers
from api.relay import Relay
from api.routes import accounts, company, invoices, notifications, ops, quickbooks, webhooks
from logging_setup import configure_logging
from models.bounds import MAX_JSON_BODY_BYTES
from models.crypto import TokenCipher
from models.db import create_engine, create_session_factory, libpq_conninfo
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        http = httpx.AsyncClient(timeout=settings.qbo_request_timeout_seconds)
        # Lazily: the API starts, stores and acknowledges while Temporal is away; its relay hands over the rest.
        client = temporal or await temporal_support.connect(settings, lazy=True)
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
        relay = asyncio.create_task(Relay(app.state.services).run())
        try:
            yield
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await limiter.aclose()
            await http.aclose()
            await engine.dispose()

    app = FastAPI(
        title="qbo-sync",
        version="1.0.0",
        description="Keeps an invoicing platform's invoices in step with each user's QuickBooks Online company.",
        lifespan=lifespan,
    )
    app.add_middleware(
        RequestBodyLimit,
        default_limit=MAX_JSON_BODY_BYTES,
        # Intuit's webhook enforces WEBHOOK_MAX_BODY_BYTES itself.
        limits={"/webhooks/": None},
    )
    install_error_handlers(app)
    for module in (accounts, quickbooks, company, invoices, notifications, webhooks, ops):
        app.include_router(module.router)
    return app


def _app_from_environment() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


app = _app_from_environment()

"""Builds the emulator's ASGI application from an EmulatorConfig."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from emulator import admin, api, oauth
from emulator.config import EmulatorConfig
from emulator.context import Emulator
from emulator.gateway import Gateway


def create_app(config: EmulatorConfig) -> FastAPI:
    emulator = Emulator(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await emulator.start()
        try:
            yield
        finally:
            await emulator.stop()

    app = FastAPI(
        title="QuickBooks Online emulator",
        description="Intuit OAuth 2.0, Accounting API v3 and webhooks, for local development and tests.",
        lifespan=lifespan,
        docs_url="/__admin/docs",
        openapi_url="/__admin/openapi.json",
        redoc_url=None,
    )
    app.state.emulator = emulator
    app.include_router(admin.router(emulator))
    app.include_router(oauth.router(emulator))
    app.include_router(api.router(emulator))
    app.add_middleware(Gateway, emulator=emulator)
    return app

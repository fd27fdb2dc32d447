"""A whole engine for end-to-end tests: the real API over HTTP, real workers, a real Temporal server and database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from models.db import SessionFactory
from settings import Settings
from tests.qbo_access import SEED_REDIRECT_URI
from tests.support import ROOT, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_VERIFIER_TOKEN, Emulator, free_port
from worker import WorkerResources, build_workers, worker_resources

SERVICE_TOKEN = "test-service-token"


def engine_settings(
    *, database_url: str, emulator: Emulator, api_url: str, task_queue: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "database_url": database_url,
        "temporal_task_queue": task_queue,
        "api_token": SERVICE_TOKEN,
        "api_public_url": api_url,
        "qbo_environment": "emulator",
        "qbo_base_url": emulator.base_url,
        "qbo_client_id": TEST_CLIENT_ID,
        "qbo_client_secret": TEST_CLIENT_SECRET,
        "qbo_redirect_uri": f"{api_url}/oauth/quickbooks/callback",
        "qbo_webhook_verifier_token": TEST_VERIFIER_TOKEN,
        "qbo_request_timeout_seconds": 10.0,
        "platform_return_url": "http://platform.test/settings/integrations",
        # Generous: a machine loaded by the whole suite may take a while to adopt; tests of `connecting` lower it.
        "oauth_adoption_wait_seconds": 30.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Engine:
    """One running engine: call its API, look into QuickBooks (the emulator) and Temporal."""

    settings: Settings
    api_url: str
    api: httpx.AsyncClient
    temporal: Client
    env: WorkflowEnvironment
    emulator: Emulator
    resources: WorkerResources
    workers: list[Worker] = field(default_factory=list)
    worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # The API's application (its `state.services` holds the API process's database engine and clients).
    app: FastAPI | None = None

    def api_connections_in_use(self) -> int:
        """PostgreSQL (or SQLite) connections the API process has checked out of its pool right now."""
        assert self.app is not None
        pool = self.app.state.services.engine.pool
        return int(pool.checkedout())

    def start_workers(self, *, sticky: bool = True) -> None:
        """Start the workers. Without the sticky cache, a restart never waits on a dead worker's sticky queue
        (which the time-skipping server waits out in virtual time, so forever)."""
        self.workers = build_workers(
            self.temporal, self.settings, self.resources, max_cached_workflows=1000 if sticky else 0
        )
        self.worker_tasks = [asyncio.create_task(worker.run()) for worker in self.workers]

    async def stop_workers(self) -> None:
        for worker in self.workers:
            await worker.shutdown()
        for task in self.worker_tasks:
            with contextlib.suppress(Exception):
                await task
        self.workers, self.worker_tasks = [], []

    @property
    def sessions(self) -> SessionFactory:
        return self.resources.sessions

    async def create_account(
        self, account_id: str | None = None, plan: str = "premium", addon: bool = False
    ) -> str:
        account_id = account_id or f"acct-{uuid.uuid4().hex[:10]}"
        response = await self.api.put(
            f"/v1/accounts/{account_id}", json={"plan": plan, "quickbooks_addon": addon}
        )
        response.raise_for_status()
        return account_id

    async def authorize(self, account_id: str, realm_id: str) -> httpx.Response:
        """What a user does: Connect QuickBooks, Authorize on Intuit's page, land on the callback."""
        async with httpx.AsyncClient(timeout=30) as browser:
            callback_url = await self.consent(account_id, realm_id, browser)
            return await browser.get(callback_url, follow_redirects=False)

    async def consent(self, account_id: str, realm_id: str, browser: httpx.AsyncClient) -> str:
        """Connect QuickBooks and Authorize on Intuit's page in `browser`: the callback URL Intuit sends it to.

        The platform redirects the browser to the start link, which sets the flow's cookie in `browser` and sends
        it on to Intuit's page; the emulator's admin route plays the user's click on Authorize."""
        started = await self.api.post(f"/v1/accounts/{account_id}/quickbooks/connect")
        started.raise_for_status()
        opened = await browser.get(started.json()["authorization_url"], follow_redirects=False)
        assert opened.status_code == 303, opened.text
        query = parse_qs(urlsplit(opened.headers["location"]).query)
        consent = await self.emulator.admin.post(
            f"/__admin/companies/{realm_id}/authorize",
            json={
                "client_id": query["client_id"][0],
                "redirect_uri": query["redirect_uri"][0],
                "state": query["state"][0],
                "scope": query["scope"][0],
            },
        )
        consent.raise_for_status()
        redirect_url: str = consent.json()["redirect_url"]
        return redirect_url

    async def connect(self, account_id: str, realm_id: str | None = None) -> str:
        """Connect the account to a (new) emulator company and wait until the connection is usable."""
        realm_id = realm_id or await self.emulator.create_company()
        callback = await self.authorize(account_id, realm_id)
        location = callback.headers.get("location", "")
        assert "quickbooks=connected" in location, location
        await self.wait_for(
            lambda: self.connection_status(account_id), lambda body: body["status"] == "connected"
        )
        return realm_id

    async def connection_status(self, account_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/accounts/{account_id}/quickbooks/connection")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def send_invoice(self, account_id: str, invoice_id: str, **snapshot: Any) -> httpx.Response:
        return await self.api.post(
            f"/v1/accounts/{account_id}/invoices/{invoice_id}/send", json=invoice_payload(**snapshot)
        )

    async def invoice(self, account_id: str, invoice_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/accounts/{account_id}/invoices/{invoice_id}")
        response.raise_for_status()
        invoice: dict[str, Any] = response.json()
        return invoice

    async def timeline(self, account_id: str, invoice_id: str) -> list[str]:
        response = await self.api.get(f"/v1/accounts/{account_id}/invoices/{invoice_id}/timeline")
        response.raise_for_status()
        return [entry["message"] for entry in response.json()["entries"]]

    async def wait_for_invoice(
        self, account_id: str, invoice_id: str, *statuses: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        invoice: dict[str, Any] = await self.wait_for(
            lambda: self.invoice(account_id, invoice_id),
            lambda body: body["status"] in statuses,
            timeout=timeout,
        )
        return invoice

    async def wait_for(
        self,
        read: Callable[[], Awaitable[Any]],
        done: Callable[[Any], bool],
        *,
        timeout: float = 30.0,
        skip_time: bool = False,
    ) -> Any:
        """Poll until `done(read())`; on a time-skipping server, time may be skipped between polls."""
        deadline = time.monotonic() + timeout
        value = await read()
        while not done(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; last value: {value!r}")
            if skip_time:
                await self.env.sleep(30)
            await asyncio.sleep(0.1)
            value = await read()
        return value

    async def skip_time(self, total: timedelta, *, step: timedelta = timedelta(hours=1)) -> None:
        """Skip time on the time-skipping server in steps (one long skip can outlast the RPC deadline)."""
        left = total
        while left > timedelta(0):
            await self.env.sleep(min(step, left))
            left -= step

    async def qbo_invoices(self, realm_id: str) -> list[dict[str, Any]]:
        company = await self.emulator.company(realm_id)
        invoices: list[dict[str, Any]] = company["invoices"]
        return invoices

    async def wait_for_catch_up_sweep(self, realm_id: str, timeout: float = 30.0) -> None:
        """Wait for the change sweep a connection runs right after adopting its authorization.

        Tests that count a sync's QuickBooks calls per company wait for it first: otherwise the sweep may run in
        the middle of what they count (and, once invoices exist, read them back with a query)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if any("/cdc" in str(request["path"]) for request in await self.qbo_requests(realm_id)):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the connection of company {realm_id} ran no change sweep within {timeout} s")

    async def wait_for_webhooks_delivered(self, timeout: float = 120.0) -> None:
        """Wait until the emulator has no webhook batching or queued (it delivers one at a time, in order).

        A test that then changes one thing in QuickBooks waits for that one webhook, not for it to come out
        behind the hundreds of creates a bulk set-up announced."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            state = (await self.emulator.admin.get("/__admin/webhooks", params={"since_seq": 2**62})).json()
            if not (state["queued_deliveries"] or state["batching_events"] or state["held_for_reorder"]):
                return
            await asyncio.sleep(0.2)
        log = (await self.emulator.admin.get("/__admin/webhooks")).json()["deliveries"]
        failed = [entry for entry in log if entry.get("error") or (entry.get("status") or 200) >= 300]
        raise AssertionError(
            f"the emulator's webhooks were not all delivered within {timeout} s: {state}; {len(log)} attempts, "
            f"{len(failed)} failed, the last failures: {[(e['attempt'], e['status'], e['error']) for e in failed[-5:]]}"
        )

    async def qbo_requests(self, realm_id: str | None = None, since_seq: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since_seq": since_seq}
        if realm_id:
            params["realm_id"] = realm_id
        response = await self.emulator.admin.get("/__admin/requests", params=params)
        response.raise_for_status()
        body = response.json()
        requests: list[dict[str, Any]] = body["requests"] if isinstance(body, dict) else body
        return requests


def start_worker_process(engine: Engine, **extra_env: str) -> subprocess.Popen[bytes]:
    """`python worker.py`, configured only through the environment, as in production."""
    settings = engine.settings
    environment: dict[str, Any] = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": engine.temporal.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": engine.temporal.namespace,
        "TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "QBO_ENVIRONMENT": "emulator",
        "QBO_BASE_URL": settings.qbo_base_url,
        "QBO_CLIENT_ID": settings.qbo_client_id,
        "QBO_CLIENT_SECRET": settings.qbo_client_secret.get_secret_value(),
        "QBO_REDIRECT_URI": settings.qbo_redirect_uri,
        "QBO_REQUEST_TIMEOUT_SECONDS": "30",
        "LOG_LEVEL": "WARNING",
        # Several workers on one host: each serves its metrics on a free port.
        "WORKER_METRICS_PORT": "0",
        **extra_env,
    }
    return subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=environment)


@contextlib.contextmanager
def worker_processes(engine: Engine, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` worker processes (`python worker.py`), stopped (SIGTERM, then SIGKILL) when the block ends."""
    workers = [start_worker_process(engine) for _ in range(count)]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def invoice_payload(
    *,
    number: str = "INV-1001",
    client_name: str = "Ada Lovelace",
    client_email: str = "ada@example.com",
    currency: str = "USD",
    issue_date: str = "2026-11-24",
    due_date: str = "2026-12-24",
    lines: list[dict[str, Any]] | None = None,
    total_tax_cents: int | None = None,
) -> dict[str, Any]:
    extra = {} if total_tax_cents is None else {"total_tax_cents": total_tax_cents}
    return {
        **extra,
        "number": number,
        "client": {"name": client_name, "email": client_email},
        "currency": currency,
        "issue_date": issue_date,
        "due_date": due_date,
        "lines": lines
        if lines is not None
        else [
            {"description": "Architecture review", "quantity": "1.5", "unit_price_cents": 12000},
            {"description": "Travel", "quantity": "1", "unit_price_cents": 4550},
        ],
    }


@contextlib.asynccontextmanager
async def running_engine(
    *,
    env: WorkflowEnvironment,
    database_url: str,
    emulator: Emulator,
    task_queue: str,
    with_worker: bool = True,
    sticky_workers: bool = True,
    webhook_format: str = "classic",
    api_connects_itself: bool = False,
    return_to_app: bool = False,
    **overrides: Any,
) -> AsyncIterator[Engine]:
    """Start the API (uvicorn on a free port) and, unless told not to, the workers; stop both afterwards.

    The API uses `env`'s client, unless `api_connects_itself`: then it connects (lazily) to TEMPORAL_ADDRESS as
    in production, and lives through that server going away and coming back. `return_to_app` makes the web app
    (`/app/` on this API) the platform's return URL, as `make run` does."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    if return_to_app:
        overrides["platform_return_url"] = f"{api_url}/app/"
    settings = engine_settings(
        database_url=database_url, emulator=emulator, api_url=api_url, task_queue=task_queue, **overrides
    )
    # Faults another test left unused must not leak into this one.
    (await emulator.admin.delete("/__admin/faults")).raise_for_status()
    # Nor webhooks still queued for another test's API, now gone: the emulator delivers one at a time, in order,
    # and one waiting out its redelivery backoff (up to 300 s on Intuit's schedule) would hold this test's
    # webhooks behind it.
    (await emulator.admin.delete("/__admin/webhooks")).raise_for_status()
    # Intuit's webhooks go to this engine's API, and its callback is a registered redirect URI.
    configured = await emulator.admin.put(
        "/__admin/config",
        json={
            "webhook_url": f"{api_url}/webhooks/quickbooks",
            "webhook_format": webhook_format,
            "redirect_uris": [settings.qbo_redirect_uri, SEED_REDIRECT_URI],
            # Intuit's retry schedule for a webhook not acknowledged within 3 s (10, 20, 30, then 300 s), ten
            # times faster: on a loaded machine, a test API sharing its event loop with the test's own requests can
            # be that slow, and a redelivery must not outlast the test's patience. Nothing else of it changes.
            "webhook_retry_scale": 0.1,
        },
    )
    configured.raise_for_status()
    app = create_app(settings, temporal=None if api_connects_itself else env.client)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    async with worker_resources(settings) as resources:
        engine = Engine(
            settings=settings,
            api_url=api_url,
            api=httpx.AsyncClient(
                base_url=api_url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=30
            ),
            temporal=env.client,
            env=env,
            emulator=emulator,
            resources=resources,
            app=app,
        )
        if with_worker:
            engine.start_workers(sticky=sticky_workers)
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.02)
            yield engine
        finally:
            await engine.api.aclose()
            await engine.stop_workers()
            server.should_exit = True
            await serving

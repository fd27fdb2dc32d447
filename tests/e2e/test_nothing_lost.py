"""Nothing acknowledged is forgotten because of timing: connecting then sending at once, a worker down during the
callback, Temporal going away and coming back, the API starting while Temporal is away, a second send of an
invoice whose first start failed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import temporalio.client
from temporalio.testing import WorkflowEnvironment

from api.routes.invoices import start_invoice_syncs, sync_starter
from models.tables import InvoiceSync, QuickBooksConnection
from tests.conftest import EngineFactory
from tests.e2e.test_connect import consent_page, outcome
from tests.e2e.test_payments_and_webhooks import pay
from tests.engine import Engine, invoice_payload, running_engine
from tests.support import Emulator, free_port, start_dev_server
from workflows.ids import connection_workflow_id, invoice_workflow_id

# The relay of the engines below looks every half second, for things half a second old.
QUICK_RELAY: dict[str, Any] = {
    "relay_interval_seconds": 0.5,
    "relay_grace_seconds": 0.5,
    "temporal_rpc_timeout_seconds": 2.0,
}


async def connect_in_a_browser(engine: Engine, account: str, browser: httpx.AsyncClient) -> dict[str, str]:
    """What a user does, on Intuit's own consent page: where the browser lands back on the platform."""
    fields = await consent_page(engine, account, browser)
    consented = await browser.post(
        f"{engine.emulator.base_url}/connect/oauth2",
        data={**fields, "user_email": "owner@example.com", "realm_id": "new", "action": "authorize"},
    )
    return outcome(await browser.get(consented.headers["location"]))


async def send_three_at_once(engine: Engine, account: str) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(
                engine.send_invoice(account, f"inv-{n}", number=f"NOW-{n}", client_email=f"c{n}@example.com")
                for n in range(3)
            )
        )
    )


async def test_connecting_then_sending_at_once_syncs_every_invoice(engine: Engine) -> None:
    # A new user: Connect QuickBooks, Authorize on Intuit's page, back on the platform, send three invoices.
    account = await engine.create_account()
    async with httpx.AsyncClient(timeout=30) as browser:
        landed = await connect_in_a_browser(engine, account, browser)
    assert landed["quickbooks"] == "connected"
    # Read-your-writes: the moment the browser is back, the connection reads connected, with its company.
    status = await engine.connection_status(account)
    assert status["status"] == "connected"
    assert status["realm_id"] == landed["realm_id"] and status["company_name"] and status["connected_at"]
    for sent in await send_three_at_once(engine, account):
        assert sent.status_code == 202, sent.text
        assert sent.json()["invoice"]["status"] == "pending"
    for n in range(3):
        await engine.wait_for_invoice(account, f"inv-{n}", "synced")
    assert len(await engine.qbo_invoices(landed["realm_id"])) == 3


async def test_a_worker_down_during_the_callback_never_loses_the_invoices_sent_meanwhile(
    engine_with: EngineFactory,
) -> None:
    engine = await engine_with(oauth_adoption_wait_seconds=1)
    account = await engine.create_account()
    await engine.stop_workers()
    async with httpx.AsyncClient(timeout=30) as browser:
        landed = await connect_in_a_browser(engine, account, browser)
    # Not told "connected" before it is true, and the platform can see what is going on.
    assert landed["quickbooks"] == "connecting"
    status = await engine.connection_status(account)
    assert (status["status"], status["realm_id"]) == ("connecting", landed["realm_id"])
    for sent in await send_three_at_once(engine, account):
        assert sent.json()["invoice"]["status"] == "pending", sent.text

    engine.start_workers(sticky=False)
    await engine.wait_for(lambda: engine.connection_status(account), lambda s: s["status"] == "connected")
    for n in range(3):
        await engine.wait_for_invoice(account, f"inv-{n}", "synced")


@dataclass
class RestartableTemporal:
    """A dev server of the test's own on a fixed port, kept in a file, that the test can stop and start again."""

    port: int
    db_file: str
    env: WorkflowEnvironment | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> WorkflowEnvironment:
        self.env = await start_dev_server(port=self.port, db_file=self.db_file)
        return self.env

    async def stop(self) -> None:
        assert self.env is not None
        await self.env.shutdown()


@pytest.fixture
async def restartable_temporal() -> AsyncIterator[RestartableTemporal]:
    with tempfile.TemporaryDirectory() as folder:
        temporal = RestartableTemporal(port=free_port(), db_file=str(Path(folder) / "temporal.db"))
        await temporal.start()
        try:
            yield temporal
        finally:
            await temporal.stop()


async def quick(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def test_everything_stored_while_temporal_is_away_is_processed_when_it_is_back(
    restartable_temporal: RestartableTemporal, migrated_database: str, emulator: Emulator, task_queue: str
) -> None:
    temporal = restartable_temporal
    assert temporal.env is not None
    async with running_engine(
        env=temporal.env, database_url=migrated_database, emulator=emulator, task_queue=task_queue,
        api_connects_itself=True, temporal_address=temporal.address, **QUICK_RELAY,
    ) as engine:  # fmt: skip
        account = await engine.create_account()
        realm = await engine.connect(account)
        for invoice_id in ("paid-later", "void-me"):
            await engine.send_invoice(account, invoice_id, number=f"T-{invoice_id}")
        paid_later = await engine.wait_for_invoice(account, "paid-later", "synced")
        await engine.wait_for_invoice(account, "void-me", "synced")

        await temporal.stop()
        # An invoice sent meanwhile is accepted and kept, answered within a few seconds...
        first_body = invoice_payload(number="T-away", lines=[{"description": "First", "quantity": "1",
                                                              "unit_price_cents": 10_000}])  # fmt: skip
        sent, took = await quick(
            engine.api.post(f"/v1/accounts/{account}/invoices/away/send", json=first_body)
        )
        assert sent.status_code == 202, sent.text
        # (within its RPC timeout, 2 s here, and the send's own work: not the SDK's 10 s of retries)
        assert sent.json()["invoice"]["status"] == "pending" and took < 5, took
        # ...and sending it again with another body changes nothing: the first one is what syncs, and it says so.
        second_body = {
            **first_body,
            "lines": [{"description": "Second", "quantity": "1", "unit_price_cents": 1}],
        }
        again = await engine.api.post(f"/v1/accounts/{account}/invoices/away/send", json=second_body)
        assert again.json()["duplicate"] is True and again.json()["body_differs"] is True
        assert again.json()["invoice"]["total_cents"] == 10_000
        # Intuit's webhook for a payment made meanwhile is stored and acknowledged.
        deliveries_before = len((await engine.emulator.admin.get("/__admin/webhooks")).json()["deliveries"])
        await pay(engine, realm, paid_later["quickbooks"]["invoice_id"], "225.50")

        async def acknowledged() -> list[Any]:
            deliveries = (await engine.emulator.admin.get("/__admin/webhooks")).json()["deliveries"]
            return [d for d in deliveries[deliveries_before:] if d["status"] == 200]

        await engine.wait_for(acknowledged, bool)
        # What needs a workflow says so at once (503 with Retry-After), never hangs.
        voided, took = await quick(engine.api.post(f"/v1/accounts/{account}/invoices/void-me/void"))
        assert voided.status_code == 503 and voided.json()["error"]["code"] == "temporarily_unavailable"
        assert voided.headers["retry-after"] and took < 10

        await temporal.start()
        away = await engine.wait_for_invoice(account, "away", "synced", timeout=60)
        (in_quickbooks,) = [i for i in await engine.qbo_invoices(realm) if i["DocNumber"] == "T-away"]
        assert in_quickbooks["TotalAmt"] == 100.0 and away["total_cents"] == 10_000
        await engine.wait_for_invoice(account, "paid-later", "paid", timeout=60)


async def test_the_api_starts_and_keeps_what_it_is_sent_while_temporal_is_down(
    restartable_temporal: RestartableTemporal, migrated_database: str, emulator: Emulator, task_queue: str
) -> None:
    temporal = restartable_temporal
    assert temporal.env is not None
    await temporal.stop()
    async with running_engine(
        env=temporal.env, database_url=migrated_database, emulator=emulator, task_queue=task_queue,
        with_worker=False, api_connects_itself=True, temporal_address=temporal.address, **QUICK_RELAY,
    ) as engine:  # fmt: skip
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(f"{engine.api_url}/healthz")).status_code == 200
            assert (await http.get(f"{engine.api_url}/readyz")).status_code == 503
        account = await engine.create_account()
        # Marked connecting as a callback would leave it, so that the send is accepted for syncing.
        async with engine.sessions() as session:
            session.add(QuickBooksConnection(account_id=account, status="connecting"))
            await session.commit()
        sent = await engine.send_invoice(account, "inv-1")
        assert sent.status_code == 202 and sent.json()["invoice"]["status"] == "pending", sent.text

        env = await temporal.start()
        handle = env.client.get_workflow_handle(invoice_workflow_id(account, "inv-1"))

        async def started() -> bool:
            try:
                await handle.describe()
            except Exception:
                return False
            return True

        await engine.wait_for(started, bool, timeout=30)


async def test_void_and_disconnect_answer_at_once_when_no_worker_runs(engine_with: EngineFactory) -> None:
    engine = await engine_with(temporal_rpc_timeout_seconds=2)
    account = await engine.create_account()
    await engine.connect(account)
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for_invoice(account, "inv-1", "synced")
    await engine.stop_workers()

    voided, took = await quick(engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void"))
    assert voided.status_code == 503, voided.text
    assert voided.json()["error"]["code"] == "temporarily_unavailable" and voided.headers["retry-after"]
    assert took < 8
    disconnected, took = await quick(
        engine.api.post(f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_only"})
    )
    assert disconnected.status_code == 503, disconnected.text
    assert took < 8


class _StartsHeld(temporalio.client.Interceptor):
    """Temporal holding every workflow start until `release` is set (a slow or saturated server): the client and
    the server are real, only the start waits."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held = 0

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        outer = self

        class Holding(temporalio.client.OutboundInterceptor):
            async def start_workflow(self, input: temporalio.client.StartWorkflowInput) -> Any:
                outer.held += 1
                await outer.release.wait()
                return await super().start_workflow(input)

        return Holding(next)


@contextlib.asynccontextmanager
async def starts_held(engine: Engine, *, requests_too: bool) -> AsyncIterator[_StartsHeld]:
    """The API's starter (and, `requests_too`, every route) starting workflows through a client whose starts wait
    until the holder's `release`; the shipped ones back afterwards."""
    assert engine.app is not None
    state = engine.app.state
    holder = _StartsHeld()
    holding = temporalio.client.Client(
        engine.temporal.service_client,
        namespace=engine.temporal.namespace,
        data_converter=engine.temporal.data_converter,
        interceptors=[holder],
    )
    shipped_services, shipped_starter = state.services, state.sync_starter
    held_services = dataclasses.replace(shipped_services, temporal=holding)
    if requests_too:
        state.services = held_services
    state.sync_starter = sync_starter(held_services)
    try:
        yield holder
    finally:
        holder.release.set()
        await state.sync_starter.aclose()
        state.services, state.sync_starter = shipped_services, shipped_starter


async def test_a_send_is_answered_without_waiting_for_temporal(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    # Every start of the API (the request's own, had it one, and its starter's) waits on Temporal.
    async with starts_held(engine, requests_too=True) as holder:
        sent = await asyncio.wait_for(engine.send_invoice(account, "inv-1"), timeout=10)
        assert sent.status_code == 202 and sent.json()["invoice"]["status"] == "pending", sent.text
        await engine.wait_for(lambda: asyncio.sleep(0, holder.held), bool, timeout=10)
    # Once Temporal takes the start, the invoice syncs as any other.
    await engine.wait_for_invoice(account, "inv-1", "synced")
    async with engine.sessions() as session:
        row = await session.get(InvoiceSync, (account, "inv-1"))
        assert row is not None and row.workflow_started_at is not None


async def test_an_invoice_voided_before_its_sync_started_is_voided(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    # The starter's start waits (Temporal slow); the void's own request reaches Temporal at once.
    async with starts_held(engine, requests_too=False) as holder:
        sent = await engine.send_invoice(account, "inv-1")
        assert sent.status_code == 202, sent.text
        await engine.wait_for(lambda: asyncio.sleep(0, holder.held), bool, timeout=10)
        voided = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void")
        assert voided.status_code == 202, voided.text
        await engine.wait_for_invoice(account, "inv-1", "voided")


async def test_a_disconnect_reaches_an_invoice_whose_sync_is_still_to_start(engine: Engine) -> None:
    # Sent, then Disconnect only before the API's starter got to the invoice (Temporal slow): the disconnect must
    # not miss it, or it would wait paused and sync into whatever company is connected next.
    account = await engine.create_account()
    realm = await engine.connect(account)
    async with starts_held(engine, requests_too=False) as holder:
        sent = await engine.send_invoice(account, "inv-1")
        assert sent.status_code == 202, sent.text
        await engine.wait_for(lambda: asyncio.sleep(0, holder.held), bool, timeout=10)
        told_before = await _invoices_told(engine, account)
        disconnecting = await engine.api.post(
            f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_only"}
        )
        assert disconnecting.status_code == 202, disconnecting.text
        # The connection workflow has told the account's open invoices (the fan-out is over) before the start.
        await engine.wait_for(
            lambda: _invoices_told(engine, account), lambda told: told > told_before, timeout=60
        )
    await engine.wait_for_invoice(account, "inv-1", "disconnected")
    assert await engine.qbo_invoices(realm) == []


async def _invoices_told(engine: Engine, account: str) -> int:
    """How many times the account's connection workflow has finished telling its invoices of a change."""
    history = await engine.temporal.get_workflow_handle(connection_workflow_id(account)).fetch_history()
    telling = {
        event.event_id
        for event in history.events
        if event.activity_task_scheduled_event_attributes.activity_type.name == "signal_invoices"
    }
    return sum(
        1
        for event in history.events
        if event.HasField("activity_task_completed_event_attributes")
        and event.activity_task_completed_event_attributes.scheduled_event_id in telling
    )


async def test_an_invoice_the_starter_cannot_read_costs_only_itself(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    assert engine.app is not None
    async with starts_held(engine, requests_too=False) as holder:
        for number, invoice_id in enumerate(("inv-good", "inv-unreadable")):
            sent = await engine.send_invoice(account, invoice_id, number=f"GOOD-{number}")
            assert sent.status_code == 202, sent.text
        # The starter's round holds the first; the second waits for the next round.
        await engine.wait_for(lambda: asyncio.sleep(0, holder.held), bool, timeout=10)
        async with engine.sessions() as session:
            unreadable = await session.get(InvoiceSync, (account, "inv-unreadable"))
            assert unreadable is not None
            unreadable.snapshot = '{"number": "a body this code cannot read"}'
            session.add(unreadable)
            await session.commit()
        started = await start_invoice_syncs(
            engine.app.state.services, [(account, "inv-unreadable"), (account, "inv-good")]
        )
        assert started == 1
    await engine.wait_for_invoice(account, "inv-good", "synced")
    async with engine.sessions() as session:
        kept = await session.get(InvoiceSync, (account, "inv-unreadable"))
        assert (
            kept is not None and kept.workflow_started_at is None
        )  # left for the relay, which logs it again

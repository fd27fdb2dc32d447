"""Failed syncs: automatic retries, the notification and manual retry, throttling, and no duplicates ever."""

from __future__ import annotations

import asyncio
import signal

from temporalio.testing import WorkflowEnvironment

from tests.e2e.test_invoice_sync import api_calls
from tests.e2e.test_payments_and_webhooks import fault
from tests.engine import Engine, running_engine, start_worker_process
from tests.support import Emulator
from workflows.ids import invoice_workflow_id
from workflows.messages import RetrySyncRequest


async def invoice_creates(engine: Engine, realm: str) -> int:
    return api_calls(await engine.qbo_requests(realm)).count("POST /invoice")


async def server_error_on_create(engine: Engine, count: int) -> None:
    await fault(engine, count=count, method="POST", path_contains="/invoice", status=503, fault_code="10000",
                fault_type="SystemFault", message="An application error has occurred")  # fmt: skip


async def test_a_transient_failure_is_retried_without_bothering_the_user(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await server_error_on_create(engine, count=2)
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for(
        lambda: engine.invoice(account, "inv-1"), lambda body: body["status"] == "synced", skip_time=True
    )
    assert synced["notification"] is None
    assert await invoice_creates(engine, realm) == 3
    assert len(await engine.qbo_invoices(realm)) == 1


async def test_third_failed_retry_notifies_and_waits_for_manual_retry(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await server_error_on_create(engine, count=4)
    await engine.send_invoice(account, "inv-1", number="INV-42")

    failed = await engine.wait_for(
        lambda: engine.invoice(account, "inv-1"), lambda body: body["status"] == "failed", skip_time=True
    )
    # The first attempt plus exactly three retries, then a notification a person can act on.
    assert await invoice_creates(engine, realm) == 4
    assert failed["notification"]["kind"] == "sync_failed"
    assert failed["notification"]["action"] == "retry"
    assert "INV-42 could not be synced to QuickBooks" in failed["notification"]["message"]
    assert "Traceback" not in failed["last_error"]
    notifications = (await engine.api.get(f"/v1/accounts/{account}/notifications")).json()["notifications"]
    assert [n["kind"] for n in notifications] == ["sync_failed"]

    # Nothing more happens on its own.
    await engine.env.sleep(3600)
    assert (await engine.invoice(account, "inv-1"))["status"] == "failed"
    assert await invoice_creates(engine, realm) == 4

    retried = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/quickbooks/retry")
    assert retried.status_code == 202
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    assert synced["notification"] is None and synced["last_error"] is None
    assert (await engine.api.get(f"/v1/accounts/{account}/notifications")).json()["notifications"] == []
    assert len(await engine.qbo_invoices(realm)) == 1
    timeline = await engine.timeline(account, "inv-1")
    assert "Manual retry of the QuickBooks sync requested." in timeline
    assert timeline[-1] == "Synced to QuickBooks as invoice INV-42."


async def test_operators_retry_from_temporal_with_the_same_signal(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    await engine.connect(account)
    await server_error_on_create(engine, count=4)
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for(
        lambda: engine.invoice(account, "inv-1"), lambda b: b["status"] == "failed", skip_time=True
    )
    handle = engine.temporal.get_workflow_handle(invoice_workflow_id(account, "inv-1"))
    await handle.signal("retry_sync", RetrySyncRequest(requested_by="operator"))
    await engine.wait_for_invoice(account, "inv-1", "synced")


async def test_validation_faults_fail_at_once_without_retries(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await fault(engine, count=1, method="POST", path_contains="/invoice", status=400, fault_code="6000",
                fault_type="ValidationFault", message="A business validation error has occurred")  # fmt: skip
    await engine.send_invoice(account, "inv-1")
    failed = await engine.wait_for_invoice(account, "inv-1", "failed")
    assert failed["last_error"].startswith("QuickBooks rejected the invoice")
    assert await invoice_creates(engine, realm) == 1
    retried = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/quickbooks/retry")
    assert retried.status_code == 202
    await engine.wait_for_invoice(account, "inv-1", "synced")


async def test_throttling_is_waited_out_and_never_counts_as_a_failure(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await fault(engine, count=6, method="POST", path_contains="/invoice", status=429)
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced", timeout=120)
    assert synced["notification"] is None
    assert await invoice_creates(engine, realm) == 7
    statuses = [
        r["status"]
        for r in await engine.qbo_requests(realm)
        if r["method"] == "POST" and "/invoice" in r["path"]
    ]
    assert statuses.count(429) == 6


async def test_a_lost_create_response_never_duplicates_the_invoice(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    # QuickBooks creates the invoice, but the answer is an error: the outcome looks unknown to us.
    await fault(engine, count=1, method="POST", path_contains="/invoice", status=502, apply="after")
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for(
        lambda: engine.invoice(account, "inv-1"), lambda b: b["status"] == "synced", skip_time=True
    )
    assert len(await engine.qbo_invoices(realm)) == 1


async def test_a_worker_killed_during_the_create_call_leaves_no_duplicate(
    dev_env: WorkflowEnvironment, migrated_database: str, emulator: Emulator, task_queue: str
) -> None:
    async with running_engine(
        env=dev_env,
        database_url=migrated_database,
        emulator=emulator,
        task_queue=task_queue,
        with_worker=False,
    ) as engine:
        worker = start_worker_process(engine)
        try:
            account = await engine.create_account()
            realm = await engine.connect(account)
            # QuickBooks commits the invoice, then takes 5 s to answer: the worker dies waiting.
            await fault(
                engine, count=1, method="POST", path_contains="/invoice", latency_ms=5000, apply="after"
            )
            await engine.send_invoice(account, "inv-1")
            await engine.wait_for(lambda: engine.qbo_invoices(realm), lambda invoices: len(invoices) == 1)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()

        replacement = start_worker_process(engine)
        try:
            # The dead worker's attempt times out on its heartbeat; the retry finds the invoice by number.
            synced = await engine.wait_for_invoice(account, "inv-1", "synced", timeout=90)
            assert synced["quickbooks"]["synced"]
            invoices = await engine.qbo_invoices(realm)
            assert [invoice["Id"] for invoice in invoices] == [synced["quickbooks"]["invoice_id"]]
            await asyncio.sleep(1)
            assert len(await engine.qbo_invoices(realm)) == 1
        finally:
            replacement.terminate()
            replacement.wait(timeout=20)

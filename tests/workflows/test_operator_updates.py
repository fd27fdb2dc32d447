"""The operators' updates (what the Temporal Web UI and CLI send), accepted and refused, on the time-skipping server
with the activities replaced by fakes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from models.domain import QUICKBOOKS_REJECTED, ConnectionStatus, InvoiceStatus
from tests.workflows.fakes import (
    FakeConnectionActivities,
    FakeInvoiceActivities,
    connection_worker,
    invoice_worker,
    snapshot,
)
from workflows.connection import ConnectionWorkflow
from workflows.invoice import InvoiceWorkflow
from workflows.messages import (
    INVOICE_WORKFLOW_VERSION,
    ConnectionDeadlines,
    ConnectionInfo,
    ConnectionProgress,
    ConnectionWorkflowInput,
    FailureReason,
    HealthCheckNowResult,
    InvoiceObservation,
    InvoiceStatusView,
    InvoiceWorkflowInput,
    InvoiceWorkflowResult,
    OperatorRequest,
    RefreshNowResult,
    ReplayParkedEventsRequest,
    ReprocessDeliveryRequest,
    RereadRequest,
    RetrySyncRequest,
    SweepNowResult,
    SweepResult,
    SyncInvoiceInput,
    SyncInvoiceResult,
    VoidRequest,
)

InvoiceHandle = WorkflowHandle[Any, InvoiceWorkflowResult]


async def start_invoice(client: Client, task_queue: str) -> InvoiceHandle:
    return await client.start_workflow(
        InvoiceWorkflow.run,
        InvoiceWorkflowInput(
            account_id="acct", invoice_id="inv-1", snapshot=snapshot(), version=INVOICE_WORKFLOW_VERSION
        ),
        id=f"invoice:acct:{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


async def until(handle: InvoiceHandle, done: Callable[[InvoiceStatusView], bool]) -> InvoiceStatusView:
    for _ in range(200):
        view = await handle.query(InvoiceWorkflow.status)
        if done(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"the invoice never got there: {view}")


async def refusal(handle: WorkflowHandle[Any, Any], update: str, *args: Any) -> str:
    """The words with which the update's validator refused (sent by name, as the Web UI and the CLI do)."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(update, *args)
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


def rejected_once(fakes: FakeInvoiceActivities) -> Callable[[SyncInvoiceInput], SyncInvoiceResult]:
    """A sync QuickBooks rejects (a validation fault); the next one goes through."""

    def sync(request: SyncInvoiceInput) -> SyncInvoiceResult:
        fakes.sync_result = None
        raise ApplicationError(
            "QuickBooks rejected the invoice: fault 6000",
            FailureReason("QuickBooks rejected the invoice: A business validation error has occurred"),
            type=QUICKBOOKS_REJECTED,
            non_retryable=True,
        )

    return sync


# --- retry_sync --------------------------------------------------------------------------------------------


async def test_retry_of_a_failed_sync_is_accepted_and_syncs_again(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()
    fakes.sync_result = rejected_once(fakes)
    async with invoice_worker(client, fakes) as task_queue:
        handle = await start_invoice(client, task_queue)
        await until(handle, lambda view: view.status == InvoiceStatus.FAILED)

        accepted = await handle.execute_update("retry_sync", RetrySyncRequest(requested_by="operator"))
        assert accepted["retry"] == 1 and accepted["status"] == "failed"
        assert "retry 1" in accepted["message"]
        view = await until(handle, lambda view: view.status == InvoiceStatus.SYNCED)
        assert view.manual_retries == 1
        assert [sync.generation for sync in fakes.syncs] == [0, 1]
        await handle.terminate()


async def test_retry_is_refused_with_a_reason_while_a_sync_is_under_way(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities(hold_sync=asyncio.Event())
    async with invoice_worker(client, fakes) as task_queue:
        handle = await start_invoice(client, task_queue)
        await asyncio.wait_for(fakes.sync_started.wait(), 10)
        # The first attempt is under way: syncing, not pending.
        assert (await handle.query(InvoiceWorkflow.status)).status == InvoiceStatus.SYNCING

        words = await refusal(handle, "retry_sync", RetrySyncRequest())
        assert "already under way" in words and "syncing" in words
        assert fakes.hold_sync is not None
        fakes.hold_sync.set()
        await until(handle, lambda view: view.status == InvoiceStatus.SYNCED)
        assert len(fakes.syncs) == 1  # the refused retry changed nothing
        await handle.terminate()


async def test_retry_of_a_synced_invoice_is_refused_with_a_reason(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()
    async with invoice_worker(client, fakes) as task_queue:
        handle = await start_invoice(client, task_queue)
        await until(handle, lambda view: view.status == InvoiceStatus.SYNCED)

        words = await refusal(handle, "retry_sync")  # no input at all: the request's fields have defaults
        assert "already in QuickBooks" in words and "synced" in words
        assert "reread_from_quickbooks" in words  # what to do instead
        assert (await handle.query(InvoiceWorkflow.status)).manual_retries == 0
        await handle.terminate()


async def test_retry_of_a_voided_invoice_is_refused_with_a_reason(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    # Holding the record of the void keeps the voided workflow running, as its events' delivery would.
    recorded = asyncio.Event()
    fakes = FakeInvoiceActivities(hold_record={InvoiceStatus.VOIDED: recorded})
    async with invoice_worker(client, fakes) as task_queue:
        handle = await start_invoice(client, task_queue)
        await until(handle, lambda view: view.status == InvoiceStatus.SYNCED)
        await handle.execute_update(InvoiceWorkflow.request_void, VoidRequest())
        await asyncio.wait_for(fakes.held.wait(), 10)

        words = await refusal(handle, "retry_sync", RetrySyncRequest())
        assert "voided" in words and "nothing to sync" in words
        recorded.set()
        result = await handle.result()
    assert result.status == InvoiceStatus.VOIDED
    assert len(fakes.syncs) == 1


# --- reread_from_quickbooks ----------------------------------------------------------------------------------


async def test_a_reread_applies_a_payment_no_webhook_brought(time_skipping_env: WorkflowEnvironment) -> None:
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()
    async with invoice_worker(client, fakes) as task_queue:
        handle = await start_invoice(client, task_queue)
        await until(handle, lambda view: view.status == InvoiceStatus.SYNCED)
        unchanged = await handle.execute_update("reread_from_quickbooks")
        assert unchanged["changed"] is False and unchanged["status"] == "synced"
        assert "nothing changed" in unchanged["message"]

        fakes.in_quickbooks = InvoiceObservation(
            realm_id="9130000000000001", qbo_invoice_id="145", sync_token=2, total_cents=10_000, balance_cents=0,
            source="operator",
        )  # fmt: skip
        paid = await handle.execute_update("reread_from_quickbooks", RereadRequest())
        assert paid["status"] == "paid" and paid["previous_status"] == "synced" and paid["changed"] is True
        assert paid["balance_cents"] == 0
        assert "now paid" in paid["message"]
        assert fakes.statuses[-1] == InvoiceStatus.PAID
        assert fakes.records[-1].timeline is not None
        assert fakes.records[-1].timeline.message == "Payment confirmed via QuickBooks."
        assert [read.qbo_invoice_id for read in fakes.reads] == ["145", "145"]
        await handle.terminate()


async def test_a_reread_of_an_invoice_that_is_not_in_quickbooks_is_refused(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()
    fakes.sync_result = rejected_once(fakes)
    async with invoice_worker(client, fakes) as task_queue:
        handle = await start_invoice(client, task_queue)
        await until(handle, lambda view: view.status == InvoiceStatus.FAILED)
        words = await refusal(handle, "reread_from_quickbooks", RereadRequest())
        assert "not in QuickBooks (status failed)" in words and "retry_sync" in words
        assert fakes.reads == []
        await handle.terminate()


# --- request_void --------------------------------------------------------------------------------------------


async def test_a_void_is_accepted_and_a_second_one_of_the_voided_invoice_is_refused(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    recorded = asyncio.Event()
    fakes = FakeInvoiceActivities(hold_record={InvoiceStatus.VOIDED: recorded})
    async with invoice_worker(client, fakes) as task_queue:
        handle = await start_invoice(client, task_queue)
        await until(handle, lambda view: view.status == InvoiceStatus.SYNCED)
        accepted = await handle.execute_update("request_void")
        assert accepted["status"] == "synced"
        await asyncio.wait_for(fakes.held.wait(), 10)

        words = await refusal(handle, "request_void", VoidRequest())
        assert words == "The invoice is already voided: there is nothing to void."
        recorded.set()
        assert (await handle.result()).status == InvoiceStatus.VOIDED
    assert len(fakes.voids) == 1


# --- The connection's: sweep_now, check_health_now, refresh_tokens_now --------------------------------------


async def start_connection(
    client: Client, task_queue: str, info: ConnectionInfo, *, entitled: bool = True
) -> Any:
    far = datetime.now(UTC) + timedelta(days=1)  # nothing of its own is due during the test
    return await client.start_workflow(
        ConnectionWorkflow.run,
        ConnectionWorkflowInput(
            account_id=info.account_id,
            progress=ConnectionProgress(
                info=info,
                plan_entitled=entitled,
                deadlines=ConnectionDeadlines(refresh_at=far, cdc_at=far, health_at=far),
            ),
        ),
        id=f"connection:{info.account_id}",
        task_queue=task_queue,
    )


def connection(status: ConnectionStatus = ConnectionStatus.CONNECTED) -> ConnectionInfo:
    return ConnectionInfo(
        account_id=f"acct-{uuid.uuid4().hex[:8]}", status=status, realm_id="9130000000000001", token_version=3,
        connected_at=datetime(2026, 11, 1, tzinfo=UTC),
    )  # fmt: skip


async def test_sweep_now_sweeps_and_says_what_it_caught(dev_env: WorkflowEnvironment) -> None:
    fakes = FakeConnectionActivities(info=connection(), sweep_result=SweepResult(caught=1, changed=4))
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info)
        result = await handle.execute_update("sweep_now", OperatorRequest(), result_type=SweepNowResult)
        assert (result.caught, result.changed) == (1, 4)
        assert (
            "4 invoice change(s)" in result.message and "1 of them no webhook had brought" in result.message
        )
        assert fakes.sweeps == 1
        assert await handle.query(ConnectionWorkflow.caught_by_sweeps) == 1
        await handle.terminate()


async def test_sweep_now_is_refused_while_the_plan_lacks_quickbooks(dev_env: WorkflowEnvironment) -> None:
    fakes = FakeConnectionActivities(info=connection())
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info, entitled=False)
        words = await refusal(handle, "sweep_now")
        assert "plan does not include QuickBooks" in words
        assert fakes.sweeps == 0
        await handle.terminate()


async def test_check_health_now_checks_and_says_the_connection_is_healthy(
    dev_env: WorkflowEnvironment,
) -> None:
    fakes = FakeConnectionActivities(info=connection())
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info)
        result = await handle.execute_update("check_health_now", result_type=HealthCheckNowResult)
        assert result.ok and result.message == "The connection is healthy."
        assert fakes.health_checks == 1
        await handle.terminate()


async def test_check_health_now_is_refused_for_an_expired_connection(dev_env: WorkflowEnvironment) -> None:
    fakes = FakeConnectionActivities(info=connection(ConnectionStatus.EXPIRED))
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info)
        words = await refusal(handle, "check_health_now", OperatorRequest())
        assert "expired" in words and "reconnects QuickBooks" in words
        assert fakes.health_checks == 0
        await handle.terminate()


async def test_refresh_tokens_now_refreshes(dev_env: WorkflowEnvironment) -> None:
    fakes = FakeConnectionActivities(info=connection())
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info)
        result = await handle.execute_update(
            "refresh_tokens_now", OperatorRequest(), result_type=RefreshNowResult
        )
        assert result.refreshed and result.token_version == 4 and result.status == ConnectionStatus.CONNECTED
        assert "Refreshed: token version 4" in result.message
        assert [request.expected_version for request in fakes.refreshes] == [3]
        await handle.terminate()


async def test_refresh_tokens_now_is_refused_once_disconnected(dev_env: WorkflowEnvironment) -> None:
    fakes = FakeConnectionActivities(info=connection(ConnectionStatus.DISCONNECTED))
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info)
        words = await refusal(handle, "refresh_tokens_now")
        assert "disconnected" in words and "nothing to refresh" in words
        assert fakes.refreshes == []
        await handle.terminate()


# --- The connection's event actions: replay_parked_events, reprocess_webhook_delivery ----------------------


async def test_replaying_parked_events_is_refused_for_an_expired_connection_and_for_ids_that_are_not_ids(
    dev_env: WorkflowEnvironment,
) -> None:
    expired = FakeConnectionActivities(info=connection(ConnectionStatus.EXPIRED))
    async with connection_worker(dev_env.client, expired) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, expired.info)
        words = await refusal(handle, "replay_parked_events", ReplayParkedEventsRequest())
        assert "expired" in words and "reconnects QuickBooks" in words
        await handle.terminate()
    fakes = FakeConnectionActivities(info=connection())
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info)
        words = await refusal(handle, "replay_parked_events", ReplayParkedEventsRequest(event_ids=[412, 0]))
        assert "positive ids of quickbooks_event rows" in words
        words = await refusal(
            handle, "replay_parked_events", ReplayParkedEventsRequest(event_ids=list(range(1, 1002)))
        )
        assert "At most 1000 event ids" in words and "send {} to replay every parked event" in words
        await handle.terminate()


async def test_reprocessing_a_delivery_is_refused_without_a_delivery_id_and_once_disconnected(
    dev_env: WorkflowEnvironment,
) -> None:
    fakes = FakeConnectionActivities(info=connection())
    async with connection_worker(dev_env.client, fakes) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, fakes.info)
        words = await refusal(handle, "reprocess_webhook_delivery", ReprocessDeliveryRequest())
        assert "delivery_id is the positive id of a quickbooks_webhook_delivery row" in words
        await handle.terminate()
    gone = FakeConnectionActivities(info=connection(ConnectionStatus.DISCONNECTED))
    async with connection_worker(dev_env.client, gone) as task_queue:
        handle = await start_connection(dev_env.client, task_queue, gone.info)
        words = await refusal(handle, "reprocess_webhook_delivery", ReprocessDeliveryRequest(delivery_id=42))
        assert "disconnected" in words and "nothing to reprocess" in words
        await handle.terminate()

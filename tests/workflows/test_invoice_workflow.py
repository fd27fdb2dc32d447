"""The invoice workflow's state machine on the time-skipping server, its activities replaced by fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from models.domain import DisconnectMode, InvoiceStatus, VoidOutcome
from tests.workflows.fakes import FakeInvoiceActivities, invoice_worker, snapshot
from workflows.invoice import InvoiceWorkflow
from workflows.messages import (
    ConnectionChange,
    InvoiceObservation,
    InvoiceProgress,
    InvoiceWorkflowInput,
    InvoiceWorkflowResult,
    VoidRequest,
)

AND_VOID = DisconnectMode.DISCONNECT_AND_VOID.value


async def start(client: Client, task_queue: str) -> str:
    workflow_id = f"invoice:acct:{uuid.uuid4().hex[:8]}"
    await client.start_workflow(
        InvoiceWorkflow.run,
        InvoiceWorkflowInput(account_id="acct", invoice_id="inv-1", snapshot=snapshot()),
        id=workflow_id,
        task_queue=task_queue,
    )
    return workflow_id


@pytest.mark.parametrize(
    ("outcome", "reason", "final", "last_error"),
    [
        (VoidOutcome.VOIDED, None, InvoiceStatus.VOIDED, None),
        (VoidOutcome.REFUSED, "QuickBooks refused to void invoice INV-1: a payment is applied", InvoiceStatus.DISCONNECTED,
         "QuickBooks refused to void invoice INV-1: a payment is applied"),
    ],
)  # fmt: skip
async def test_the_disconnect_fan_out_never_overwrites_the_void_outcome(
    time_skipping_env: WorkflowEnvironment,
    outcome: VoidOutcome,
    reason: str | None,
    final: InvoiceStatus,
    last_error: str | None,
) -> None:
    client = time_skipping_env.client
    release = asyncio.Event()
    fakes = FakeInvoiceActivities(hold_record={InvoiceStatus.SYNCED: release})
    async with invoice_worker(client, fakes) as task_queue:
        workflow_id = await start(client, task_queue)
        await asyncio.wait_for(fakes.held.wait(), 10)
        handle = client.get_workflow_handle(workflow_id, result_type=InvoiceWorkflowResult)
        # Disconnect & Void tells the invoice what it did; the later fan-out to every invoice says no more.
        told = ConnectionChange(usable=False, reason=reason, disconnect_mode=AND_VOID, void_outcome=outcome)
        await handle.signal(InvoiceWorkflow.connection_changed, told)
        await handle.signal(
            InvoiceWorkflow.connection_changed, ConnectionChange(usable=False, disconnect_mode=AND_VOID)
        )
        release.set()
        result = await handle.result()

    assert result.status == final
    assert fakes.statuses[-1] == final
    assert fakes.records[-1].last_error == last_error
    if final == InvoiceStatus.VOIDED:
        assert fakes.records[-1].timeline is not None
        assert fakes.records[-1].timeline.message == "Voided in QuickBooks (Disconnect & Void)."


async def test_an_undeliverable_platform_event_never_holds_the_invoice_at_continue_as_new(
    time_skipping_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short history limit, so that the workflow continues as new while the platform is down.
    monkeypatch.setattr("workflows.common.MAX_HISTORY_EVENTS", 40)
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities(platform_down=True)
    with time_skipping_env.auto_time_skipping_disabled():  # real time: retries of the delivery keep failing
        async with invoice_worker(client, fakes) as task_queue:
            workflow_id = await start(client, task_queue)
            handle = client.get_workflow_handle(workflow_id, result_type=InvoiceWorkflowResult)
            first_run = (await handle.describe()).run_id
            paid = InvoiceObservation(
                realm_id="9130000000000001", qbo_invoice_id="145", sync_token=1, total_cents=10_000,
                balance_cents=0,
            )  # fmt: skip
            await handle.signal(InvoiceWorkflow.quickbooks_invoice_changed, paid)
            for token in range(2, 20):  # redeliveries grow the history past its limit
                stale = dataclasses.replace(paid, sync_token=token)
                await handle.signal(InvoiceWorkflow.quickbooks_invoice_changed, stale)

            for _ in range(100):
                if (await handle.describe()).run_id != first_run:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the invoice never continued as new while the platform was down")
            # The new run still serves the invoice, and keeps trying to deliver the event it carried over.
            await asyncio.wait_for(handle.execute_update(InvoiceWorkflow.request_void, VoidRequest()), 20)
            for _ in range(100):  # the query says voided before the record of it is written
                if fakes.statuses[-1] == InvoiceStatus.VOIDED:
                    break
                await asyncio.sleep(0.2)
            assert fakes.statuses[-1] == InvoiceStatus.VOIDED
    paid_events = [event for event in fakes.events if event.type == "invoice.paid"]
    assert len({event.event_id for event in paid_events}) == 1


async def test_a_signal_that_reaches_a_continued_run_before_it_runs_is_kept(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    # A continued run starts with its progress in the input; a signal delivered with the start (as after a
    # continue-as-new) is handled before `run` begins, and must act on that progress, not on a blank one.
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()
    synced = InvoiceProgress(
        status=InvoiceStatus.SYNCED, realm_id="9130000000000001", qbo_invoice_id="145", qbo_sync_token=0,
        total_cents=10_000, balance_cents=10_000, create_attempted=True,
    )  # fmt: skip
    async with invoice_worker(client, fakes) as task_queue:
        handle = await client.start_workflow(
            InvoiceWorkflow.run,
            InvoiceWorkflowInput(account_id="acct", invoice_id="inv-1", snapshot=snapshot(), progress=synced),
            id=f"invoice:acct:{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            start_signal="connection_changed",
            start_signal_args=[
                ConnectionChange(usable=False, disconnect_mode=AND_VOID, void_outcome=VoidOutcome.VOIDED)
            ],
        )
        result = await asyncio.wait_for(handle.result(), 20)
    assert result.status == InvoiceStatus.VOIDED
    assert not fakes.syncs  # the continued run never synced again


async def test_refusals_in_different_runs_keep_their_own_notifications(
    time_skipping_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys made of the history's length repeat after a continue-as-new: a second refusal's notification, timeline
    # entry and platform event would be dropped as duplicates of the first.
    monkeypatch.setattr("workflows.common.MAX_HISTORY_EVENTS", 25)
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities(void_outcome=VoidOutcome.REFUSED)
    async with invoice_worker(client, fakes) as task_queue:
        workflow_id = await start(client, task_queue)
        handle = client.get_workflow_handle(workflow_id, result_type=InvoiceWorkflowResult)
        first_run = (await handle.describe()).run_id
        runs = {first_run}
        for _ in range(6):
            await handle.execute_update(InvoiceWorkflow.request_void, VoidRequest())
            for _ in range(100):
                if (
                    sum(1 for record in fakes.records if record.notification) > len(runs) * 0
                    and not (await handle.query(InvoiceWorkflow.status)).void_requested
                ):
                    break
                await asyncio.sleep(0.05)
            runs.add((await handle.describe()).run_id)
        await handle.terminate()
    assert len(runs) > 1  # the refusals spanned a continue-as-new
    keys = [record.notification.dedupe_key for record in fakes.records if record.notification]
    events = [event.event_id for event in fakes.events if event.type == "invoice.void_failed"]
    assert len(keys) == 6 and len(set(keys)) == 6, keys
    assert len(set(events)) == 6, events

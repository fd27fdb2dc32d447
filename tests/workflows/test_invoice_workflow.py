"""The invoice workflow's state machine on the time-skipping server, its activities replaced by fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from models.domain import DisconnectMode, InvoiceStatus, VoidOutcome
from tests.workflows.fakes import FakeInvoiceActivities, invoice_worker, snapshot
from workflows import search_attributes
from workflows.invoice import InvoiceWorkflow
from workflows.messages import (
    INVOICE_WORKFLOW_VERSION,
    ConnectionChange,
    InvoiceObservation,
    InvoiceProgress,
    InvoiceStatusView,
    InvoiceWorkflowInput,
    InvoiceWorkflowResult,
    NotificationItem,
    PlatformEvent,
    SyncInvoiceInput,
    SyncInvoiceResult,
    VoidRequest,
)

AND_VOID = DisconnectMode.DISCONNECT_AND_VOID.value


async def start(client: Client, task_queue: str, *, status: InvoiceStatus | None = None) -> str:
    """Start an invoice workflow as the API does (with `status`: the search attribute the API starts it with)."""
    workflow_id = f"invoice:acct:{uuid.uuid4().hex[:8]}"
    await client.start_workflow(
        InvoiceWorkflow.run,
        InvoiceWorkflowInput(
            account_id="acct", invoice_id="inv-1", snapshot=snapshot(), version=INVOICE_WORKFLOW_VERSION
        ),
        id=workflow_id,
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(search_attributes.SYNC_STATUS, status.value)] if status else []
        ),
    )
    return workflow_id


async def continued_as_new(handle: WorkflowHandle[Any, Any], first_run: str | None) -> None:
    for _ in range(100):
        if (await handle.describe()).run_id != first_run:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the invoice never continued as new")


async def until(done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait, in real time, for what the workers do in the background (slow on a loaded machine)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


async def until_query(
    handle: WorkflowHandle[Any, Any], done: Callable[[InvoiceStatusView], bool], timeout: float = 60.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if done(await handle.query(InvoiceWorkflow.status)):
                return
        except RPCError as exc:
            # A query the server could not answer in time (the run continuing as new, a workflow task reported
            # again on a loaded machine: "Timeout expired", status CANCELLED) is asked again.
            if exc.status != RPCStatusCode.CANCELLED:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the workflow's status")
        await asyncio.sleep(0.05)


def refusal_notifications(fakes: FakeInvoiceActivities) -> list[NotificationItem]:
    return [record.notification for record in fakes.records if record.notification]


def void_failed_events(fakes: FakeInvoiceActivities) -> list[PlatformEvent]:
    return [event for event in fakes.events if event.type == "invoice.void_failed"]


def refused_in_full(fakes: FakeInvoiceActivities, refusals: int) -> bool:
    return len(refusal_notifications(fakes)) >= refusals and len(void_failed_events(fakes)) >= refusals


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


async def _void_allowing_a_redelivery(handle: WorkflowHandle[Any, Any]) -> str | None:
    """Void through the update; the refusal's words if the update was refused.

    Seen once in CI: the update met a run finishing its continue-as-new ("workflow execution already completed"), and
    the time-skipping server delivered it again to the new run, whose validator found the invoice voided by the
    first delivery (refused: "already voided"). Voided either way."""
    try:
        await asyncio.wait_for(handle.execute_update(InvoiceWorkflow.request_void, VoidRequest()), 20)
    except WorkflowUpdateFailedError as exc:
        return exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc.cause)
    return None


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
            for token in range(2, 40):  # redeliveries grow the history past its limit
                stale = dataclasses.replace(paid, sync_token=token)
                await handle.signal(InvoiceWorkflow.quickbooks_invoice_changed, stale)

            await continued_as_new(handle, first_run)
            # The new run still serves the invoice, and keeps trying to deliver the event it carried over.
            voided = await _void_allowing_a_redelivery(handle)
            assert voided is None or "already voided" in voided, voided
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
            InvoiceWorkflowInput(
                account_id="acct",
                invoice_id="inv-1",
                snapshot=snapshot(),
                progress=synced,
                version=INVOICE_WORKFLOW_VERSION,
            ),
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
    # Real time: the workflow continues as new while its updates and queries come and go.
    with time_skipping_env.auto_time_skipping_disabled():
        async with invoice_worker(client, fakes) as task_queue:
            workflow_id = await start(client, task_queue)
            handle = client.get_workflow_handle(workflow_id, result_type=InvoiceWorkflowResult)
            first_run = (await handle.describe()).run_id
            runs = {first_run}
            for refusals in range(1, 7):
                await handle.execute_update(InvoiceWorkflow.request_void, VoidRequest())
                # Each refusal is finished (its notification recorded, its event delivered, the void no longer
                # requested) before the next void is asked for, and before the workflow is stopped: however slow the
                # machine, nothing of it is still on its way.
                await until(functools.partial(refused_in_full, fakes, refusals))
                await until_query(handle, lambda view: not view.void_requested)
                runs.add((await handle.describe()).run_id)
            await handle.terminate()
    assert len(runs) > 1  # the refusals spanned a continue-as-new
    keys = [notification.dedupe_key for notification in refusal_notifications(fakes)]
    events = [event.event_id for event in void_failed_events(fakes)]
    assert len(keys) == 6 and len(set(keys)) == 6, keys
    assert len(set(events)) == 6, events


async def test_each_platform_event_of_an_invoice_takes_the_next_sequence_across_runs(
    time_skipping_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short history limit: the invoice continues as new between its events, and must go on counting.
    monkeypatch.setattr("workflows.common.MAX_HISTORY_EVENTS", 40)
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()
    async with invoice_worker(client, fakes) as task_queue:
        workflow_id = await start(client, task_queue)
        handle = client.get_workflow_handle(workflow_id, result_type=InvoiceWorkflowResult)
        first_run = (await handle.describe()).run_id
        partial = InvoiceObservation(
            realm_id="9130000000000001", qbo_invoice_id="145", sync_token=1, total_cents=10_000,
            balance_cents=4_000,
        )  # fmt: skip
        await handle.signal(InvoiceWorkflow.quickbooks_invoice_changed, partial)
        for token in range(2, 20):  # redeliveries grow the history past its limit
            await handle.signal(
                InvoiceWorkflow.quickbooks_invoice_changed, dataclasses.replace(partial, sync_token=token)
            )
        await continued_as_new(handle, first_run)
        paid = dataclasses.replace(partial, sync_token=30, balance_cents=0)
        await handle.signal(InvoiceWorkflow.quickbooks_invoice_changed, paid)
        # Paid before the void is asked for: a signal and an update that land in one task would be applied in
        # either order, and the test is of the sequence numbers, not of that race.
        await until_query(handle, lambda view: view.status == InvoiceStatus.PAID)
        await asyncio.wait_for(handle.execute_update(InvoiceWorkflow.request_void, VoidRequest()), 20)
        await asyncio.wait_for(handle.result(), 20)
    sent = list({event.event_id: event for event in fakes.events}.values())
    assert [event.type for event in sent] == ["invoice.partially_paid", "invoice.paid", "invoice.voided"]
    assert [event.sequence for event in sent] == [1, 2, 3]
    assert {event.chain for event in sent} == {first_run}


async def test_a_sync_is_one_activity_that_records_the_synced_invoice_itself(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    # Issue 14: 20 history events, two activities and three search-attribute upserts per synced invoice before.
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()
    async with invoice_worker(client, fakes) as task_queue:
        workflow_id = await start(client, task_queue, status=InvoiceStatus.SYNCING)
        handle = client.get_workflow_handle(workflow_id)
        # Not queried meanwhile: on the time-skipping server a query adds a workflow task to the history.
        for _ in range(600):
            history = await handle.fetch_history()
            types = [EventType.Name(event.event_type) for event in history.events]
            if "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES" in types:
                break
            await asyncio.sleep(0.05)
    scheduled = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["sync_invoice"], types
    assert len(types) <= 11, types
    assert types.count("EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES") == 1, (
        types
    )  # synced; syncing came with it
    assert "EVENT_TYPE_MARKER_RECORDED" not in types, types  # versioned by the input: no patch markers
    # The synced invoice was recorded once, by the sync itself, with its timeline entry and the failure resolved.
    [record] = fakes.records
    assert record.status == InvoiceStatus.SYNCED and record.qbo_invoice_id == "145"
    assert record.timeline is not None and record.timeline.dedupe_key == f"{workflow_id}/synced/145"
    assert record.resolve_notification_kinds == ["sync_failed"]
    assert [sync.record_synced for sync in fakes.syncs] == [True]


async def test_a_sync_retried_after_a_failure_records_the_invoice_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fakes = FakeInvoiceActivities()

    def timed_out_once(request: SyncInvoiceInput) -> SyncInvoiceResult:
        fakes.sync_result = None
        raise ApplicationError("QuickBooks did not answer in time")  # retryable: the create may have happened

    fakes.sync_result = timed_out_once
    async with invoice_worker(client, fakes) as task_queue:
        handle = client.get_workflow_handle(await start(client, task_queue))
        await until_query(handle, lambda view: view.status == InvoiceStatus.SYNCED, timeout=90)
        await until(lambda: bool(fakes.records))
        history = await handle.fetch_history()
    assert len(fakes.syncs) == 2 and all(sync.record_synced for sync in fakes.syncs)
    [started] = [
        event.activity_task_started_event_attributes
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
    ]
    assert (
        started.attempt == 2
    )  # the activity's own retry, after the policy's backoff (it looks before creating)
    assert [record.status for record in fakes.records] == [InvoiceStatus.SYNCED]

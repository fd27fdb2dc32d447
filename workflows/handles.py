"""Client-side handles on the workflows: how the API, its relay and the activities start or signal them.

Each is idempotent (a workflow id per business key, signal-with-start), so a caller that is not sure whether an
earlier call got through simply calls again.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from workflows import search_attributes
from workflows.ids import realm_events_workflow_id
from workflows.messages import (
    CompanyCheckRequest,
    ConnectionPolicy,
    ConnectionWorkflowInput,
    GrantSignal,
    InvoiceSnapshot,
    InvoiceWorkflowInput,
    RealmEventsInput,
)


async def start_invoice_sync(
    temporal: Client, *, task_queue: str, workflow_id: str, account_id: str, invoice_id: str,
    snapshot: InvoiceSnapshot, status: str, rpc_timeout: timedelta | None = None,
) -> None:  # fmt: skip
    """Start the invoice's workflow unless it runs or ran already (then nothing changes)."""
    # A workflow that ran before and finished refuses the start: starting again changes nothing.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await temporal.start_workflow(
            "InvoiceWorkflow",
            InvoiceWorkflowInput(account_id=account_id, invoice_id=invoice_id, snapshot=snapshot),
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.ACCOUNT_ID, account_id),
                    SearchAttributePair(search_attributes.INVOICE_NUMBER, snapshot.number),
                    SearchAttributePair(search_attributes.SYNC_STATUS, status),
                ]
            ),
            rpc_timeout=rpc_timeout,
        )


async def tell_connection_of_grant(
    temporal: Client, *, task_queue: str, workflow_id: str, account_id: str, realm_id: str, grant_id: str,
    policy: ConnectionPolicy, rpc_timeout: timedelta | None = None,
) -> None:  # fmt: skip
    """Signal-with-start the account's connection workflow with a new authorization to adopt."""
    await temporal.start_workflow(
        "ConnectionWorkflow",
        ConnectionWorkflowInput(account_id=account_id, policy=policy),
        id=workflow_id,
        task_queue=task_queue,
        start_signal="grant_authorized",
        start_signal_args=[GrantSignal(grant_id=grant_id)],
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.ACCOUNT_ID, account_id),
                SearchAttributePair(search_attributes.REALM_ID, realm_id),
            ]
        ),
        rpc_timeout=rpc_timeout,
    )


async def start_realm_events(
    temporal: Client, realm_id: str, task_queue: str, *, rpc_timeout: timedelta | None = None
) -> None:
    """Signal-with-start the company's events workflow (the webhook route, its relay and reconnects use this)."""
    await temporal.start_workflow(
        "QuickBooksEventsWorkflow",
        RealmEventsInput(realm_id=realm_id),
        id=realm_events_workflow_id(realm_id),
        task_queue=task_queue,
        start_signal="events_arrived",
        rpc_timeout=rpc_timeout,
    )


async def ask_for_company_check(
    temporal: Client, *, workflow_id: str, rpc_timeout: timedelta | None = None
) -> None:
    """Ask the connection workflow to check its company's settings now (RPCError when it cannot be asked)."""
    await temporal.get_workflow_handle(workflow_id).signal(
        "check_company_settings", CompanyCheckRequest(), rpc_timeout=rpc_timeout
    )

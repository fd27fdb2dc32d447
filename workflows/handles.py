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

from models.domain import ConnectionStatus, InvoiceStatus
from workflows import descriptions, search_attributes
from workflows.ids import platform_event_redelivery_workflow_id, realm_events_workflow_id
from workflows.messages import (
    INVOICE_WORKFLOW_VERSION,
    CompanyCheckRequest,
    ConnectionChange,
    ConnectionPolicy,
    ConnectionWorkflowInput,
    GrantSignal,
    InvoiceSnapshot,
    InvoiceWorkflowInput,
    RealmEventsInput,
    RedeliverPlatformEvent,
)


async def start_invoice_sync(
    temporal: Client, *, task_queue: str, workflow_id: str, account_id: str, invoice_id: str,
    snapshot: InvoiceSnapshot, status: str, rpc_timeout: timedelta | None = None,
    connection_changed: ConnectionChange | None = None,
) -> None:  # fmt: skip
    """Start the invoice's workflow unless it runs or ran already (then nothing changes); with
    `connection_changed`, signal it that change too (signal-with-start: the running workflow, or the one started,
    gets it)."""
    # A workflow that ran before and finished refuses the start: starting again changes nothing.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await temporal.start_workflow(
            "InvoiceWorkflow",
            InvoiceWorkflowInput(
                account_id=account_id,
                invoice_id=invoice_id,
                snapshot=snapshot,
                version=INVOICE_WORKFLOW_VERSION,
            ),
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.ACCOUNT_ID, account_id),
                    SearchAttributePair(search_attributes.INVOICE_NUMBER, snapshot.number),
                    # A pending invoice's first workflow task starts its first attempt: it reads `syncing` at once.
                    SearchAttributePair(
                        search_attributes.SYNC_STATUS,
                        InvoiceStatus.SYNCING.value if status == InvoiceStatus.PENDING.value else status,
                    ),
                ]
            ),
            # Encrypted by the payload codec like the input: it names the client.
            static_summary=descriptions.invoice_summary(snapshot.number, snapshot.client_name, account_id),
            rpc_timeout=rpc_timeout,
            start_signal="connection_changed" if connection_changed is not None else None,
            start_signal_args=[connection_changed] if connection_changed is not None else [],
        )


async def tell_connection_of_grant(
    temporal: Client, *, task_queue: str, workflow_id: str, account_id: str, realm_id: str, grant_id: str,
    policy: ConnectionPolicy, company_name: str | None = None, rpc_timeout: timedelta | None = None,
) -> None:  # fmt: skip
    """Signal-with-start the account's connection workflow with a new authorization to adopt (the summary names
    the company a start is for; a running workflow keeps its own, and its details name the current company)."""
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
                # What the API shows from now until the workflow adopts the authorization.
                SearchAttributePair(search_attributes.CONNECTION_STATUS, ConnectionStatus.CONNECTING.value),
            ]
        ),
        static_summary=descriptions.connection_summary(account_id, company_name, realm_id),
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
        search_attributes=TypedSearchAttributes([SearchAttributePair(search_attributes.REALM_ID, realm_id)]),
        static_summary=descriptions.events_summary(realm_id),
        rpc_timeout=rpc_timeout,
    )


async def ask_for_company_check(
    temporal: Client, *, workflow_id: str, rpc_timeout: timedelta | None = None
) -> None:
    """Ask the connection workflow to check its company's settings now (RPCError when it cannot be asked)."""
    await temporal.get_workflow_handle(workflow_id).signal(
        "check_company_settings", CompanyCheckRequest(), rpc_timeout=rpc_timeout
    )


async def start_platform_event_redelivery(
    temporal: Client, *, event_id: str, event_type: str, task_queue: str, rpc_timeout: timedelta | None = None
) -> None:
    """Start delivering a kept platform event again; while a redelivery of it runs, asking again joins that one."""
    await temporal.start_workflow(
        "PlatformEventRedeliveryWorkflow",
        RedeliverPlatformEvent(event_id=event_id),
        id=platform_event_redelivery_workflow_id(event_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"Redelivery of platform event {event_id} ({event_type})",
        rpc_timeout=rpc_timeout,
    )

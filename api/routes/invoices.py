"""Invoices: send (start the sync), void, manual retry, and the read side (status, list, timeline)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import tuple_
from sqlmodel import col, select
from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AccountDep, Services, ServicesDep, SessionDep
from api.errors import ACCOUNT_ROUTE_ERRORS, ApiError, error_responses
from api.handoff import HandOff
from models.bounds import MAX_LIST_OFFSET, MAX_SNAPSHOT_BYTES
from models.connections import company_blocked
from models.crud import add_timeline_entry, mark_workflows_started
from models.db import release_connection
from models.domain import UNFOLLOWED_INVOICE_STATUSES, ConnectionStatus, InvoiceStatus
from models.plans import quickbooks_entitled
from models.queries import insert_or_none
from models.schemas import (
    InvoiceAccepted,
    InvoiceList,
    InvoiceSend,
    InvoiceSyncPublic,
    NotificationPublic,
    QuickBooksBadge,
    Timeline,
    TimelineEntryPublic,
    snapshot_from_json,
    snapshot_json,
)
from models.tables import Account, InvoiceSync, Notification, QuickBooksConnection, TimelineEntry, utcnow
from workflows.handles import ask_for_company_check, start_invoice_sync
from workflows.ids import connection_workflow_id, invoice_workflow_id, stored_or
from workflows.invoice import InvoiceWorkflow
from workflows.messages import InvoiceSnapshot, InvoiceWorkflowInput, RetrySyncRequest, VoidRequest

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["invoices"])

InvoiceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

# Invoice workflows one round of the starter (or the relay) starts at once.
START_CONCURRENCY = 10


def _sync_decision(
    account: Account, connection: QuickBooksConnection | None
) -> tuple[InvoiceStatus, str | None]:
    """Whether a newly sent invoice is synced now, waits (paused), or is never synced (sent before connecting)."""
    if connection is None or connection.status in (
        ConnectionStatus.NOT_CONNECTED,
        ConnectionStatus.DISCONNECTED,
        ConnectionStatus.DISCONNECTING,
    ):
        return InvoiceStatus.NOT_SYNCED, "QuickBooks was not connected when this invoice was sent."
    if not quickbooks_entitled(account.plan, account.quickbooks_addon):
        return (
            InvoiceStatus.PAUSED,
            "The account's plan does not include QuickBooks; syncing resumes after upgrading.",
        )
    if connection.status == ConnectionStatus.EXPIRED:
        return InvoiceStatus.PAUSED, "The QuickBooks connection expired; syncing resumes after reconnecting."
    return InvoiceStatus.PENDING, None


@router.post(
    "/invoices/{invoice_id}/send", status_code=202, responses=error_responses(*ACCOUNT_ROUTE_ERRORS, 413)
)
async def send_invoice(
    invoice_id: InvoiceId,
    body: InvoiceSend,
    account: AccountDep,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
) -> InvoiceAccepted:
    """Accept a sent invoice at once; QuickBooks is updated in the background. Sending twice is harmless."""
    snapshot = body.snapshot()
    await _ensure_fits_temporal(services, account.id, invoice_id, snapshot)
    connection = await session.get(QuickBooksConnection, account.id)
    status, reason = _sync_decision(account, connection)
    stored = await insert_or_none(
        session,
        InvoiceSync,
        {
            "account_id": account.id,
            "invoice_id": invoice_id,
            "number": snapshot.number,
            "status": status.value,
            "reason": reason,
            "currency": snapshot.currency,
            "total_cents": snapshot.total_cents,
            "balance_cents": snapshot.total_cents,
            "client_name": snapshot.client_name,
            "client_email": snapshot.client_email,
            "snapshot": snapshot_json(snapshot),
            "workflow_id": invoice_workflow_id(account.id, invoice_id),
            "sent_at": utcnow(),
            "updated_at": utcnow(),
        },
    )
    if stored is not None:
        message = (
            "Sent; it will be synced to QuickBooks."
            if status != InvoiceStatus.NOT_SYNCED
            else f"Sent. Not synced: {reason}"
        )
        await add_timeline_entry(
            session,
            account_id=account.id,
            invoice_id=invoice_id,
            kind="sent",
            message=message,
            dedupe_key=f"{invoice_workflow_id(account.id, invoice_id)}/sent/",
            at=utcnow(),
        )
    row = stored or await _invoice_row(session, account.id, invoice_id)
    await session.commit()
    # The first body sent wins everywhere (database, workflow, QuickBooks); a later one changes nothing.
    kept = snapshot if stored is not None or row.snapshot is None else snapshot_from_json(row.snapshot)
    if row.status not in UNFOLLOWED_INVOICE_STATUSES and row.workflow_started_at is None:
        # Also on a repeated send: if the first start never reached Temporal, this one starts the workflow. After
        # the answer: the invoice is stored, and what the starter cannot start (Temporal away, the API stopping)
        # the relay starts once Temporal answers.
        starter: HandOff[tuple[str, str]] = request.app.state.sync_starter
        starter.give((row.account_id, row.invoice_id))
    # An invoice stored by this request has no notification yet: no query for one.
    public = _to_public(row, None) if stored is not None else await _public(session, row)
    return InvoiceAccepted(invoice=public, duplicate=stored is None, body_differs=kept != snapshot)


async def _ensure_fits_temporal(
    services: ServicesDep, account_id: str, invoice_id: str, snapshot: InvoiceSnapshot
) -> None:
    """Refuse, before anything is stored, an invoice whose workflow input Temporal would refuse or barely hold.

    Measured as Temporal stores it (through the client's data converter and payload codec), so the bound holds
    whatever the encoding adds."""
    workflow_input = InvoiceWorkflowInput(account_id=account_id, invoice_id=invoice_id, snapshot=snapshot)
    [payload] = await services.temporal.data_converter.encode([workflow_input])
    size = payload.ByteSize()
    if size > MAX_SNAPSHOT_BYTES:
        raise ApiError(
            413,
            "invoice_too_large",
            f"The invoice is too large to sync ({size // 1024} KiB encoded; at most {MAX_SNAPSHOT_BYTES // 1024} "
            "KiB): shorten its line descriptions or split it.",
        )


def _workflow_id(row: InvoiceSync) -> str:
    return stored_or(row.workflow_id, invoice_workflow_id(row.account_id, row.invoice_id))


def _rpc_timeout(services: ServicesDep) -> timedelta:
    return timedelta(seconds=services.settings.temporal_rpc_timeout_seconds)


async def start_invoice_syncs(
    services: Services,
    keys: Sequence[tuple[str, str]],
    contexts: Mapping[tuple[str, str], contextvars.Context] | None = None,
) -> int:
    """Start the workflows of these invoices (account id, invoice id) that are still to start, and mark them
    started; returns how many were. An invoice Temporal does not answer for stays unstarted (the relay tries it
    again); the others are not held up by it.

    Each start runs in the context its key comes with (`contexts`: the send's, so that the workflow is part of the
    send's trace). Used after the answers to sends (`sync_starter`), and by the relay for invoices an outage left
    unstarted."""
    if not keys:
        return 0
    settings = services.settings
    async with services.sessions() as session:
        rows = (
            await session.exec(
                select(InvoiceSync).where(
                    tuple_(col(InvoiceSync.account_id), col(InvoiceSync.invoice_id)).in_(list(keys)),
                    col(InvoiceSync.workflow_started_at).is_(None),
                    col(InvoiceSync.snapshot).is_not(None),
                    col(InvoiceSync.status).not_in(sorted(UNFOLLOWED_INVOICE_STATUSES)),
                )
            )
        ).all()
        await release_connection(session)
        gate = asyncio.Semaphore(START_CONCURRENCY)
        started: list[tuple[str, str]] = []

        async def start(row: InvoiceSync) -> None:
            assert row.snapshot is not None
            key = (row.account_id, row.invoice_id)
            async with gate:
                try:
                    starting = start_invoice_sync(
                        services.temporal,
                        task_queue=settings.temporal_task_queue,
                        workflow_id=_workflow_id(row),
                        account_id=row.account_id,
                        invoice_id=row.invoice_id,
                        snapshot=snapshot_from_json(row.snapshot),
                        status=row.status,
                        rpc_timeout=_rpc_timeout(services),
                    )
                    await asyncio.create_task(starting, context=(contexts or {}).get(key))
                except RPCError as exc:
                    logger.warning(
                        "invoice workflow for %s/%s not started yet (%s): the relay will",
                        row.account_id, row.invoice_id, exc.status.name,
                    )  # fmt: skip
                    return
                except Exception as exc:
                    # Not Temporal away: a bug, or a row it cannot read. Costs this invoice only; the others of the
                    # round are started and marked, and the relay tries this one again. The type only: a
                    # validation error's text would quote the snapshot (a client's name and email).
                    logger.error(
                        "invoice workflow for %s/%s could not be started: %s",
                        row.account_id, row.invoice_id, type(exc).__name__,
                    )  # fmt: skip
                    return
            started.append(key)

        await asyncio.gather(*(start(row) for row in rows))
        if started:
            await mark_workflows_started(session, started, at=utcnow())
            await session.commit()
        return len(started)


def sync_starter(services: Services) -> HandOff[tuple[str, str]]:
    """Starts the workflows of sent invoices after the answers to the sends, in rounds (one statement marks a round
    started)."""

    async def start(given: dict[tuple[str, str], contextvars.Context]) -> None:
        await start_invoice_syncs(services, list(given), given)

    return HandOff(
        "invoice syncs",
        start,
        stop_within=2 * services.settings.temporal_rpc_timeout_seconds,
    )


@router.post(
    "/invoices/{invoice_id}/void", status_code=202, responses=error_responses(*ACCOUNT_ROUTE_ERRORS, 409)
)
async def void_invoice(
    invoice_id: InvoiceId, account: AccountDep, session: SessionDep, services: ServicesDep
) -> InvoiceSyncPublic:
    """Void the invoice, in QuickBooks too. A refusal by QuickBooks shows up as `last_error` and a notification."""
    row = await _invoice_row(session, account.id, invoice_id)
    if row.status == InvoiceStatus.VOIDED:
        return await _public(session, row)
    if row.status in UNFOLLOWED_INVOICE_STATUSES:
        await _void_locally(session, row)
        return await _public(session, row)
    await release_connection(session)
    await _ask_invoice_workflow(
        services,
        row,
        lambda handle, timeout: handle.execute_update(
            InvoiceWorkflow.request_void, VoidRequest(), rpc_timeout=timeout
        ),
        action="void",
        refused_code="invoice_not_voidable",
    )
    await session.refresh(row)
    return await _public(session, row)


async def _void_locally(session: SessionDep, row: InvoiceSync) -> None:
    """Void an invoice QuickBooks does not follow (never synced, or QuickBooks disconnected since)."""
    now = utcnow()
    message = (
        "Voided. It was never synced to QuickBooks."
        if row.status == InvoiceStatus.NOT_SYNCED
        else "Voided here; QuickBooks is no longer followed for this invoice, so it was not changed there."
    )
    row.status = InvoiceStatus.VOIDED.value
    row.voided_at = now
    row.updated_at = now
    session.add(row)
    await add_timeline_entry(
        session,
        account_id=row.account_id,
        invoice_id=row.invoice_id,
        kind="voided",
        message=message,
        dedupe_key=f"{invoice_workflow_id(row.account_id, row.invoice_id)}/voided/local",
        at=now,
    )
    await session.commit()


@router.post(
    "/invoices/{invoice_id}/quickbooks/retry",
    status_code=202,
    responses=error_responses(*ACCOUNT_ROUTE_ERRORS, 409),
)
async def retry_sync(
    invoice_id: InvoiceId, account: AccountDep, session: SessionDep, services: ServicesDep
) -> InvoiceSyncPublic:
    """Retry a failed sync now; a paused invoice checks its connection again (the `retry_sync` update that
    operators send from the Temporal Web UI). What makes no sense (a synced invoice, a sync under way, a void) is a
    409 `not_retryable` saying why."""
    row = await _invoice_row(session, account.id, invoice_id)
    if row.status in UNFOLLOWED_INVOICE_STATUSES:
        # No workflow runs for it any more (or ever did): the stored status is the whole answer.
        raise ApiError(409, "not_retryable", _unfollowed_reason(row))
    connection = await session.get(QuickBooksConnection, account.id)
    blocked = connection is not None and company_blocked(connection) is not None
    await release_connection(session)
    await _ask_invoice_workflow(
        services,
        row,
        lambda handle, timeout: handle.execute_update(
            InvoiceWorkflow.retry, RetrySyncRequest(requested_by="api"), rpc_timeout=timeout
        ),
        action="retry",
        refused_code="not_retryable",
    )
    if blocked and connection is not None:
        # Paused by the company's settings: the user has likely just fixed them, so look again now.
        try:
            await ask_for_company_check(
                services.temporal,
                workflow_id=stored_or(connection.workflow_id, connection_workflow_id(account.id)),
                rpc_timeout=_rpc_timeout(services),
            )
        except RPCError as exc:
            logger.warning(
                "connection workflow of %s not asked for a company check: %s", account.id, exc.message
            )
    return await _public(session, row)


async def _ask_invoice_workflow(
    services: ServicesDep,
    row: InvoiceSync,
    send: Callable[[WorkflowHandle[Any, Any], timedelta], Awaitable[object]],
    *,
    action: str,
    refused_code: str,
) -> None:
    """Send an update to the invoice's workflow: its refusal is a 409 `refused_code` in the workflow's own words
    (its validator's: whole sentences an operator reads too, no personal data), Temporal away or slow a 503."""
    handle = services.temporal.get_workflow_handle(_workflow_id(row))
    try:
        try:
            await send(handle, _rpc_timeout(services))
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or row.workflow_started_at is not None:
                raise
            # Sent a moment ago, its workflow still to be started by the starter (or by the relay, after an
            # outage): start it now (starting twice changes nothing), then ask again.
            await start_invoice_syncs(services, [(row.account_id, row.invoice_id)])
            await send(handle, _rpc_timeout(services))
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        words = cause.message if isinstance(cause, FailureError) else str(cause)
        raise ApiError(409, refused_code, words) from exc
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        # No worker took it in time; it may still be taken later, and asking twice changes nothing.
        raise ApiError(
            503,
            "temporarily_unavailable",
            f"The {action} was not confirmed in time; check the invoice or try again.",
        ) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            reason = (
                "The invoice's sync has not started yet; it starts as soon as Temporal answers again."
                if row.workflow_started_at is None
                else "The invoice's sync is no longer running."
            )
            raise ApiError(409, refused_code, reason) from exc
        raise ApiError(
            503, "temporarily_unavailable", f"The {action} could not be requested; try again shortly."
        ) from exc


def _unfollowed_reason(row: InvoiceSync) -> str:
    """Why an invoice no workflow follows cannot be retried (the words of the workflow's validator where it has
    them)."""
    if row.status == InvoiceStatus.NOT_SYNCED:
        return "QuickBooks was not connected when this invoice was sent, so it is never synced."
    if row.status == InvoiceStatus.VOIDED:
        return "The invoice is voided (or being voided): there is nothing to sync."
    if row.status == InvoiceStatus.DELETED_IN_QUICKBOOKS:
        return (
            "The invoice was deleted in QuickBooks: it is no longer followed, so there is nothing to retry."
        )
    return "QuickBooks was disconnected: this invoice is no longer synced."


@router.get("/invoices/{invoice_id}", responses=error_responses(*ACCOUNT_ROUTE_ERRORS))
async def get_invoice(invoice_id: InvoiceId, account: AccountDep, session: SessionDep) -> InvoiceSyncPublic:
    """The invoice's sync status, QuickBooks badge and ids, last error and open notification."""
    return await _public(session, await _invoice_row(session, account.id, invoice_id))


@router.get("/invoices", responses=error_responses(*ACCOUNT_ROUTE_ERRORS))
async def list_invoices(
    account: AccountDep,
    session: SessionDep,
    status: Annotated[InvoiceStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> InvoiceList:
    """The account's invoices, newest first, with what their QuickBooks badges need."""
    statement = select(InvoiceSync).where(InvoiceSync.account_id == account.id)
    if status is not None:
        statement = statement.where(InvoiceSync.status == status.value)
    statement = (
        statement.order_by(col(InvoiceSync.sent_at).desc(), col(InvoiceSync.invoice_id))
        .offset(offset)
        .limit(limit + 1)
    )
    rows = list((await session.exec(statement)).all())
    notifications = await _open_notifications(session, account.id, [row.invoice_id for row in rows[:limit]])
    return InvoiceList(
        invoices=[_to_public(row, notifications.get(row.invoice_id)) for row in rows[:limit]],
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.get("/invoices/{invoice_id}/timeline", responses=error_responses(*ACCOUNT_ROUTE_ERRORS))
async def get_timeline(invoice_id: InvoiceId, account: AccountDep, session: SessionDep) -> Timeline:
    await _invoice_row(session, account.id, invoice_id)
    entries = (
        await session.exec(
            select(TimelineEntry)
            .where(TimelineEntry.account_id == account.id, TimelineEntry.invoice_id == invoice_id)
            .order_by(col(TimelineEntry.id))
        )
    ).all()
    return Timeline(
        invoice_id=invoice_id,
        entries=[
            TimelineEntryPublic(at=entry.at, kind=entry.kind, message=entry.message) for entry in entries
        ],
    )


async def _invoice_row(session: SessionDep, account_id: str, invoice_id: str) -> InvoiceSync:
    row = await session.get(InvoiceSync, (account_id, invoice_id), populate_existing=True)
    if row is None:
        raise ApiError(404, "invoice_not_found", f"Invoice {invoice_id} was never sent through this account.")
    return row


async def _open_notifications(
    session: SessionDep, account_id: str, invoice_ids: list[str]
) -> dict[str, NotificationPublic]:
    if not invoice_ids:
        return {}
    rows = (
        await session.exec(
            select(Notification)
            .where(
                Notification.account_id == account_id,
                col(Notification.invoice_id).in_(invoice_ids),
                col(Notification.resolved_at).is_(None),
            )
            .order_by(col(Notification.id))
        )
    ).all()
    # The newest open notification per invoice.
    return {row.invoice_id: notification_public(row) for row in rows if row.invoice_id is not None}


async def _public(session: SessionDep, row: InvoiceSync) -> InvoiceSyncPublic:
    notifications = await _open_notifications(session, row.account_id, [row.invoice_id])
    return _to_public(row, notifications.get(row.invoice_id))


def _to_public(row: InvoiceSync, notification: NotificationPublic | None) -> InvoiceSyncPublic:
    return InvoiceSyncPublic(
        invoice_id=row.invoice_id,
        number=row.number,
        status=InvoiceStatus(row.status),
        reason=row.reason,
        currency=row.currency,
        total_cents=row.total_cents,
        balance_cents=row.balance_cents,
        quickbooks=QuickBooksBadge(
            synced=row.qbo_invoice_id is not None,
            realm_id=row.realm_id,
            invoice_id=row.qbo_invoice_id,
            customer_id=row.qbo_customer_id,
        ),
        last_error=row.last_error,
        notification=notification,
        sent_at=row.sent_at,
        synced_at=row.synced_at,
        paid_at=row.paid_at,
        voided_at=row.voided_at,
        updated_at=row.updated_at,
    )


def notification_public(row: Notification) -> NotificationPublic:
    assert row.id is not None
    return NotificationPublic(
        id=row.id,
        kind=row.kind,
        message=row.message,
        action=row.action,
        invoice_id=row.invoice_id,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )

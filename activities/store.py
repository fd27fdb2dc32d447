"""Database-facing activities: the read side the API serves (invoices, timelines, notifications)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import col, select, update
from temporalio import activity

from models.connections import company_blocked
from models.crud import add_notification, add_timeline_entry, resolve_notifications
from models.db import SessionFactory
from models.domain import USABLE_CONNECTION_STATUSES, InvoiceStatus
from models.plans import quickbooks_entitled
from models.queries import for_update
from models.tables import Account, InvoiceSync, QuickBooksConnection
from workflows.ids import invoice_workflow_id
from workflows.messages import InvoiceRecord, PauseInput, PauseResult


def _now() -> datetime:
    return datetime.now(UTC)


async def mark_sync_started(sessions: SessionFactory, account_id: str, invoice_id: str) -> None:
    """A sync attempt is under way: a `pending` invoice reads `syncing` from now on, however long its first attempt
    and retries take. Any other status was written by its workflow since, which this never overwrites."""
    async with sessions() as session:
        await session.exec(
            update(InvoiceSync)
            .where(
                col(InvoiceSync.account_id) == account_id,
                col(InvoiceSync.invoice_id) == invoice_id,
                col(InvoiceSync.status) == InvoiceStatus.PENDING.value,
            )
            .values(status=InvoiceStatus.SYNCING.value, updated_at=_now())
        )
        await session.commit()


async def apply_invoice_record(sessions: SessionFactory, record: InvoiceRecord) -> None:
    """Apply one status change of an invoice, with its timeline entry and notification (idempotent)."""
    now = _now()
    values: dict[str, object] = {"status": record.status.value, "updated_at": now}
    for name in (
        "realm_id",
        "qbo_invoice_id",
        "qbo_customer_id",
        "total_cents",
        "balance_cents",
        "qbo_sync_token",
    ):
        value = getattr(record, name)
        if value is not None:
            values[name] = value
    if record.last_error is not None:
        values["last_error"] = record.last_error
    elif record.clear_last_error:
        values["last_error"] = None
    if record.status in (InvoiceStatus.SYNCED, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAID):
        values["reason"] = None
    async with sessions() as session:
        row = await session.get(InvoiceSync, (record.account_id, record.invoice_id))
        if row is None:
            raise LookupError(f"invoice {record.account_id}/{record.invoice_id} has no sync record")
        # First-time timestamps: set once, never moved by a replayed activity.
        if record.status == InvoiceStatus.SYNCED and row.synced_at is None:
            values["synced_at"] = now
        if record.status == InvoiceStatus.PAID and row.paid_at is None:
            values["paid_at"] = now
        if record.status == InvoiceStatus.VOIDED and row.voided_at is None:
            values["voided_at"] = now
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)
        if record.timeline is not None:
            await add_timeline_entry(
                session,
                account_id=record.account_id,
                invoice_id=record.invoice_id,
                kind=record.timeline.kind,
                message=record.timeline.message,
                dedupe_key=record.timeline.dedupe_key,
                at=now,
            )
        if record.notification is not None:
            await add_notification(
                session,
                account_id=record.account_id,
                invoice_id=record.invoice_id,
                kind=record.notification.kind,
                message=record.notification.message,
                action=record.notification.action,
                dedupe_key=record.notification.dedupe_key,
                at=now,
            )
        if record.resolve_notification_kinds:
            await resolve_notifications(
                session,
                account_id=record.account_id,
                invoice_id=record.invoice_id,
                kinds=record.resolve_notification_kinds,
                at=now,
            )
        await session.commit()


class StoreActivities:
    """Writes the invoice read side. Every write is idempotent: activities may run more than once."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    @activity.defn
    async def record_invoice(self, record: InvoiceRecord) -> None:
        """Apply one status change of an invoice, with its timeline entry and notification."""
        await apply_invoice_record(self._sessions, record)

    @activity.defn
    async def pause_invoice(self, request: PauseInput) -> PauseResult:
        """Mark an invoice paused unless its connection is usable again (checked under the connection's lock):
        connected, on the plan, and no blocking finding of the company check.

        The connection workflow sets the status to usable *before* it looks for paused invoices, and this
        check holds the same row lock, so an invoice can never pause unseen right after a reconnect.
        """
        now = _now()
        async with self._sessions() as session:
            statement = select(QuickBooksConnection).where(
                QuickBooksConnection.account_id == request.account_id
            )
            if for_update(session):
                statement = statement.with_for_update()
            connection = (await session.exec(statement)).first()
            account = await session.get(Account, request.account_id)
            entitled = account is not None and quickbooks_entitled(account.plan, account.quickbooks_addon)
            if (
                connection is not None
                and connection.status in USABLE_CONNECTION_STATUSES
                and entitled
                and company_blocked(connection) is None  # the company check found nothing blocking
            ):
                await session.rollback()
                return PauseResult(resume_now=True)
            row = await session.get(InvoiceSync, (request.account_id, request.invoice_id))
            if row is None:
                raise LookupError(f"invoice {request.account_id}/{request.invoice_id} has no sync record")
            if row.status != InvoiceStatus.PAUSED:
                row.status = InvoiceStatus.PAUSED.value
                row.reason = request.reason
                row.updated_at = now
                session.add(row)
                await add_timeline_entry(
                    session,
                    account_id=request.account_id,
                    invoice_id=request.invoice_id,
                    kind="paused",
                    message=f"Syncing paused: {request.reason}",
                    dedupe_key=f"{invoice_workflow_id(request.account_id, request.invoice_id)}/paused/{now.isoformat()}",
                    at=now,
                )
            elif request.reason and row.reason != request.reason:
                # Still paused, now for another reason (reconnected to a company whose settings block syncing).
                row.reason = request.reason
                row.updated_at = now
                session.add(row)
            await session.commit()
            return PauseResult(resume_now=False)

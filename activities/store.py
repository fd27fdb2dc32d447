"""Database-facing activities: the read side the API serves (invoices, timelines, notifications)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from models.db import SessionFactory
from models.plans import quickbooks_entitled
from models.queries import for_update, insert_ignoring_conflicts
from models.tables import Account, InvoiceSync, Notification, QuickBooksConnection, TimelineEntry
from workflows.ids import invoice_workflow_id
from workflows.messages import (
    USABLE_CONNECTION_STATUSES,
    InvoiceRecord,
    InvoiceStatus,
    NotificationItem,
    PauseInput,
    PauseResult,
    TimelineItem,
)


def _now() -> datetime:
    return datetime.now(UTC)


class StoreActivities:
    """Writes the invoice read side. Every write is idempotent: activities may run more than once."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    @activity.defn
    async def record_invoice(self, record: InvoiceRecord) -> None:
        """Apply one status change of an invoice, with its timeline entry and notification."""
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
        async with self._sessions() as session:
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
            await _add_timeline(session, record.account_id, record.invoice_id, record.timeline, now)
            await _add_notification(session, record.account_id, record.invoice_id, record.notification, now)
            if record.resolve_notification_kinds:
                await session.exec(
                    update(Notification)
                    .where(
                        col(Notification.account_id) == record.account_id,
                        col(Notification.invoice_id) == record.invoice_id,
                        col(Notification.kind).in_(record.resolve_notification_kinds),
                        col(Notification.resolved_at).is_(None),
                    )
                    .values(resolved_at=now)
                )
            await session.commit()

    @activity.defn
    async def pause_invoice(self, request: PauseInput) -> PauseResult:
        """Mark an invoice paused unless its connection is usable again (checked under the connection's lock).

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
            if connection is not None and connection.status in USABLE_CONNECTION_STATUSES and entitled:
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
                await _add_timeline(
                    session,
                    request.account_id,
                    request.invoice_id,
                    TimelineItem(
                        kind="paused",
                        message=f"Syncing paused: {request.reason}",
                        dedupe_key=f"{invoice_workflow_id(request.account_id, request.invoice_id)}/paused/{now.isoformat()}",
                    ),
                    now,
                )
            await session.commit()
            return PauseResult(resume_now=False)


async def _add_timeline(
    session: AsyncSession, account_id: str, invoice_id: str, item: TimelineItem | None, now: datetime
) -> None:
    if item is None:
        return
    await insert_ignoring_conflicts(
        session,
        TimelineEntry,
        [
            {
                "account_id": account_id,
                "invoice_id": invoice_id,
                "at": now,
                "kind": item.kind,
                "message": item.message,
                "dedupe_key": item.dedupe_key,
            }
        ],
    )


async def _add_notification(
    session: AsyncSession,
    account_id: str,
    invoice_id: str | None,
    item: NotificationItem | None,
    now: datetime,
) -> None:
    if item is None:
        return
    await insert_ignoring_conflicts(
        session,
        Notification,
        [
            {
                "account_id": account_id,
                "invoice_id": invoice_id,
                "kind": item.kind,
                "message": item.message,
                "action": item.action,
                "created_at": now,
                "dedupe_key": item.dedupe_key,
            }
        ],
    )

"""The change sweep: change data capture since a watermark catches what webhooks missed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client

from activities.heartbeat import heartbeating
from activities.mapping import linked_invoice_ids
from activities.quickbooks_access import QuickBooksAccess, QuickBooksContext, translate_errors
from models.crud import new_event, remember_payment_links, store_events
from models.db import SessionFactory
from models.domain import IN_QUICKBOOKS
from models.tables import InvoiceSync, QuickBooksConnection, utcnow
from qbo.client import parse_server_time, quote
from qbo.webhooks import event_dedupe_key
from workflows.handles import start_realm_events
from workflows.messages import SweepInput, SweepResult

# Sweeps overlap the previous window a little (clock skew) and leave the newest changes to their webhooks.
CDC_OVERLAP = timedelta(minutes=5)
CDC_GRACE = timedelta(minutes=2)
CDC_MAX_LOOKBACK = timedelta(days=29)
# Followed invoices read per query when a sweep's change list was cut (a short statement, one page).
FOLLOWED_READ_BATCH = 200


class ChangeSweepActivities:
    """The connection workflow's periodic sweep, built with the QuickBooks access, database and Temporal."""

    def __init__(
        self, *, access: QuickBooksAccess, sessions: SessionFactory, temporal: Client, task_queue: str
    ) -> None:
        self._access = access
        self._sessions = sessions
        self._temporal = temporal
        self._task_queue = task_queue

    @activity.defn
    async def sweep_changes(self, request: SweepInput) -> SweepResult:
        """Change data capture since the watermark: invoices whose change no webhook brought are fed to the events.

        Changes younger than CDC_GRACE are left for the next sweep, so a webhook still on its way is not
        counted as missed. The watermark is QuickBooks' own clock, never ours.
        """
        async with heartbeating():
            return await self._sweep_changes(request)

    async def _sweep_changes(self, request: SweepInput) -> SweepResult:
        context = await self._access.context(request.account_id)
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, request.account_id)
            assert row is not None
            watermark = row.cdc_watermark or row.connected_at or utcnow()
            # Invoices recorded since the last sweep: what happened to them in QuickBooks before the engine knew
            # their id (a payment whose webhook came first, while the create's answer waited to be recorded) may
            # be older than the window, so they are read by id whatever the change list says.
            recorded_since = (row.cdc_last_sweep_at or row.connected_at or utcnow()) - CDC_OVERLAP
            recorded = (
                await session.exec(
                    select(InvoiceSync.qbo_invoice_id).where(
                        InvoiceSync.account_id == request.account_id,
                        InvoiceSync.realm_id == context.realm_id,
                        col(InvoiceSync.qbo_invoice_id).is_not(None),
                        col(InvoiceSync.status).in_(sorted(IN_QUICKBOOKS)),
                        col(InvoiceSync.synced_at) >= recorded_since,
                    )
                )
            ).all()
        # Intuit looks back at most 30 days; a longer outage is swept from the oldest day it still knows.
        since = max(watermark - CDC_OVERLAP, utcnow() - CDC_MAX_LOOKBACK)
        with translate_errors("the change sweep"):
            changes = await context.client.cdc(["Invoice", "Payment"], since)
            settled_until = changes.server_time - CDC_GRACE
            if changes.may_be_truncated:
                # Intuit cuts the answer at 1,000 objects, cannot page it and does not say which it kept, so the
                # changes past the cut are read another way: every invoice this company's accounts follow, by
                # id, whose current SyncToken no cut can hide. The watermark then moves past the whole window.
                changed, deleted = await self._followed_invoices(context)
            else:
                changed = changes.entities.get("Invoice", [])
                deleted = set(changes.deleted.get("Invoice", []))
            invoices = {
                str(invoice["Id"]): invoice
                for invoice in changed
                if _updated_at(invoice) is None or _updated_at(invoice) <= settled_until  # type: ignore[operator]
            }
            # No grace for these: a webhook still on its way would only bring the same state again.
            late, late_deleted = await self._read_invoices(
                context, sorted({str(qbo_id) for qbo_id in recorded} - set(invoices) - deleted, key=int)
            )
        invoices.update({str(invoice["Id"]): invoice for invoice in late})
        deleted |= late_deleted
        async with self._sessions() as session:
            for payment in changes.entities.get("Payment", []):
                await remember_payment_links(
                    session,
                    realm_id=context.realm_id,
                    payment_id=str(payment["Id"]),
                    qbo_invoice_ids=linked_invoice_ids(payment),
                )
            tracked = (
                await session.exec(
                    select(InvoiceSync).where(
                        InvoiceSync.realm_id == context.realm_id,
                        col(InvoiceSync.qbo_invoice_id).in_(sorted(set(invoices) | deleted)),
                        col(InvoiceSync.status).in_(sorted(IN_QUICKBOOKS)),
                    )
                )
            ).all()
            missed: list[dict[str, Any]] = []
            now = utcnow()
            for row_invoice in tracked:
                qbo_id = str(row_invoice.qbo_invoice_id)
                if qbo_id in deleted:
                    missed.append(_cdc_event(context.realm_id, qbo_id, "Delete", "deleted", now))
                    continue
                sync_token = int(invoices[qbo_id].get("SyncToken") or 0)
                if sync_token > (
                    row_invoice.qbo_sync_token if row_invoice.qbo_sync_token is not None else -1
                ):
                    missed.append(_cdc_event(context.realm_id, qbo_id, "Update", str(sync_token), now))
            caught = await store_events(session, missed)
            connection = await session.get(QuickBooksConnection, request.account_id)
            assert connection is not None
            connection.cdc_watermark = max(settled_until, watermark)
            connection.cdc_last_sweep_at = now
            connection.cdc_caught_total += caught
            session.add(connection)
            await session.commit()
        if caught:
            await start_realm_events(self._temporal, context.realm_id, self._task_queue)
        return SweepResult(caught=caught, changed=len(invoices) + len(deleted))

    async def _followed_invoices(self, context: QuickBooksContext) -> tuple[list[dict[str, Any]], set[str]]:
        """The company's invoices that accounts here follow, as QuickBooks has them now, and those it no longer
        has (deleted)."""
        async with self._sessions() as session:
            followed = (
                await session.exec(
                    select(InvoiceSync.qbo_invoice_id).where(
                        InvoiceSync.realm_id == context.realm_id,
                        col(InvoiceSync.qbo_invoice_id).is_not(None),
                        col(InvoiceSync.status).in_(sorted(IN_QUICKBOOKS)),
                    )
                )
            ).all()
        return await self._read_invoices(context, sorted({str(qbo_id) for qbo_id in followed}, key=int))

    async def _read_invoices(
        self, context: QuickBooksContext, ids: list[str]
    ) -> tuple[list[dict[str, Any]], set[str]]:
        """These invoices as QuickBooks has them now, and the ids of those it no longer has (deleted)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), FOLLOWED_READ_BATCH):
            batch = ids[start : start + FOLLOWED_READ_BATCH]
            found += await context.client.query(
                f"SELECT * FROM Invoice WHERE Id IN ({', '.join(quote(qbo_id) for qbo_id in batch)}) "
                f"MAXRESULTS {FOLLOWED_READ_BATCH}"
            )
            activity.heartbeat(start)
        return found, set(ids) - {str(invoice["Id"]) for invoice in found}


def _updated_at(entity: dict[str, Any]) -> datetime | None:
    return parse_server_time((entity.get("MetaData") or {}).get("LastUpdatedTime"))


def _cdc_event(
    realm_id: str, qbo_invoice_id: str, operation: str, version: str, now: datetime
) -> dict[str, Any]:
    return new_event(
        dedupe_key=event_dedupe_key("cdc", realm_id, "Invoice", qbo_invoice_id, version),
        realm_id=realm_id,
        entity="Invoice",
        entity_id=qbo_invoice_id,
        operation=operation,
        occurred_at=None,
        received_at=now,
        source="cdc",
    )

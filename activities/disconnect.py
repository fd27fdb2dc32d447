"""Disconnecting QuickBooks: stop syncing, "Disconnect & Void" every synced invoice within the company's
limits, then revoke the authorization at Intuit (unless another account holds the same company)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.connection import connection_info
from activities.heartbeat import heartbeating
from activities.invoice_sync import void_in_quickbooks
from activities.quickbooks_access import QuickBooksAccess, QuickBooksContext
from models.connections import voidable_on_disconnect
from models.crud import resolve_notifications
from models.crypto import TokenCipher
from models.db import SessionFactory
from models.domain import (
    AUTHORIZATION_HOLDING_STATUSES,
    CONNECTION_UNAVAILABLE,
    VOID_NOT_DONE,
    ConnectionStatus,
    DisconnectMode,
    VoidOutcome,
)
from models.queries import for_update
from models.tables import InvoiceSync, QuickBooksConnection
from qbo.errors import InvalidClient, QboError, QboOAuthError
from qbo.oauth import QboOAuth
from workflows.ids import invoice_workflow_id, stored_or
from workflows.messages import (
    BeginDisconnectInput,
    BeginDisconnectResult,
    ConnectionChange,
    ConnectionInfo,
    VoidForDisconnectInput,
    VoidForDisconnectResult,
)

logger = logging.getLogger(__name__)

# Voids in flight at once for Disconnect & Void (the per-company limiter caps all calls at 10 and 500/min).
DISCONNECT_VOID_CONCURRENCY = 8
# QuickBooks failing (5xx, no answer) is tried this often per invoice before the invoice counts as failed.
DISCONNECT_VOID_ATTEMPTS = 3
# Invoice workflows told of a batch's outcomes at once.
DISCONNECT_SIGNAL_CONCURRENCY = 16


def _now() -> datetime:
    return datetime.now(UTC)


class DisconnectActivities:
    """Built with the QuickBooks access, the database, Temporal, the token cipher and Intuit's OAuth client.

    `void_for_disconnect` runs on the main task queue (it calls QuickBooks); `begin_disconnect` and
    `finish_disconnect` write the connection and run with the other token activities.
    """

    def __init__(
        self,
        *,
        access: QuickBooksAccess,
        sessions: SessionFactory,
        temporal: Client,
        cipher: TokenCipher,
        oauth: QboOAuth,
    ) -> None:
        self._access = access
        self._sessions = sessions
        self._temporal = temporal
        self._cipher = cipher
        self._oauth = oauth

    @activity.defn
    async def begin_disconnect(self, request: BeginDisconnectInput) -> BeginDisconnectResult:
        """Stop syncing at once (status `disconnecting`) and count what Disconnect & Void has to void."""
        account_id = request.account_id
        now = _now()
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, account_id)
            if row is None:
                raise ApplicationError("no connection to disconnect", non_retryable=True)
            to_void = 0
            if request.mode == DisconnectMode.DISCONNECT_AND_VOID:
                to_void = (
                    await session.exec(
                        select(func.count())
                        .select_from(InvoiceSync)
                        .where(InvoiceSync.account_id == account_id, *voidable_on_disconnect())
                    )
                ).one()
            if row.status != ConnectionStatus.DISCONNECTING:
                row.status = ConnectionStatus.DISCONNECTING.value
                row.status_reason = None
                row.disconnect_mode = request.mode.value
                row.disconnect_total = to_void
                row.disconnect_started_at = now
                row.disconnect_finished_at = None
                row.updated_at = now
                session.add(row)
                await session.commit()
            return BeginDisconnectResult(to_void=row.disconnect_total)

    @activity.defn
    async def finish_disconnect(self, account_id: str) -> ConnectionInfo:
        """Revoke the authorization at Intuit (best effort: it may be dead already) unless another account of
        ours holds the same company, and forget the tokens.

        Intuit documents that revoking a refresh token "disconnects the app from the company": while another
        connection still holds the company, revoking would cut it off, so the tokens are only erased here (they
        lapse at Intuit on their own). The company's connections stay locked from that look to the commit, so of
        two accounts leaving one company at once the second sees the first gone, and revokes.
        """
        async with self._sessions() as session:
            realm_id = (
                await session.exec(
                    select(QuickBooksConnection.realm_id).where(QuickBooksConnection.account_id == account_id)
                )
            ).first()
            company = select(QuickBooksConnection).where(
                QuickBooksConnection.realm_id == realm_id
                if realm_id is not None
                else QuickBooksConnection.account_id == account_id
            )
            if for_update(session):
                # One lock order (by account) for every caller, so two of them never deadlock.
                company = company.order_by(col(QuickBooksConnection.account_id)).with_for_update()
            rows = (await session.exec(company)).all()
            row = next((candidate for candidate in rows if candidate.account_id == account_id), None)
            if row is None:
                raise ApplicationError("no connection to disconnect", non_retryable=True)
            shared = any(
                other.account_id != account_id and other.status in AUTHORIZATION_HOLDING_STATUSES
                for other in rows
            )
            if row.refresh_token_enc is not None and shared:
                logger.info(
                    "%s's authorization is erased, not revoked: another account holds the company", account_id
                )
            elif row.refresh_token_enc is not None:
                try:
                    await self._oauth.revoke(self._cipher.decrypt(row.refresh_token_enc))
                except InvalidClient:
                    raise
                except QboOAuthError as exc:
                    # Intuit could not be asked; the tokens are forgotten here either way and expire on their own.
                    logger.warning("revoking %s's authorization failed: %s", account_id, exc)
            now = _now()
            row.status = ConnectionStatus.DISCONNECTED.value
            row.status_reason = None
            row.access_token_enc = None
            row.refresh_token_enc = None
            row.token_version += 1
            row.disconnect_finished_at = now
            row.updated_at = now
            session.add(row)
            await resolve_notifications(session, account_id=account_id, invoice_id=None, at=now)
            await session.commit()
            return connection_info(row)

    @activity.defn
    async def void_for_disconnect(self, request: VoidForDisconnectInput) -> VoidForDisconnectResult:
        """Void the next batch of the account's synced invoices in QuickBooks, within the company's limits.

        Each outcome is written to the invoice at once (the connection status counts them) and its workflow is
        told. A refusal (e.g. a paid invoice) is recorded as such, never forced.
        """
        async with heartbeating():
            return await self._void_for_disconnect(request)

    async def _void_for_disconnect(self, request: VoidForDisconnectInput) -> VoidForDisconnectResult:
        context: QuickBooksContext | None = None
        lost_reason = ""
        try:
            context = await self._access.context(request.account_id, allow_disconnecting=True)
        except ApplicationError as exc:
            if exc.type != CONNECTION_UNAVAILABLE:
                raise
            lost_reason = exc.message
        async with self._sessions() as session:
            rows = list(
                (
                    await session.exec(
                        select(InvoiceSync)
                        .where(InvoiceSync.account_id == request.account_id, *voidable_on_disconnect())
                        .order_by(col(InvoiceSync.sent_at))
                        .limit(request.batch_size)
                    )
                ).all()
            )
        outcomes: list[tuple[InvoiceSync, VoidOutcome, str | None]]
        if context is None:
            # The authorization died mid-way: what is left cannot be voided; say so on each invoice.
            outcomes = [
                (row, VoidOutcome.FAILED, f"QuickBooks can no longer be reached: {lost_reason}")
                for row in rows
            ]
        else:
            gate = asyncio.Semaphore(DISCONNECT_VOID_CONCURRENCY)
            live = context

            async def void_one(row: InvoiceSync) -> tuple[InvoiceSync, VoidOutcome, str | None]:
                async with gate:
                    outcome, reason = await _void_one(live, row)
                    return row, outcome, reason

            outcomes = list(await asyncio.gather(*(void_one(row) for row in rows)))
        async with self._sessions() as session:
            for row, outcome, reason in outcomes:
                stored = await session.get(InvoiceSync, (row.account_id, row.invoice_id))
                assert stored is not None
                stored.disconnect_outcome = outcome.value
                if reason:
                    stored.last_error = reason
                session.add(stored)
            await session.commit()
            remaining = (
                await session.exec(
                    select(func.count())
                    .select_from(InvoiceSync)
                    .where(InvoiceSync.account_id == request.account_id, *voidable_on_disconnect())
                )
            ).one()
        signal_gate = asyncio.Semaphore(DISCONNECT_SIGNAL_CONCURRENCY)

        async def tell(row: InvoiceSync, outcome: VoidOutcome, reason: str | None) -> None:
            handle = self._temporal.get_workflow_handle(
                stored_or(row.workflow_id, invoice_workflow_id(row.account_id, row.invoice_id))
            )
            change = ConnectionChange(
                usable=False,
                reason=reason,
                disconnect_mode=DisconnectMode.DISCONNECT_AND_VOID.value,
                void_outcome=outcome,
            )
            async with signal_gate:
                try:
                    await handle.signal("connection_changed", change)
                except RPCError as exc:
                    logger.info(
                        "invoice workflow %s not told about the disconnect: %s", handle.id, exc.message
                    )

        # Each invoice's workflow is independent: told side by side, the batch ends sooner and the next starts.
        await asyncio.gather(*(tell(row, outcome, reason) for row, outcome, reason in outcomes))
        failed = sum(1 for _, outcome, _ in outcomes if outcome in VOID_NOT_DONE)
        return VoidForDisconnectResult(voided=len(outcomes) - failed, failed=failed, remaining=remaining)


async def _void_one(context: QuickBooksContext, row: InvoiceSync) -> tuple[VoidOutcome, str | None]:
    """One invoice's void, usually one call (the SyncToken last seen is tried first); QuickBooks failing is tried
    again a few times before the invoice counts as failed."""
    assert row.qbo_invoice_id is not None
    for attempt in range(1, DISCONNECT_VOID_ATTEMPTS + 1):
        try:
            result = await void_in_quickbooks(
                context,
                row.qbo_invoice_id,
                doc_number=row.number,
                workflow_id=stored_or(row.workflow_id, invoice_workflow_id(row.account_id, row.invoice_id)),
                known_sync_token=row.qbo_sync_token,
            )
        except QboError as exc:
            if attempt == DISCONNECT_VOID_ATTEMPTS:
                return (
                    VoidOutcome.FAILED,
                    f"Voiding invoice {row.number} in QuickBooks failed: {exc.readable}",
                )
            await asyncio.sleep(2**attempt)
            continue
        outcome = VoidOutcome.VOIDED if result.outcome == VoidOutcome.ALREADY_VOIDED else result.outcome
        return outcome, result.reason
    raise AssertionError("unreachable")

"""Connection activities: adopt a new authorization, refresh and revoke tokens, record connection status.

These are the only writers of tokens, and only the connection workflow runs them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import case
from sqlmodel import col, func, select, update
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.heartbeat import heartbeating
from models.connections import company_held
from models.crud import add_notification, mark_workflows_started, resolve_notifications
from models.crypto import TokenCipher, encrypted_token_columns
from models.db import SessionFactory
from models.domain import (
    COMPANY_BOUND_STATUSES,
    DIFFERENT_COMPANY,
    UNCONNECTED_STATUSES,
    USABLE_CONNECTION_STATUSES,
    ConnectionStatus,
)
from models.queries import for_update
from models.schemas import snapshot_from_json
from models.tables import InvoiceSync, QuickBooksConnection, QuickBooksGrant
from qbo.errors import InvalidGrant, QboOAuthError
from qbo.oauth import QboOAuth, TokenSet
from workflows.handles import start_invoice_sync, start_realm_events
from workflows.ids import invoice_workflow_id, stored_or
from workflows.messages import (
    AdoptGrantInput,
    AdoptGrantResult,
    ConnectionInfo,
    ConnectionRecord,
    RefreshTokensInput,
    RefreshTokensResult,
    SignalInvoicesInput,
    SignalInvoicesResult,
    TokenLifetimes,
)

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def connection_info(row: QuickBooksConnection) -> ConnectionInfo:
    return ConnectionInfo(
        account_id=row.account_id,
        status=ConnectionStatus(row.status),
        realm_id=row.realm_id,
        token_version=row.token_version,
        connected_at=row.connected_at,
        access_expires_at=row.access_expires_at,
        refresh_expires_at=row.refresh_expires_at,
        refresh_hard_expires_at=row.refresh_hard_expires_at,
        status_reason=row.status_reason,
        company_name=row.company_name,
    )


class ConnectionActivities:
    """Token lifecycle and connection status, built with the database, the cipher and Intuit's OAuth client."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        cipher: TokenCipher,
        oauth: QboOAuth,
        temporal: Client,
        task_queue: str,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._oauth = oauth
        self._temporal = temporal
        self._task_queue = task_queue

    @activity.defn
    async def adopt_grant(self, request: AdoptGrantInput) -> AdoptGrantResult:
        """Make a freshly authorized grant the account's connection (idempotent: a replay changes nothing)."""
        now = _now()
        async with self._sessions() as session:
            grant = await session.get(QuickBooksGrant, request.grant_id)
            if grant is None or grant.account_id != request.account_id:
                raise ApplicationError(f"grant {request.grant_id} does not exist", non_retryable=True)
            statement = select(QuickBooksConnection).where(
                QuickBooksConnection.account_id == request.account_id
            )
            if for_update(session):
                statement = statement.with_for_update()
            row = (await session.exec(statement)).first()
            if grant.adopted_at is not None:
                assert row is not None
                return AdoptGrantResult(info=connection_info(row), lifetimes=lifetimes_from_row(row))
            if grant.access_token_enc is None or grant.refresh_token_enc is None:
                # The callback withdrew it (the workflow could not be told in time) and dropped its tokens.
                raise ApplicationError(f"grant {request.grant_id} was withdrawn", non_retryable=True)
            if row is None:
                row = QuickBooksConnection(
                    account_id=request.account_id,
                    status=ConnectionStatus.NOT_CONNECTED,
                    workflow_id=activity.info().workflow_id,
                )
            previous_realm = row.realm_id
            realm_changed = previous_realm is not None and previous_realm != grant.realm_id
            if realm_changed and row.status in COMPANY_BOUND_STATUSES:
                # The callback checks this too, but two sign-ins can both pass it before either is adopted: the
                # connection's one writer keeps the account on its company. The grant's tokens go (revoked
                # unless another connection holds that company, which revoking would cut off).
                refresh_token = self._cipher.decrypt(grant.refresh_token_enc)
                grant.access_token_enc = None
                grant.refresh_token_enc = None
                session.add(grant)
                await session.commit()
                if not await company_held(session, grant.realm_id):
                    await self._revoke_unwanted(refresh_token)
                raise ApplicationError(
                    f"grant {request.grant_id} is for another company than the connection's",
                    type=DIFFERENT_COMPANY,
                    non_retryable=True,
                )
            # The connection date is when this company was connected; a reconnect after expiry keeps it.
            if realm_changed or row.connected_at is None or row.status in UNCONNECTED_STATUSES:
                row.connected_at = now
            row.realm_id = grant.realm_id
            row.company_name = grant.company_name
            row.access_token_enc = grant.access_token_enc
            row.refresh_token_enc = grant.refresh_token_enc
            row.access_expires_at = grant.access_expires_at
            row.refresh_expires_at = grant.refresh_expires_at
            row.refresh_hard_expires_at = grant.refresh_hard_expires_at
            row.token_version += 1
            row.status = ConnectionStatus.CONNECTED.value
            row.status_reason = None
            row.last_refreshed_at = now
            row.updated_at = now
            if realm_changed or row.disconnect_mode is not None:
                # A new start: the previous company's sweeps and disconnect are history.
                row.cdc_watermark = None
                row.disconnect_mode = None
                row.disconnect_total = 0
                row.disconnect_started_at = row.disconnect_finished_at = None
            # The connection row now holds the only copy of these tokens.
            grant.access_token_enc = None
            grant.refresh_token_enc = None
            grant.adopted_at = now
            session.add(row)
            session.add(grant)
            await session.commit()
            return AdoptGrantResult(
                info=connection_info(row),
                realm_changed=realm_changed,
                previous_realm_id=previous_realm,
                lifetimes=lifetimes_from_row(row),
            )

    async def _revoke_unwanted(self, refresh_token: str) -> None:
        try:
            await self._oauth.revoke(refresh_token)
        except QboOAuthError as exc:
            logger.warning("could not revoke an unwanted authorization: %s", exc)

    @activity.defn
    async def settle_connecting(self, account_id: str) -> ConnectionInfo | None:
        """A connection left `connecting` by an authorization that was not adopted goes back to what it was
        (never connected, or disconnected), unless another authorization is still waiting to be adopted."""
        async with self._sessions() as session:
            statement = select(QuickBooksConnection).where(QuickBooksConnection.account_id == account_id)
            if for_update(session):
                statement = statement.with_for_update()
            row = (await session.exec(statement)).first()
            if row is None or row.status != ConnectionStatus.CONNECTING:
                return connection_info(row) if row is not None else None
            waiting = (
                await session.exec(
                    select(func.count())
                    .select_from(QuickBooksGrant)
                    .where(
                        QuickBooksGrant.account_id == account_id,
                        col(QuickBooksGrant.adopted_at).is_(None),
                        col(QuickBooksGrant.access_token_enc).is_not(None),
                    )
                )
            ).one()
            if not waiting:
                row.status = (
                    ConnectionStatus.DISCONNECTED
                    if row.connected_at is not None
                    else ConnectionStatus.NOT_CONNECTED
                ).value
                row.updated_at = _now()
                session.add(row)
                await session.commit()
            return connection_info(row)

    @activity.defn
    async def refresh_tokens(self, request: RefreshTokensInput) -> RefreshTokensResult:
        """Exchange the refresh token for new tokens and store both before anyone uses the new access token.

        Retried safely: if Intuit's answer was lost, the previous refresh token still works for 24 hours, and a
        retry after the new tokens were stored sees the newer version and does nothing.
        """
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, request.account_id)
            if row is None:
                raise ApplicationError("no connection to refresh", non_retryable=True)
            if row.token_version != request.expected_version or row.status not in USABLE_CONNECTION_STATUSES:
                return RefreshTokensResult(
                    info=connection_info(row), refreshed=False, lifetimes=lifetimes_from_row(row)
                )
            assert row.refresh_token_enc is not None
            refresh_token = self._cipher.decrypt(row.refresh_token_enc)

        try:
            async with heartbeating():
                tokens = await self._oauth.refresh(refresh_token)
        except InvalidGrant:
            reason = (
                "QuickBooks no longer accepts this connection's authorization (it was revoked or expired)."
            )
            info = await self._mark_expired(request.account_id, request.expected_version, reason)
            return RefreshTokensResult(info=info, refreshed=False, expired=True, reason=reason)

        async with self._sessions() as session:
            now = _now()
            values = encrypted_token_columns(self._cipher, tokens)
            result = await session.exec(
                update(QuickBooksConnection)
                .where(
                    col(QuickBooksConnection.account_id) == request.account_id,
                    col(QuickBooksConnection.token_version) == request.expected_version,
                )
                .values(
                    **values,
                    token_version=request.expected_version + 1,
                    last_refreshed_at=now,
                    updated_at=now,
                )
            )
            await session.commit()
            row = await session.get(QuickBooksConnection, request.account_id, populate_existing=True)
            assert row is not None
            refreshed = getattr(result, "rowcount", 0) == 1
            lifetimes = lifetimes_from_tokens(tokens) if refreshed else lifetimes_from_row(row)
            return RefreshTokensResult(info=connection_info(row), refreshed=refreshed, lifetimes=lifetimes)

    @activity.defn
    async def record_connection(self, record: ConnectionRecord) -> ConnectionInfo:
        """Set a connection's status (with its notification), e.g. expiring, expired or disconnected."""
        now = _now()
        async with self._sessions() as session:
            statement = select(QuickBooksConnection).where(
                QuickBooksConnection.account_id == record.account_id
            )
            if for_update(session):
                statement = statement.with_for_update()
            row = (await session.exec(statement)).first()
            if row is None:
                raise ApplicationError("no connection to record", non_retryable=True)
            row.status = record.status.value
            row.status_reason = record.reason
            row.updated_at = now
            if record.status in UNCONNECTED_STATUSES:
                row.access_token_enc = None
                row.refresh_token_enc = None
            session.add(row)
            if record.notification is not None:
                await add_notification(
                    session,
                    account_id=record.account_id,
                    invoice_id=None,
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
                    invoice_id=None,
                    kinds=record.resolve_notification_kinds,
                    at=now,
                )
            await session.commit()
            return connection_info(row)

    @activity.defn
    async def signal_invoices(self, request: SignalInvoicesInput) -> SignalInvoicesResult:
        """Tell the account's invoice workflows in the given statuses that the connection changed. An invoice
        whose workflow the API has not started yet (sent a moment ago, or while Temporal was away) is started with
        the change (signal-with-start): it must not miss a disconnect and sync later into another company."""
        async with self._sessions() as session:
            # The snapshot only of an invoice still to start: an account may have thousands of open invoices,
            # and few are.
            rows = (
                await session.exec(
                    select(
                        InvoiceSync.invoice_id,
                        InvoiceSync.workflow_id,
                        InvoiceSync.status,
                        case(
                            (col(InvoiceSync.workflow_started_at).is_(None), col(InvoiceSync.snapshot))
                        ).label("to_start"),
                    ).where(
                        InvoiceSync.account_id == request.account_id,
                        col(InvoiceSync.status).in_([status.value for status in request.statuses]),
                    )
                )
            ).all()
        signalled = 0
        for batch_start in range(0, len(rows), 50):
            batch = rows[batch_start : batch_start + 50]
            results = await asyncio.gather(*(self._tell_invoice(request, row) for row in batch))
            signalled += sum(results)
            started = [
                (request.account_id, invoice_id)
                for (invoice_id, _, _, to_start), told in zip(batch, results, strict=True)
                if told and to_start is not None
            ]
            if started:
                async with self._sessions() as session:
                    await mark_workflows_started(session, started, at=_now())
                    await session.commit()
            activity.heartbeat(batch_start)
        return SignalInvoicesResult(signalled=signalled)

    async def _tell_invoice(
        self, request: SignalInvoicesInput, row: tuple[str, str | None, str, str | None]
    ) -> int:
        """Signal the invoice's workflow, or start it with the change when it is still to start (`snapshot`, the
        body it is started with, is set only then)."""
        invoice_id, stored_workflow_id, status, snapshot = row
        workflow_id = stored_or(stored_workflow_id, invoice_workflow_id(request.account_id, invoice_id))
        if snapshot is None:
            return await self._signal_connection_changed(request, workflow_id)
        try:
            await start_invoice_sync(
                self._temporal,
                task_queue=self._task_queue,
                workflow_id=workflow_id,
                account_id=request.account_id,
                invoice_id=invoice_id,
                snapshot=snapshot_from_json(snapshot),
                status=status,
                connection_changed=request.change,
            )
        except RPCError as exc:
            # The activity fails on what Temporal does not take (the signals of the others are sent): retried.
            raise ApplicationError(
                f"invoice workflow {workflow_id} not started with the change: {exc.status.name}"
            ) from exc
        return 1

    @activity.defn
    async def drain_realm_events(self, realm_id: str) -> None:
        """Have the company's events workflow process what waited while no connection was usable."""
        await start_realm_events(self._temporal, realm_id, self._task_queue)

    async def _signal_connection_changed(self, request: SignalInvoicesInput, workflow_id: str) -> int:
        handle = self._temporal.get_workflow_handle(workflow_id)
        try:
            await handle.signal("connection_changed", request.change)
        except RPCError as exc:
            # A workflow that already finished has nothing left to resume.
            logger.info("invoice workflow %s not signalled: %s", workflow_id, exc.message)
            return 0
        return 1

    async def _mark_expired(self, account_id: str, expected_version: int, reason: str) -> ConnectionInfo:
        async with self._sessions() as session:
            now = _now()
            await session.exec(
                update(QuickBooksConnection)
                .where(
                    col(QuickBooksConnection.account_id) == account_id,
                    col(QuickBooksConnection.token_version) == expected_version,
                )
                .values(
                    status=ConnectionStatus.EXPIRED.value,
                    status_reason=reason,
                    access_token_enc=None,
                    refresh_token_enc=None,
                    updated_at=now,
                )
            )
            await session.commit()
            row = await session.get(QuickBooksConnection, account_id, populate_existing=True)
            assert row is not None
            return connection_info(row)


def lifetimes_from_tokens(tokens: TokenSet) -> TokenLifetimes:
    return TokenLifetimes(
        access_seconds=float(tokens.expires_in),
        refresh_seconds=float(tokens.refresh_token_expires_in) if tokens.refresh_token_expires_in else None,
        hard_seconds=float(tokens.refresh_token_hard_expires_in)
        if tokens.refresh_token_hard_expires_in
        else None,
    )


def lifetimes_from_row(row: QuickBooksConnection) -> TokenLifetimes:
    now = _now()

    def left(at: datetime | None) -> float | None:
        return (at - now).total_seconds() if at is not None else None

    return TokenLifetimes(
        access_seconds=max(left(row.access_expires_at) or 0.0, 0.0),
        refresh_seconds=left(row.refresh_expires_at),
        hard_seconds=left(row.refresh_hard_expires_at),
    )

"""QuickBooks-facing activities: sync an invoice, void it, and turn stored QuickBooks events into signals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.connection import start_realm_events, voidable_on_disconnect
from activities.heartbeat import heartbeating
from activities.mapping import (
    SERVICE_ITEM_NAME,
    customer_body,
    customer_display_names,
    customer_email,
    deleted_invoice,
    invoice_body,
    is_ours,
    is_voided,
    linked_invoice_ids,
    observe_invoice,
    pick_income_account,
)
from models.crypto import TokenCipher
from models.db import SessionFactory
from models.plans import quickbooks_entitled
from models.queries import insert_ignoring_conflicts, upsert
from models.tables import (
    Account,
    InvoiceSync,
    PaymentLink,
    QuickBooksConnection,
    QuickBooksEvent,
    RealmCacheEntry,
    utcnow,
)
from qbo.client import QboClient, parse_server_time, quote, request_id
from qbo.errors import (
    QboAuthenticationError,
    QboAuthorizationError,
    QboDuplicateDocNumber,
    QboDuplicateName,
    QboError,
    QboNotFound,
    QboStaleObject,
    QboValidationError,
)
from qbo.limits import RealmLimiter
from qbo.webhooks import event_dedupe_key
from workflows.ids import connection_workflow_id, invoice_workflow_id
from workflows.messages import (
    CONNECTION_UNAVAILABLE,
    QUICKBOOKS_REJECTED,
    USABLE_CONNECTION_STATUSES,
    ConnectionChange,
    ConnectionStatus,
    DisconnectMode,
    FailureReason,
    HealthResult,
    InvoiceObservation,
    InvoiceStatus,
    ProcessEventsInput,
    ProcessEventsResult,
    RefreshRequest,
    RefreshResult,
    SweepInput,
    SweepResult,
    SyncInvoiceInput,
    SyncInvoiceResult,
    VoidForDisconnectInput,
    VoidForDisconnectResult,
    VoidInvoiceInput,
    VoidInvoiceResult,
)

logger = logging.getLogger(__name__)

# Refresh a little before Intuit's expiry so a call never starts with a token about to die.
ACCESS_TOKEN_MARGIN = timedelta(seconds=60)
# Events that failed this many times are parked as `failed` (visible to operators) instead of retried forever.
EVENT_MAX_ATTEMPTS = 10
# Sweeps overlap the previous window a little (clock skew) and leave the newest changes to their webhooks.
CDC_OVERLAP = timedelta(minutes=5)
CDC_GRACE = timedelta(minutes=2)
CDC_MAX_LOOKBACK = timedelta(days=29)
# Followed invoices read per query when a sweep's change list was cut (a short statement, one page).
FOLLOWED_READ_BATCH = 200
# Voids in flight at once for Disconnect & Void (the per-company limiter caps all calls at 10 and 500/min).
DISCONNECT_VOID_CONCURRENCY = 8
DISCONNECT_VOID_ATTEMPTS = 3
# Invoice workflows told of a batch's outcomes at once.
DISCONNECT_SIGNAL_CONCURRENCY = 16
# Invoices whose QuickBooks state is still followed (sweeps look only at these).
_FOLLOWED_STATUSES = [
    InvoiceStatus.SYNCED.value,
    InvoiceStatus.PARTIALLY_PAID.value,
    InvoiceStatus.PAID.value,
]


def connection_unavailable(reason: str) -> ApplicationError:
    return ApplicationError(reason, type=CONNECTION_UNAVAILABLE, non_retryable=True)


def rejected(what: str, exc: QboError) -> ApplicationError:
    """A QuickBooks validation fault: no retry can fix it, and the user needs to read why.

    The message names the fault only (the SDK logs it); Intuit's words, which can echo what was sent, are the
    reason the user reads, encrypted in the details.
    """
    detail = exc.detail or exc.message
    reason = f"QuickBooks rejected {what}: {exc.message}" + (f" ({detail})" if detail != exc.message else "")
    return ApplicationError(
        f"QuickBooks rejected {what}: {exc}",
        FailureReason(reason),
        type=QUICKBOOKS_REJECTED,
        non_retryable=True,
    )


def quickbooks_failed(exc: QboError) -> ApplicationError:
    """A failure a retry may fix, typed by its class; the message names codes only, the reason has Intuit's words."""
    return ApplicationError(str(exc), FailureReason(exc.readable), type=type(exc).__name__)


class ConnectionTokens:
    """The TokenSource of one account: reads tokens from the database, asks the connection workflow to refresh.

    Refreshing goes through the connection workflow's `refresh_access_token` update, so however many
    activities hit a 401 at once, Intuit sees one refresh.
    """

    def __init__(
        self,
        *,
        account_id: str,
        sessions: SessionFactory,
        cipher: TokenCipher,
        temporal: Client,
        allow_disconnecting: bool = False,
    ):
        self._account_id = account_id
        self._allow_disconnecting = allow_disconnecting
        self._sessions = sessions
        self._cipher = cipher
        self._temporal = temporal
        self._access: str | None = None
        self._version = -1
        self._expires_at: datetime | None = None
        self.realm_id: str | None = None

    async def load(self) -> None:
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, self._account_id)
            account = await session.get(Account, self._account_id)
        usable = USABLE_CONNECTION_STATUSES | (
            {ConnectionStatus.DISCONNECTING} if self._allow_disconnecting else set()
        )
        if row is None or row.status not in usable or row.access_token_enc is None:
            raise connection_unavailable(_unusable_reason(row))
        # Disconnect & Void still voids after a downgrade: the user asked for it while disconnecting.
        if not self._allow_disconnecting and (
            account is None or not quickbooks_entitled(account.plan, account.quickbooks_addon)
        ):
            raise connection_unavailable("The account's plan no longer includes QuickBooks.")
        self._access = self._cipher.decrypt(row.access_token_enc)
        self._version = row.token_version
        self._expires_at = row.access_expires_at
        self.realm_id = row.realm_id

    async def access_token(self) -> str:
        if self._access is None:
            await self.load()
        if self._expires_at is not None and self._expires_at - ACCESS_TOKEN_MARGIN <= datetime.now(UTC):
            await self._refresh()
        assert self._access is not None
        return self._access

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        await self._refresh()
        assert self._access is not None
        return self._access

    async def _refresh(self) -> None:
        handle = self._temporal.get_workflow_handle(connection_workflow_id(self._account_id))
        try:
            result = await handle.execute_update(
                "refresh_access_token", RefreshRequest(seen_version=self._version), result_type=RefreshResult
            )
        except RPCError as exc:
            raise connection_unavailable(
                f"The QuickBooks connection is not running ({exc.message})."
            ) from exc
        if not result.usable:
            raise connection_unavailable(
                f"QuickBooks connection is {result.status.value}; reconnect to resume."
            )
        await self.load()


@dataclass
class QuickBooksContext:
    """What a QuickBooks activity works with: one realm's client, bound to one account's tokens."""

    account_id: str
    realm_id: str
    client: QboClient


class QuickBooksActivities:
    """Activities that call QuickBooks, built with the database, the HTTP client and the per-realm limiter."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        cipher: TokenCipher,
        temporal: Client,
        http: httpx.AsyncClient,
        limiter: RealmLimiter,
        api_base_url: str,
        task_queue: str,
        minor_version: int = 75,
        timeout: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._temporal = temporal
        self._http = http
        self._limiter = limiter
        self._api_base_url = api_base_url
        self._task_queue = task_queue
        self._minor_version = minor_version
        self._timeout = timeout

    # --- Invoice sync -----------------------------------------------------------------------------------

    @activity.defn
    async def sync_invoice(self, request: SyncInvoiceInput) -> SyncInvoiceResult:
        """Find or create the customer, ensure the service item, create the invoice: exactly once.

        An earlier attempt whose outcome is unknown (timeout, 5xx, crash) may have created the invoice, so any
        attempt after the first looks it up by number (and our PrivateNote marker) before writing again.
        """
        async with heartbeating():
            return await self._sync_invoice(request)

    async def _sync_invoice(self, request: SyncInvoiceInput) -> SyncInvoiceResult:
        context = await self._context(request.account_id)
        snapshot = request.snapshot
        with translate_errors("the invoice"):
            customer_id = await self._ensure_customer(context, snapshot.client_name, snapshot.client_email)
            item_id = await self._ensure_service_item(context)
            if request.may_exist or activity.info().attempt > 1:
                existing = await self._find_our_invoice(context, snapshot.number, request.workflow_id)
                if existing is not None:
                    return _sync_result(context, existing, customer_id, found_existing=True)
            body = invoice_body(
                snapshot, customer_id=customer_id, item_id=item_id, workflow_id=request.workflow_id
            )
            write_id = request_id(
                request.workflow_id, "invoice.create", str(request.generation), _digest(body)
            )
            try:
                created = await context.client.create("Invoice", body, request_id=write_id)
            except QboDuplicateDocNumber as exc:
                existing = await self._find_our_invoice(context, snapshot.number, request.workflow_id)
                if existing is not None:
                    return _sync_result(context, existing, customer_id, found_existing=True)
                raise ApplicationError(
                    f"Invoice number {snapshot.number} is already used by another invoice in QuickBooks.",
                    exc.code or "",
                    type=QUICKBOOKS_REJECTED,
                    non_retryable=True,
                ) from exc
            except QboNotFound:
                # A remembered customer or item was deleted or made inactive in QuickBooks: look them up again.
                await self._forget(context.realm_id, ("customer", snapshot.client_email.strip().lower()))
                await self._forget(context.realm_id, ("item", SERVICE_ITEM_NAME))
                raise
            return _sync_result(context, created, customer_id, found_existing=False)

    async def _ensure_customer(self, context: QuickBooksContext, name: str, email: str) -> str:
        key = email.strip().lower()
        cached = await self._cached(context.realm_id, "customer", key)
        if cached is not None:
            return cached
        found = await self._customer_by_email(context, email)
        if found is None:
            found = await self._create_customer(context, name, email)
        await self._remember(context.realm_id, "customer", key, found)
        return found

    async def _customer_by_email(self, context: QuickBooksContext, email: str) -> str | None:
        key = email.strip().lower()
        candidates = {email.strip(), key}
        matches: dict[str, dict[str, Any]] = {}
        for address in candidates:
            rows = await context.client.query(
                f"SELECT * FROM Customer WHERE PrimaryEmailAddr = {quote(address)}"
            )
            # Checked here too: QuickBooks' matching rules are not documented, and a stranger must never match.
            matches.update({str(row["Id"]): row for row in rows if customer_email(row) == key})
        if not matches:
            return None
        return min(matches, key=int)

    async def _create_customer(self, context: QuickBooksContext, name: str, email: str) -> str:
        for display_name in customer_display_names(name, email):
            body = customer_body(display_name, name, email)
            write_id = request_id(context.realm_id, "customer.create", email.strip().lower(), display_name)
            try:
                created = await context.client.create("Customer", body, request_id=write_id)
                return str(created["Id"])
            except QboDuplicateName:
                # Maybe a concurrent sync just created our customer; otherwise the name belongs to someone else.
                found = await self._customer_by_email(context, email)
                if found is not None:
                    return found
                owner = await self._customer_by_display_name(context, display_name)
                if owner is not None and customer_email(owner) == email.strip().lower():
                    return str(owner["Id"])
        # No name here: this text is the error's message, and the user knows whose invoice it is.
        raise ApplicationError(
            "Could not create a QuickBooks customer for this invoice's client: their name, and their name with "
            "their email, are all taken by other customers, vendors or employees in QuickBooks.",
            type=QUICKBOOKS_REJECTED,
            non_retryable=True,
        )

    async def _customer_by_display_name(
        self, context: QuickBooksContext, display_name: str
    ) -> dict[str, Any] | None:
        rows = await context.client.query(
            f"SELECT * FROM Customer WHERE DisplayName = {quote(display_name)} AND Active IN (true, false)"
        )
        return rows[0] if rows else None

    async def _ensure_service_item(self, context: QuickBooksContext) -> str:
        cached = await self._cached(context.realm_id, "item", SERVICE_ITEM_NAME)
        if cached is not None:
            return cached
        rows = await context.client.query(f"SELECT * FROM Item WHERE Name = {quote(SERVICE_ITEM_NAME)}")
        if rows:
            item_id = str(rows[0]["Id"])
        else:
            item_id = await self._create_service_item(context)
        await self._remember(context.realm_id, "item", SERVICE_ITEM_NAME, item_id)
        return item_id

    async def _create_service_item(self, context: QuickBooksContext) -> str:
        accounts = await context.client.query("SELECT * FROM Account WHERE AccountType = 'Income'")
        income = pick_income_account(accounts)
        if income is None:
            raise ApplicationError(
                "The QuickBooks company has no active income account for the Professional Services item.",
                type=QUICKBOOKS_REJECTED,
                non_retryable=True,
            )
        body = {
            "Name": SERVICE_ITEM_NAME,
            "Type": "Service",
            "IncomeAccountRef": {"value": str(income["Id"])},
        }
        try:
            created = await context.client.create(
                "Item", body, request_id=request_id(context.realm_id, "item.create", SERVICE_ITEM_NAME)
            )
            return str(created["Id"])
        except QboDuplicateName:
            # The item exists but is inactive (queries only return active ones): bring it back.
            rows = await context.client.query(
                f"SELECT * FROM Item WHERE Name = {quote(SERVICE_ITEM_NAME)} AND Active = false"
            )
            if not rows:
                raise
            item = rows[0]
            reactivated = await context.client.update(
                "Item",
                {"Id": item["Id"], "SyncToken": item["SyncToken"], "sparse": True, "Active": True},
                request_id=request_id(
                    context.realm_id, "item.reactivate", str(item["Id"]), str(item["SyncToken"])
                ),
            )
            return str(reactivated["Id"])

    async def _find_our_invoice(
        self, context: QuickBooksContext, number: str, workflow_id: str
    ) -> dict[str, Any] | None:
        rows = await context.client.query(f"SELECT * FROM Invoice WHERE DocNumber = {quote(number)}")
        ours = [row for row in rows if is_ours(row, workflow_id)]
        return min(ours, key=lambda row: int(row["Id"])) if ours else None

    # --- Void -------------------------------------------------------------------------------------------

    @activity.defn
    async def void_invoice(self, request: VoidInvoiceInput) -> VoidInvoiceResult:
        """Void the QuickBooks invoice, reading its live SyncToken first. A refusal is reported, not forced."""
        async with heartbeating():
            return await self._void_invoice(request)

    async def _void_invoice(self, request: VoidInvoiceInput) -> VoidInvoiceResult:
        context = await self._context(request.account_id)
        with translate_errors("the void"):
            invoice: dict[str, Any] | None = None
            if request.qbo_invoice_id is None:
                invoice = await self._find_our_invoice(context, request.doc_number, request.workflow_id)
                if invoice is None:
                    return VoidInvoiceResult(outcome="not_in_quickbooks")
            else:
                try:
                    invoice = await context.client.read("Invoice", request.qbo_invoice_id)
                except QboNotFound:
                    return VoidInvoiceResult(outcome="not_in_quickbooks")
            if is_voided(invoice):
                return VoidInvoiceResult(
                    outcome="already_voided",
                    observation=observe_invoice(context.realm_id, invoice, source="read"),
                )
            sync_token = str(invoice["SyncToken"])
            write_id = request_id(request.workflow_id, "invoice.void", str(request.generation), sync_token)
            try:
                voided = await context.client.void_invoice(
                    str(invoice["Id"]), sync_token, request_id=write_id
                )
            except QboStaleObject:
                raise  # changed since we read it: the retry reads the new SyncToken
            except QboValidationError as exc:
                detail = exc.detail or exc.message
                return VoidInvoiceResult(
                    outcome="refused",
                    reason=f"QuickBooks refused to void invoice {request.doc_number}: {detail}",
                    observation=observe_invoice(context.realm_id, invoice, source="read"),
                )
            return VoidInvoiceResult(
                outcome="voided", observation=observe_invoice(context.realm_id, voided, source="read")
            )

    # --- Events (webhooks and CDC) ----------------------------------------------------------------------

    @activity.defn
    async def process_pending_events(self, request: ProcessEventsInput) -> ProcessEventsResult:
        """Read what changed in QuickBooks for a batch of stored events and signal the affected invoices.

        Payments lead to invoices through their LinkedTxn (remembered, for when a payment is deleted later).
        Each affected invoice is read once per batch and its workflow gets the fresh state, so duplicates and
        out-of-order deliveries cannot move an invoice backwards.
        """
        async with heartbeating():
            return await self._process_pending_events(request)

    async def _process_pending_events(self, request: ProcessEventsInput) -> ProcessEventsResult:
        async with self._sessions() as session:
            events = list(
                (
                    await session.exec(
                        select(QuickBooksEvent)
                        .where(
                            QuickBooksEvent.realm_id == request.realm_id, QuickBooksEvent.status == "pending"
                        )
                        .order_by(col(QuickBooksEvent.id))
                        .limit(request.batch_size + 1)
                    )
                ).all()
            )
        more_pending = len(events) > request.batch_size
        events = events[: request.batch_size]
        if not events:
            return ProcessEventsResult(processed=0, deferred=0, invoices_signalled=0, more_pending=False)

        context = await self._realm_context(request.realm_id)
        if context is None:
            if await self._realm_may_come_back(request.realm_id):
                # The connection is expired or paused by the plan: the events wait; a reconnect drains them.
                return ProcessEventsResult(
                    processed=0, deferred=len(events), invoices_signalled=0, more_pending=False
                )
            # No account follows this company any more (disconnected): nothing is left to update.
            await self._finish_events(events, {event.id: ("ignored", None) for event in events if event.id})
            return ProcessEventsResult(
                processed=len(events), deferred=0, invoices_signalled=0, more_pending=more_pending
            )

        outcomes: dict[int, tuple[str, str | None]] = {}
        invoice_ids: set[str] = set()
        payments_seen: set[str] = set()
        for event in events:
            assert event.id is not None
            try:
                if event.entity == "Invoice":
                    # Our own creates and e-mails change nothing we follow.
                    if event.operation in ("Create", "Emailed"):
                        outcomes[event.id] = ("ignored", None)
                        continue
                    invoice_ids.add(event.entity_id)
                elif event.entity == "Payment":
                    if event.entity_id not in payments_seen:
                        payments_seen.add(event.entity_id)
                        invoice_ids |= await self._payment_invoices(context, event.entity_id)
                else:
                    outcomes[event.id] = ("ignored", None)
                    continue
                outcomes[event.id] = ("processed", None)
            except ApplicationError as exc:
                if exc.type == CONNECTION_UNAVAILABLE:
                    return ProcessEventsResult(
                        processed=0, deferred=len(events), invoices_signalled=0, more_pending=False
                    )
                outcomes[event.id] = ("error", str(exc))
            except QboError as exc:
                outcomes[event.id] = ("error", str(exc))

        signalled = await self._signal_invoices(context, invoice_ids)
        await self._finish_events(events, outcomes)
        return ProcessEventsResult(
            processed=sum(1 for status, _ in outcomes.values() if status != "error"),
            deferred=0,
            invoices_signalled=signalled,
            more_pending=more_pending,
        )

    async def _payment_invoices(self, context: QuickBooksContext, payment_id: str) -> set[str]:
        linked: set[str] = set()
        try:
            payment = await context.client.read("Payment", payment_id)
            linked = linked_invoice_ids(payment)
        except QboNotFound:
            pass  # deleted: the remembered links below say which invoices it had paid
        async with self._sessions() as session:
            await insert_ignoring_conflicts(
                session,
                PaymentLink,
                [
                    {"realm_id": context.realm_id, "payment_id": payment_id, "qbo_invoice_id": invoice_id}
                    for invoice_id in sorted(linked)
                ],
            )
            await session.commit()
            remembered = (
                await session.exec(
                    select(PaymentLink.qbo_invoice_id).where(
                        PaymentLink.realm_id == context.realm_id, PaymentLink.payment_id == payment_id
                    )
                )
            ).all()
        return linked | set(remembered)

    async def _signal_invoices(self, context: QuickBooksContext, qbo_invoice_ids: set[str]) -> int:
        if not qbo_invoice_ids:
            return 0
        async with self._sessions() as session:
            tracked = (
                await session.exec(
                    select(InvoiceSync).where(
                        InvoiceSync.realm_id == context.realm_id,
                        col(InvoiceSync.qbo_invoice_id).in_(sorted(qbo_invoice_ids)),
                        col(InvoiceSync.status).not_in(
                            [InvoiceStatus.VOIDED.value, InvoiceStatus.DISCONNECTED.value]
                        ),
                    )
                )
            ).all()
        observations: dict[str, InvoiceObservation] = {}
        signalled = 0
        for row in tracked:
            assert row.qbo_invoice_id is not None
            observation = observations.get(row.qbo_invoice_id)
            if observation is None:
                try:
                    invoice = await context.client.read("Invoice", row.qbo_invoice_id)
                    observation = observe_invoice(context.realm_id, invoice, source="webhook")
                except QboNotFound:
                    observation = deleted_invoice(context.realm_id, row.qbo_invoice_id, source="webhook")
                observations[row.qbo_invoice_id] = observation
            handle = self._temporal.get_workflow_handle(invoice_workflow_id(row.account_id, row.invoice_id))
            try:
                await handle.signal("quickbooks_invoice_changed", observation)
                signalled += 1
            except RPCError as exc:
                logger.info("invoice workflow %s not signalled: %s", handle.id, exc.message)
        return signalled

    async def _finish_events(
        self, events: list[QuickBooksEvent], outcomes: dict[int, tuple[str, str | None]]
    ) -> None:
        now = utcnow()
        async with self._sessions() as session:
            for event in events:
                assert event.id is not None
                status, error = outcomes.get(event.id, ("error", "not processed"))
                row = await session.get(QuickBooksEvent, event.id)
                if row is None:
                    continue
                row.attempts += 1
                if status == "error":
                    row.last_error = error
                    if row.attempts >= EVENT_MAX_ATTEMPTS:
                        row.status = "failed"
                else:
                    row.status = status
                    row.processed_at = now
                    row.last_error = None
                session.add(row)
            await session.commit()

    # --- Connection health ------------------------------------------------------------------------------

    @activity.defn
    async def check_connection(self, account_id: str) -> HealthResult:
        """The daily cheap call (CompanyInfo): notices a connection revoked at Intuit even when nothing syncs.

        A revoked authorization answers 401; the refresh that follows gets invalid_grant and the connection
        workflow marks the connection expired.
        """
        async with heartbeating():
            try:
                context = await self._context(account_id)
                await context.client.company_info()
            except ApplicationError as exc:
                if exc.type == CONNECTION_UNAVAILABLE:
                    return HealthResult(ok=False, reason=exc.message)
                raise
            except (QboAuthenticationError, QboAuthorizationError) as exc:
                return HealthResult(ok=False, reason=str(exc))
            finally:
                await self._touch_health_check(account_id)
        return HealthResult(ok=True)

    async def _touch_health_check(self, account_id: str) -> None:
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, account_id)
            if row is not None:
                row.last_health_check_at = utcnow()
                session.add(row)
                await session.commit()

    @activity.defn
    async def sweep_changes(self, request: SweepInput) -> SweepResult:
        """Change data capture since the watermark: invoices whose change no webhook brought are fed to the events.

        Changes younger than CDC_GRACE are left for the next sweep, so a webhook still on its way is not
        counted as missed. The watermark is QuickBooks' own clock, never ours.
        """
        async with heartbeating():
            return await self._sweep_changes(request)

    async def _sweep_changes(self, request: SweepInput) -> SweepResult:
        context = await self._context(request.account_id)
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, request.account_id)
            assert row is not None
            watermark = row.cdc_watermark or row.connected_at or utcnow()
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
        async with self._sessions() as session:
            for payment in changes.entities.get("Payment", []):
                await insert_ignoring_conflicts(
                    session,
                    PaymentLink,
                    [
                        {
                            "realm_id": context.realm_id,
                            "payment_id": str(payment["Id"]),
                            "qbo_invoice_id": invoice_id,
                        }
                        for invoice_id in sorted(linked_invoice_ids(payment))
                    ],
                )
            tracked = (
                await session.exec(
                    select(InvoiceSync).where(
                        InvoiceSync.realm_id == context.realm_id,
                        col(InvoiceSync.qbo_invoice_id).in_(sorted(set(invoices) | deleted)),
                        col(InvoiceSync.status).in_(_FOLLOWED_STATUSES),
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
            caught = await insert_ignoring_conflicts(session, QuickBooksEvent, missed)
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
                        col(InvoiceSync.status).in_(_FOLLOWED_STATUSES),
                    )
                )
            ).all()
        ids = sorted({str(qbo_id) for qbo_id in followed}, key=int)
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), FOLLOWED_READ_BATCH):
            batch = ids[start : start + FOLLOWED_READ_BATCH]
            found += await context.client.query(
                f"SELECT * FROM Invoice WHERE Id IN ({', '.join(quote(qbo_id) for qbo_id in batch)}) "
                f"MAXRESULTS {FOLLOWED_READ_BATCH}"
            )
            activity.heartbeat(start)
        return found, set(ids) - {str(invoice["Id"]) for invoice in found}

    # --- Disconnect & Void ---------------------------------------------------------------------------------

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
            context = await self._context(request.account_id, allow_disconnecting=True)
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
        outcomes: list[tuple[InvoiceSync, str, str | None]]
        if context is None:
            # The authorization died mid-way: what is left cannot be voided; say so on each invoice.
            outcomes = [
                (row, "failed", f"QuickBooks can no longer be reached: {lost_reason}") for row in rows
            ]
        else:
            gate = asyncio.Semaphore(DISCONNECT_VOID_CONCURRENCY)
            live = context

            async def void_one(row: InvoiceSync) -> tuple[InvoiceSync, str, str | None]:
                async with gate:
                    outcome, reason = await self._void_one_for_disconnect(live, row)
                    return row, outcome, reason

            outcomes = list(await asyncio.gather(*(void_one(row) for row in rows)))
        async with self._sessions() as session:
            for row, outcome, reason in outcomes:
                stored = await session.get(InvoiceSync, (row.account_id, row.invoice_id))
                assert stored is not None
                stored.disconnect_outcome = outcome
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

        async def tell(row: InvoiceSync, outcome: str, reason: str | None) -> None:
            handle = self._temporal.get_workflow_handle(invoice_workflow_id(row.account_id, row.invoice_id))
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
        failed = sum(1 for _, outcome, _ in outcomes if outcome in ("refused", "failed"))
        return VoidForDisconnectResult(voided=len(outcomes) - failed, failed=failed, remaining=remaining)

    async def _void_one_for_disconnect(
        self, context: QuickBooksContext, row: InvoiceSync
    ) -> tuple[str, str | None]:
        """One void, usually one call: the SyncToken we know is tried first, and re-read only when stale."""
        assert row.qbo_invoice_id is not None
        workflow_id = invoice_workflow_id(row.account_id, row.invoice_id)
        sync_token = row.qbo_sync_token
        for attempt in range(1, DISCONNECT_VOID_ATTEMPTS + 1):
            try:
                if sync_token is None:
                    invoice = await context.client.read("Invoice", row.qbo_invoice_id)
                    if is_voided(invoice):
                        return "voided", None
                    sync_token = int(invoice["SyncToken"])
                await context.client.void_invoice(
                    row.qbo_invoice_id,
                    str(sync_token),
                    request_id=request_id(workflow_id, "disconnect.void", str(sync_token)),
                )
                return "voided", None
            except QboStaleObject:
                sync_token = None  # changed in QuickBooks since we last saw it: read it and try again
            except QboNotFound:
                return "not_in_quickbooks", None
            except QboValidationError as exc:
                return (
                    "refused",
                    f"QuickBooks refused to void invoice {row.number}: {exc.detail or exc.message}",
                )
            except QboError as exc:
                if attempt == DISCONNECT_VOID_ATTEMPTS:
                    return "failed", f"Voiding invoice {row.number} in QuickBooks failed: {exc.readable}"
                await asyncio.sleep(2**attempt)
        return "failed", f"Voiding invoice {row.number} in QuickBooks failed: it kept changing"

    # --- Plumbing -----------------------------------------------------------------------------------------

    async def _context(self, account_id: str, *, allow_disconnecting: bool = False) -> QuickBooksContext:
        tokens = ConnectionTokens(
            account_id=account_id,
            sessions=self._sessions,
            cipher=self._cipher,
            temporal=self._temporal,
            allow_disconnecting=allow_disconnecting,
        )
        await tokens.load()
        assert tokens.realm_id is not None
        return QuickBooksContext(
            account_id=account_id, realm_id=tokens.realm_id, client=self._client(tokens.realm_id, tokens)
        )

    async def _realm_context(self, realm_id: str) -> QuickBooksContext | None:
        """A client for the company through any account whose connection to it is usable."""
        async with self._sessions() as session:
            account_ids = (
                await session.exec(
                    select(QuickBooksConnection.account_id).where(
                        QuickBooksConnection.realm_id == realm_id,
                        col(QuickBooksConnection.status).in_(
                            [status.value for status in USABLE_CONNECTION_STATUSES]
                        ),
                    )
                )
            ).all()
        for account_id in account_ids:
            try:
                return await self._context(account_id)
            except ApplicationError:
                continue
        return None

    async def _realm_may_come_back(self, realm_id: str) -> bool:
        async with self._sessions() as session:
            waiting = (
                await session.exec(
                    select(QuickBooksConnection.account_id).where(
                        QuickBooksConnection.realm_id == realm_id,
                        col(QuickBooksConnection.status).in_(
                            [
                                ConnectionStatus.CONNECTED.value,
                                ConnectionStatus.EXPIRING.value,
                                ConnectionStatus.EXPIRED.value,
                            ]
                        ),
                    )
                )
            ).first()
        return waiting is not None

    def _client(self, realm_id: str, tokens: ConnectionTokens) -> QboClient:
        return QboClient(
            realm_id=realm_id,
            api_base_url=self._api_base_url,
            tokens=tokens,
            http=self._http,
            limiter=self._limiter,
            minor_version=self._minor_version,
            # Throttling is waited out here, heartbeating, so it never costs one of the sync's retries.
            max_throttle_wait=None,
            on_wait=_heartbeat_while_waiting,
            timeout=self._timeout,
        )

    async def _cached(self, realm_id: str, kind: str, key: str) -> str | None:
        async with self._sessions() as session:
            entry = await session.get(RealmCacheEntry, (realm_id, kind, key))
            return entry.qbo_id if entry is not None else None

    async def _remember(self, realm_id: str, kind: str, key: str, qbo_id: str) -> None:
        async with self._sessions() as session:
            # Concurrent syncs for the same new client remember the same customer: an upsert, not a race.
            await upsert(
                session,
                RealmCacheEntry,
                {"realm_id": realm_id, "kind": kind, "key": key, "qbo_id": qbo_id, "updated_at": utcnow()},
                update=["qbo_id", "updated_at"],
            )
            await session.commit()

    async def _forget(self, realm_id: str, kind_and_key: tuple[str, str]) -> None:
        async with self._sessions() as session:
            entry = await session.get(RealmCacheEntry, (realm_id, *kind_and_key))
            if entry is not None:
                await session.delete(entry)
                await session.commit()


def _unusable_reason(row: QuickBooksConnection | None) -> str:
    if row is None or row.status in (ConnectionStatus.NOT_CONNECTED, ConnectionStatus.DISCONNECTED):
        return "QuickBooks is not connected."
    if row.status == ConnectionStatus.EXPIRED:
        return "The QuickBooks connection expired; reconnect QuickBooks to resume."
    if row.status == ConnectionStatus.DISCONNECTING:
        return "QuickBooks is being disconnected."
    return f"The QuickBooks connection is {row.status}."


def _updated_at(entity: dict[str, Any]) -> datetime | None:
    return parse_server_time((entity.get("MetaData") or {}).get("LastUpdatedTime"))


def _cdc_event(
    realm_id: str, qbo_invoice_id: str, operation: str, version: str, now: datetime
) -> dict[str, Any]:
    return {
        "dedupe_key": event_dedupe_key("cdc", realm_id, "Invoice", qbo_invoice_id, version),
        "realm_id": realm_id,
        "entity": "Invoice",
        "entity_id": qbo_invoice_id,
        "operation": operation,
        "occurred_at": None,
        "received_at": now,
        "source": "cdc",
        "status": "pending",
        "attempts": 0,
    }


async def _heartbeat_while_waiting(seconds: float) -> None:
    activity.heartbeat(f"throttled by QuickBooks; waiting {seconds:.1f}s")


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _sync_result(
    context: QuickBooksContext, invoice: dict[str, Any], customer_id: str, *, found_existing: bool
) -> SyncInvoiceResult:
    observation = observe_invoice(context.realm_id, invoice, source="read")
    return SyncInvoiceResult(
        realm_id=context.realm_id,
        qbo_invoice_id=observation.qbo_invoice_id,
        qbo_customer_id=str((invoice.get("CustomerRef") or {}).get("value") or customer_id),
        sync_token=observation.sync_token,
        total_cents=observation.total_cents,
        balance_cents=observation.balance_cents,
        found_existing=found_existing,
    )


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turns QuickBooks faults into what the workflow branches on: rejected (final) or retryable by type."""
    try:
        yield
    except ApplicationError:
        raise
    except (QboNotFound, QboStaleObject) as exc:
        raise quickbooks_failed(exc) from exc
    except QboValidationError as exc:
        raise rejected(what, exc) from exc
    except QboError as exc:
        raise quickbooks_failed(exc) from exc

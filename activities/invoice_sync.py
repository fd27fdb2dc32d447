"""Syncing one invoice to QuickBooks (customer, service item, invoice, exactly once) and voiding it there.

`void_in_quickbooks` is the one way an invoice is voided in QuickBooks: the invoice's own void and Disconnect &
Void both go through it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.company_check import company_for_sync, stored_company
from activities.heartbeat import heartbeating
from activities.mapping import (
    SERVICE_ITEM_NAME,
    customer_body,
    customer_currency,
    customer_display_names,
    customer_email,
    deleted_invoice,
    invoice_body,
    is_ours,
    is_voided,
    observe_invoice,
    pick_income_account,
    totals_mismatch,
)
from activities.quickbooks_access import (
    QuickBooksAccess,
    QuickBooksContext,
    connection_unavailable,
    rejected_in_words,
    translate_errors,
)
from activities.store import apply_invoice_record, mark_sync_started
from models.connections import mark_company_stale
from models.coordination import SingleFlight
from models.db import SessionFactory
from models.domain import QUICKBOOKS_REJECTED, VoidOutcome, payment_status
from models.queries import upsert
from models.tables import RealmCacheEntry, utcnow
from observability.metrics import FAILED, RETRYABLE, SYNC_RETRIES, SYNCED, record_sync_attempt
from qbo.client import quote, request_id
from qbo.company_settings import (
    CompanySettings,
    InvoiceTax,
    TaxCodeProblem,
    books_closed_message,
    currency_problem,
    expected_tax_cents,
    invoice_tax,
)
from qbo.errors import (
    QboDuplicateDocNumber,
    QboDuplicateName,
    QboNotFound,
    QboStaleObject,
    QboValidationError,
)
from workflows.messages import (
    OPERATOR_READ,
    InvoiceObservation,
    InvoiceRecord,
    InvoiceSnapshot,
    ReadInvoiceInput,
    SyncInvoiceInput,
    SyncInvoiceResult,
    VoidInvoiceInput,
    VoidInvoiceResult,
    synced_timeline,
)


def synced_record(request: SyncInvoiceInput, result: SyncInvoiceResult) -> InvoiceRecord:
    """The read side of a synced invoice: what the invoice workflow records after a sync (workflows/invoice.py)."""
    return InvoiceRecord(
        account_id=request.account_id,
        invoice_id=request.invoice_id,
        status=payment_status(result.total_cents, result.balance_cents),
        realm_id=result.realm_id,
        qbo_invoice_id=result.qbo_invoice_id,
        qbo_customer_id=result.qbo_customer_id,
        total_cents=result.total_cents,
        balance_cents=result.balance_cents,
        qbo_sync_token=result.sync_token if result.sync_token >= 0 else None,
        clear_last_error=True,
        timeline=synced_timeline(request.workflow_id, request.snapshot.number, result.qbo_invoice_id),
        resolve_notification_kinds=["sync_failed"],
    )


# A void meets a SyncToken that changed under it (a payment, an edit) at most this often before it gives up.
VOID_STALE_ATTEMPTS = 3


class InvoiceSyncActivities:
    """The invoice workflow's QuickBooks activities, built with the QuickBooks access and the database."""

    def __init__(self, *, access: QuickBooksAccess, sessions: SessionFactory) -> None:
        self._access = access
        self._sessions = sessions
        self._single_flight = SingleFlight(sessions)

    @activity.defn
    async def sync_invoice(self, request: SyncInvoiceInput) -> SyncInvoiceResult:
        """Find or create the customer, ensure the service item, create the invoice: exactly once.

        An earlier attempt whose outcome is unknown (timeout, 5xx, crash) may have created the invoice, so any
        attempt after the first looks it up by number (and our PrivateNote marker) before writing again.
        """
        info = activity.info()
        attempt = info.attempt
        if attempt > 1:
            SYNC_RETRIES.labels("automatic").inc()
        elif request.generation > 0:
            SYNC_RETRIES.labels("manual").inc()
        try:
            await mark_sync_started(self._sessions, request.account_id, request.invoice_id)
            async with heartbeating():
                result = await self._sync_invoice(request, attempt)
            if request.record_synced:
                await apply_invoice_record(self._sessions, synced_record(request, result))
                result = dataclasses.replace(result, recorded=True)
        except ApplicationError as exc:
            record_sync_attempt(FAILED if exc.non_retryable else RETRYABLE, exc.type or "ApplicationError")
            raise
        except Exception as exc:
            record_sync_attempt(RETRYABLE, type(exc).__name__)
            raise
        record_sync_attempt(SYNCED)
        return result

    async def _sync_invoice(self, request: SyncInvoiceInput, attempt: int) -> SyncInvoiceResult:
        context = await self._access.context(request.account_id)
        snapshot = request.snapshot
        info = activity.info()
        if request.may_exist or attempt > 1:
            # First of all: an invoice an earlier attempt made is synced, whatever the company's settings say now.
            with translate_errors("the invoice"):
                existing = await self._find_our_invoice(
                    context,
                    snapshot.number,
                    request.workflow_id,
                    await self._known_customers(context, snapshot.client_email, snapshot.currency),
                    snapshot.issue_date,
                )
            if existing is not None:
                return _sync_result(
                    context,
                    snapshot,
                    existing,
                    "",
                    found_existing=True,
                    expected_tax=await self._stored_expected_tax(context, snapshot),
                )
        # A manual retry reads the company again: the user may just have fixed its settings in QuickBooks.
        retried = request.generation > 0 and attempt == 1
        settings, tax = await self._company_plan(
            context, snapshot, fresh_since=info.current_attempt_scheduled_time if retried else None
        )
        expected_tax = self._expected_tax(settings, tax, snapshot)
        currency = snapshot.currency.upper() if settings.multicurrency else None
        with translate_errors("the invoice"):
            customer_id = await self._ensure_customer(
                context, snapshot.client_name, snapshot.client_email, currency=currency, settings=settings
            )
            item_id = await self._ensure_service_item(context)
            body = invoice_body(
                snapshot,
                customer_id=customer_id,
                item_id=item_id,
                workflow_id=request.workflow_id,
                custom_numbers=settings.custom_txn_numbers,
                tax=tax,
            )
            write_id = request_id(
                request.workflow_id, "invoice.create", str(request.generation), _digest(body)
            )
            try:
                created = await context.client.create("Invoice", body, request_id=write_id)
            except QboDuplicateDocNumber as exc:
                if exc.code == "6210" and "duplicate" not in str(exc.detail or exc.message).lower():
                    # 6210 is also the closed books' password (reference §4): not a number already used.
                    raise rejected_in_words(
                        books_closed_message(settings.book_close_date, snapshot.issue_date)
                    ) from exc
                existing = await self._find_our_invoice(
                    context, snapshot.number, request.workflow_id, [customer_id], snapshot.issue_date
                )
                if existing is not None:
                    return _sync_result(
                        context,
                        snapshot,
                        existing,
                        customer_id,
                        found_existing=True,
                        expected_tax=expected_tax,
                    )
                raise ApplicationError(
                    f"Invoice number {snapshot.number} is already used by another invoice in QuickBooks.",
                    exc.code or "",
                    type=QUICKBOOKS_REJECTED,
                    non_retryable=True,
                ) from exc
            except QboNotFound:
                # A remembered customer or item, or a tax code of the stored settings, was deleted or made inactive
                # in QuickBooks: the retry looks them up again.
                await self._forget(context.realm_id, _customer_key(snapshot.client_email, currency))
                await self._forget(context.realm_id, ("item", SERVICE_ITEM_NAME))
                async with self._sessions() as session:
                    await mark_company_stale(session, context.account_id)
                    await session.commit()
                raise
            except QboValidationError as exc:
                if exc.code in ("6200", "6210"):
                    # The books are closed for this date: the user reads the closing date and what to do.
                    raise rejected_in_words(
                        books_closed_message(settings.book_close_date, snapshot.issue_date)
                    ) from exc
                raise
            return _sync_result(
                context, snapshot, created, customer_id, found_existing=False, expected_tax=expected_tax
            )

    async def _stored_expected_tax(self, context: QuickBooksContext, snapshot: InvoiceSnapshot) -> int | None:
        """The expected tax from the stored settings, for an invoice an earlier attempt made (no QuickBooks call;
        None when they cannot say)."""
        settings, defaults = await stored_company(self._sessions, context)
        if settings is None:
            return None
        try:
            tax = invoice_tax(
                settings, defaults, [line.tax_rate if line.taxed else None for line in snapshot.lines]
            )
        except TaxCodeProblem:
            return None
        return self._expected_tax(settings, tax, snapshot)

    @staticmethod
    def _expected_tax(settings: CompanySettings, tax: InvoiceTax, snapshot: InvoiceSnapshot) -> int:
        """The tax QuickBooks should compute: the platform's total tax, else that of the codes the lines got."""
        if snapshot.total_tax_cents is not None:
            return snapshot.total_tax_cents
        computed = expected_tax_cents(settings, tax, [line.amount_cents for line in snapshot.lines])
        return snapshot.tax_cents if computed is None else computed

    async def _company_plan(
        self, context: QuickBooksContext, snapshot: InvoiceSnapshot, *, fresh_since: datetime | None
    ) -> tuple[CompanySettings, InvoiceTax]:
        """The company's settings and the invoice's tax codes. A problem found with stored settings is confirmed
        with a fresh read first (the user may have changed the company since its last check)."""
        rates = [line.tax_rate if line.taxed else None for line in snapshot.lines]
        while True:
            settings, defaults = await company_for_sync(
                self._sessions, self._single_flight, self._access, context, fresh_since=fresh_since
            )
            problem = currency_problem(settings, snapshot.currency)
            tax: InvoiceTax | None = None
            try:
                tax = invoice_tax(settings, defaults, rates)
            except TaxCodeProblem as exc:
                problem = problem or str(exc)
            if problem is None and tax is not None:
                return settings, tax
            if fresh_since is not None:
                raise rejected_in_words(problem or "")
            fresh_since = activity.info().current_attempt_scheduled_time

    async def _ensure_customer(
        self,
        context: QuickBooksContext,
        name: str,
        email: str,
        *,
        currency: str | None,
        settings: CompanySettings,
    ) -> str:
        """The client's customer (in the invoice's currency, in a multicurrency company), found by email or made."""

        async def find_or_create() -> str:
            found = await self._customer_by_email(context, email, currency, settings.home_currency)
            if found is not None:
                return found
            return await self._create_customer(context, name, email, currency, settings.home_currency)

        kind, key = _customer_key(email, currency)
        return await self._remembered(context.realm_id, kind, key, find_or_create)

    async def _customer_by_email(
        self, context: QuickBooksContext, email: str, currency: str | None, home_currency: str
    ) -> str | None:
        key = email.strip().lower()
        candidates = {email.strip(), key}
        matches: dict[str, dict[str, Any]] = {}
        for address in candidates:
            rows = await context.client.query(
                f"SELECT * FROM Customer WHERE PrimaryEmailAddr = {quote(address)}"
            )
            # Checked here too: QuickBooks' matching rules are not documented, and a stranger must never match.
            matches.update(
                {
                    str(row["Id"]): row
                    for row in rows
                    if customer_email(row) == key
                    and (currency is None or customer_currency(row, home_currency) == currency)
                }
            )
        if not matches:
            return None
        return min(matches, key=int)

    async def _create_customer(
        self, context: QuickBooksContext, name: str, email: str, currency: str | None, home_currency: str
    ) -> str:
        # A home-currency customer needs no CurrencyRef (QuickBooks gives it the home currency), nor a suffix.
        foreign = currency if currency is not None and currency != home_currency else None
        for display_name in customer_display_names(name, email, foreign):
            body = customer_body(display_name, name, email, foreign)
            write_id = request_id(context.realm_id, "customer.create", email.strip().lower(), display_name)
            try:
                created = await context.client.create("Customer", body, request_id=write_id)
                return str(created["Id"])
            except QboDuplicateName:
                # Maybe a concurrent sync just created our customer; otherwise the name belongs to someone else.
                found = await self._customer_by_email(context, email, currency, home_currency)
                if found is not None:
                    return found
                owner = await self._customer_by_display_name(context, display_name)
                if (
                    owner is not None
                    and customer_email(owner) == email.strip().lower()
                    and (currency is None or customer_currency(owner, home_currency) == currency)
                ):
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
        async def find_or_create() -> str:
            rows = await context.client.query(f"SELECT * FROM Item WHERE Name = {quote(SERVICE_ITEM_NAME)}")
            return str(rows[0]["Id"]) if rows else await self._create_service_item(context)

        return await self._remembered(context.realm_id, "item", SERVICE_ITEM_NAME, find_or_create)

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
        self,
        context: QuickBooksContext,
        number: str,
        workflow_id: str,
        customer_ids: list[str],
        txn_date: str | None,
    ) -> dict[str, Any] | None:
        """Our invoice (its PrivateNote marker) by its number; where QuickBooks numbered it itself (custom numbers
        off, now or when it was written), by its customer and date."""
        rows = await context.client.query(f"SELECT * FROM Invoice WHERE DocNumber = {quote(number)}")
        ours = [row for row in rows if is_ours(row, workflow_id)]
        if txn_date is not None:
            for customer_id in customer_ids if not ours else []:
                rows = await context.client.query(
                    f"SELECT * FROM Invoice WHERE CustomerRef = {quote(customer_id)} AND TxnDate = {quote(txn_date)}"
                )
                ours.extend(row for row in rows if is_ours(row, workflow_id))
        return min(ours, key=lambda row: int(row["Id"])) if ours else None

    # --- Void -------------------------------------------------------------------------------------------

    @activity.defn
    async def void_invoice(self, request: VoidInvoiceInput) -> VoidInvoiceResult:
        """Void the QuickBooks invoice, reading its live SyncToken first. A refusal is reported, not forced."""
        async with heartbeating():
            context = await self._access.context(request.account_id)
            with translate_errors("the void"):
                qbo_invoice_id = request.qbo_invoice_id
                if qbo_invoice_id is None:
                    # The create's outcome was unknown: the invoice exists in QuickBooks only if ours is there.
                    found = await self._find_our_invoice(
                        context,
                        request.doc_number,
                        request.workflow_id,
                        await self._known_customers(context, request.client_email, request.currency),
                        request.issue_date,
                    )
                    if found is None:
                        return VoidInvoiceResult(outcome=VoidOutcome.NOT_IN_QUICKBOOKS)
                    qbo_invoice_id = str(found["Id"])
                return await void_in_quickbooks(
                    context, qbo_invoice_id, doc_number=request.doc_number, workflow_id=request.workflow_id
                )

    # --- Re-read (operators) -----------------------------------------------------------------------------

    @activity.defn
    async def read_invoice(self, request: ReadInvoiceInput) -> InvoiceObservation:
        """The invoice as QuickBooks has it now (balance, void, deletion): what an operator's re-read applies."""
        async with heartbeating():
            context = await self._access.context(request.account_id)
            if context.realm_id != request.realm_id:
                raise connection_unavailable(
                    "The account is connected to another QuickBooks company now; this invoice's company cannot "
                    "be read."
                )
            with translate_errors("the read"):
                try:
                    invoice = await context.client.read("Invoice", request.qbo_invoice_id)
                except QboNotFound:
                    return deleted_invoice(context.realm_id, request.qbo_invoice_id, source=OPERATOR_READ)
                return observe_invoice(context.realm_id, invoice, source=OPERATOR_READ)

    async def _known_customers(
        self, context: QuickBooksContext, email: str | None, currency: str | None
    ) -> list[str]:
        """The client's customers, remembered or found by email (never created: looking must not add one)."""
        if email is None:
            return []
        keys = [_customer_key(email, None)] + ([_customer_key(email, currency.upper())] if currency else [])
        remembered = [
            found for kind, key in keys if (found := await self._cached(context.realm_id, kind, key))
        ]
        if remembered:
            return remembered
        key = email.strip().lower()
        rows = await context.client.query(
            f"SELECT * FROM Customer WHERE PrimaryEmailAddr = {quote(email.strip())}"
        )
        return sorted({str(row["Id"]) for row in rows if customer_email(row) == key}, key=int)

    # --- What this company's invoices need, remembered ----------------------------------------------------

    async def _remembered(
        self, realm_id: str, kind: str, key: str, find_or_create: Callable[[], Awaitable[str]]
    ) -> str:
        """The company's remembered id, or the one `find_or_create` finds in QuickBooks, then remembered.

        However many syncs of however many worker processes need it at once, one looks it up (single flight):
        the others wait for it, then read what it remembered. The sync heartbeats meanwhile.
        """
        cached = await self._cached(realm_id, kind, key)
        if cached is not None:
            return cached
        async with self._single_flight.hold("realm-cache", realm_id, kind, key):
            cached = await self._cached(realm_id, kind, key)
            if cached is not None:
                return cached
            found = await find_or_create()
            await self._remember(realm_id, kind, key, found)
            return found

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


async def void_in_quickbooks(
    context: QuickBooksContext,
    qbo_invoice_id: str,
    *,
    doc_number: str,
    workflow_id: str,
    known_sync_token: int | None = None,
) -> VoidInvoiceResult:
    """Void one invoice in QuickBooks. Given the SyncToken last seen, it tries that first (one call); otherwise,
    or when that turns out stale, it reads the live invoice. A void QuickBooks refuses (a payment is applied) is
    reported, never forced. Errors a retry may fix (5xx, no answer) are raised for the caller's retry policy.

    The requestid is the workflow's and the SyncToken's, so a void retried after a lost answer, from whichever
    caller, is the same write.
    """
    sync_token = known_sync_token
    for _ in range(VOID_STALE_ATTEMPTS):
        invoice: dict[str, Any] | None = None
        if sync_token is None:
            try:
                invoice = await context.client.read("Invoice", qbo_invoice_id)
            except QboNotFound:
                return VoidInvoiceResult(outcome=VoidOutcome.NOT_IN_QUICKBOOKS)
            if is_voided(invoice):
                return VoidInvoiceResult(
                    outcome=VoidOutcome.ALREADY_VOIDED,
                    observation=observe_invoice(context.realm_id, invoice, source="read"),
                )
            sync_token = int(invoice["SyncToken"])
        try:
            voided = await context.client.void_invoice(
                qbo_invoice_id,
                str(sync_token),
                request_id=request_id(workflow_id, "invoice.void", str(sync_token)),
            )
        except QboStaleObject:
            sync_token = None  # changed in QuickBooks since it was read: read it again
            continue
        except QboNotFound:
            return VoidInvoiceResult(outcome=VoidOutcome.NOT_IN_QUICKBOOKS)
        except QboValidationError as exc:
            return VoidInvoiceResult(
                outcome=VoidOutcome.REFUSED,
                reason=f"QuickBooks refused to void invoice {doc_number}: {exc.detail or exc.message}",
                observation=observe_invoice(context.realm_id, invoice, source="read") if invoice else None,
            )
        return VoidInvoiceResult(
            outcome=VoidOutcome.VOIDED, observation=observe_invoice(context.realm_id, voided, source="read")
        )
    return VoidInvoiceResult(
        outcome=VoidOutcome.FAILED,
        reason=f"Voiding invoice {doc_number} in QuickBooks failed: it kept changing in QuickBooks.",
    )


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _customer_key(email: str, currency: str | None) -> tuple[str, str]:
    """The remembered customer's (kind, key): one per email, and per currency in a multicurrency company."""
    return ("customer" if currency is None else f"customer:{currency}"), email.strip().lower()


def _sync_result(
    context: QuickBooksContext,
    snapshot: InvoiceSnapshot,
    invoice: dict[str, Any],
    customer_id: str,
    *,
    found_existing: bool,
    expected_tax: int | None = None,
) -> SyncInvoiceResult:
    """The result; QuickBooks' tax and total against the platform's (`expected_tax`, else the snapshot's)."""
    observation = observe_invoice(context.realm_id, invoice, source="read")
    return SyncInvoiceResult(
        realm_id=context.realm_id,
        qbo_invoice_id=observation.qbo_invoice_id,
        qbo_customer_id=str((invoice.get("CustomerRef") or {}).get("value") or customer_id),
        sync_token=observation.sync_token,
        total_cents=observation.total_cents,
        balance_cents=observation.balance_cents,
        found_existing=found_existing,
        mismatch=totals_mismatch(
            snapshot, invoice, snapshot.tax_cents if expected_tax is None else expected_tax
        ),
    )

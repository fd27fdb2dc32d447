"""Syncing one invoice to QuickBooks (customer, service item, invoice, exactly once) and voiding it there.

`void_in_quickbooks` is the one way an invoice is voided in QuickBooks: the invoice's own void and Disconnect &
Void both go through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.mapping import (
    SERVICE_ITEM_NAME,
    customer_body,
    customer_display_names,
    customer_email,
    invoice_body,
    is_ours,
    is_voided,
    observe_invoice,
    pick_income_account,
)
from activities.quickbooks_access import QuickBooksAccess, QuickBooksContext, translate_errors
from models.coordination import SingleFlight
from models.db import SessionFactory
from models.domain import QUICKBOOKS_REJECTED, VoidOutcome
from models.queries import upsert
from models.tables import RealmCacheEntry, utcnow
from qbo.client import quote, request_id
from qbo.errors import (
    QboDuplicateDocNumber,
    QboDuplicateName,
    QboNotFound,
    QboStaleObject,
    QboValidationError,
)
from workflows.messages import (
    SyncInvoiceInput,
    SyncInvoiceResult,
    VoidInvoiceInput,
    VoidInvoiceResult,
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
        async with heartbeating():
            return await self._sync_invoice(request)

    async def _sync_invoice(self, request: SyncInvoiceInput) -> SyncInvoiceResult:
        context = await self._access.context(request.account_id)
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
        async def find_or_create() -> str:
            found = await self._customer_by_email(context, email)
            return found if found is not None else await self._create_customer(context, name, email)

        return await self._remembered(context.realm_id, "customer", email.strip().lower(), find_or_create)

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
            context = await self._access.context(request.account_id)
            with translate_errors("the void"):
                qbo_invoice_id = request.qbo_invoice_id
                if qbo_invoice_id is None:
                    # The create's outcome was unknown: the invoice exists in QuickBooks only if ours is there.
                    found = await self._find_our_invoice(context, request.doc_number, request.workflow_id)
                    if found is None:
                        return VoidInvoiceResult(outcome=VoidOutcome.NOT_IN_QUICKBOOKS)
                    qbo_invoice_id = str(found["Id"])
                return await void_in_quickbooks(
                    context, qbo_invoice_id, doc_number=request.doc_number, workflow_id=request.workflow_id
                )

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

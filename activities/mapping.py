"""Pure translations between platform invoices and QuickBooks entities."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from workflows.messages import InvoiceObservation, InvoiceSnapshot

SERVICE_ITEM_NAME = "Professional Services"
DOC_NUMBER_MAX_LENGTH = 21  # QuickBooks' DocNumber limit
DISPLAY_NAME_MAX_LENGTH = 500
# Characters QuickBooks refuses in a DisplayName.
_DISPLAY_NAME_FORBIDDEN = re.compile(r"[:\t\n\r]+")


def marker(workflow_id: str) -> str:
    """The PrivateNote tag that proves a QuickBooks invoice was created by this invoice's workflow."""
    return f"[qbo-sync {workflow_id}]"


def private_note(workflow_id: str, number: str) -> str:
    return f"Synced from the invoicing platform (invoice {number}). {marker(workflow_id)}"


def is_ours(invoice: dict[str, Any], workflow_id: str) -> bool:
    return marker(workflow_id) in str(invoice.get("PrivateNote") or "")


def _money(cents: int) -> float:
    # Two decimals are exact in JSON text; QuickBooks takes amounts as JSON numbers.
    return float(Decimal(cents) / 100)


def _quantity(quantity: str) -> float | int:
    value = Decimal(quantity)
    return int(value) if value == value.to_integral_value() else float(value)


def invoice_body(
    snapshot: InvoiceSnapshot, *, customer_id: str, item_id: str, workflow_id: str
) -> dict[str, Any]:
    """The QuickBooks Invoice create body for a platform invoice."""
    return {
        "CustomerRef": {"value": customer_id},
        "DocNumber": snapshot.number,
        "TxnDate": snapshot.issue_date,
        "DueDate": snapshot.due_date,
        "CurrencyRef": {"value": snapshot.currency},
        "BillEmail": {"Address": snapshot.client_email},
        "PrivateNote": private_note(workflow_id, snapshot.number),
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": _money(line.amount_cents),
                "Description": line.description,
                "SalesItemLineDetail": {
                    "ItemRef": {"value": item_id},
                    "Qty": _quantity(line.quantity),
                    "UnitPrice": _money(line.unit_price_cents),
                },
            }
            for line in snapshot.lines
        ],
    }


def to_cents(amount: Any) -> int:
    return int((Decimal(str(amount or 0)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def is_voided(invoice: dict[str, Any]) -> bool:
    """QuickBooks has no void flag: a voided invoice has TotalAmt 0 and a PrivateNote starting "Voided"."""
    return to_cents(invoice.get("TotalAmt")) == 0 and str(invoice.get("PrivateNote") or "").startswith(
        "Voided"
    )


def observe_invoice(realm_id: str, invoice: dict[str, Any], *, source: str) -> InvoiceObservation:
    return InvoiceObservation(
        realm_id=realm_id,
        qbo_invoice_id=str(invoice["Id"]),
        sync_token=int(invoice.get("SyncToken") or 0),
        total_cents=to_cents(invoice.get("TotalAmt")),
        balance_cents=to_cents(invoice.get("Balance")),
        voided=is_voided(invoice),
        source=source,
    )


def deleted_invoice(realm_id: str, qbo_invoice_id: str, *, source: str) -> InvoiceObservation:
    # Deleted objects have no SyncToken any more; a very large one makes the deletion win over older reads.
    return InvoiceObservation(
        realm_id=realm_id,
        qbo_invoice_id=qbo_invoice_id,
        sync_token=2**31 - 1,
        total_cents=0,
        balance_cents=0,
        deleted=True,
        source=source,
    )


def linked_invoice_ids(payment: dict[str, Any]) -> set[str]:
    """The invoices a payment is applied to (its lines' LinkedTxn of type Invoice)."""
    return {
        str(link["TxnId"])
        for line in payment.get("Line") or []
        for link in line.get("LinkedTxn") or []
        if str(link.get("TxnType", "")).lower() == "invoice" and link.get("TxnId")
    }


def customer_display_names(name: str, email: str) -> list[str]:
    """DisplayNames to try, in order, for a new customer; all deterministic, so retries pick the same one.

    QuickBooks' DisplayName is unique across customers, vendors and employees. A clash with the plain name
    means someone else already uses it: the email makes ours distinct, and numbered forms follow.
    """
    clean = " ".join(_DISPLAY_NAME_FORBIDDEN.sub(" ", name).split()) or email
    with_email = f"{clean} ({email})"
    candidates = [clean, with_email, *(f"{with_email} {n}" for n in range(2, 6))]
    return [candidate[:DISPLAY_NAME_MAX_LENGTH] for candidate in candidates]


def customer_body(display_name: str, name: str, email: str) -> dict[str, Any]:
    body: dict[str, Any] = {"DisplayName": display_name, "PrimaryEmailAddr": {"Address": email}}
    parts = _DISPLAY_NAME_FORBIDDEN.sub(" ", name).split()
    if len(parts) >= 2:
        # QuickBooks limits name parts to 100 characters each.
        body["GivenName"] = parts[0][:100]
        body["FamilyName"] = " ".join(parts[1:])[:100]
    return body


def customer_email(customer: dict[str, Any]) -> str:
    return str((customer.get("PrimaryEmailAddr") or {}).get("Address") or "").strip().lower()


def pick_income_account(accounts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The income account for the service item: a service-fee account first, then "Services", then any."""
    active = [account for account in accounts if account.get("Active", True)]

    def rank(account: dict[str, Any]) -> tuple[int, int]:
        if account.get("AccountSubType") == "ServiceFeeIncome":
            preference = 0
        elif str(account.get("Name", "")).strip().lower() == "services":
            preference = 1
        else:
            preference = 2
        return preference, int(account.get("Id", 0) or 0)

    return min(active, key=rank) if active else None

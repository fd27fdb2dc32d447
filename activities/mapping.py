"""Pure translations between platform invoices and QuickBooks entities."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from qbo.company_settings import InvoiceTax
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
    snapshot: InvoiceSnapshot,
    *,
    customer_id: str,
    item_id: str,
    workflow_id: str,
    custom_numbers: bool = True,
    tax: InvoiceTax | None = None,
) -> dict[str, Any]:
    """The QuickBooks Invoice create body for a platform invoice.

    With custom transaction numbers off, QuickBooks numbers the invoice itself and Intuit advises sending no
    DocNumber ("it can lead to unwanted duplicates"): the platform's number goes in the message on the invoice
    and in the memo. `tax` holds each line's TaxCodeRef and the transaction's tax fields (`qbo.company_settings`).
    """
    lines = []
    for index, line in enumerate(snapshot.lines):
        detail: dict[str, Any] = {
            "ItemRef": {"value": item_id},
            "Qty": _quantity(line.quantity),
            "UnitPrice": _money(line.unit_price_cents),
        }
        if tax is not None and tax.line_codes[index] is not None:
            detail["TaxCodeRef"] = {"value": tax.line_codes[index]}
        lines.append(
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": _money(line.amount_cents),
                "Description": line.description,
                "SalesItemLineDetail": detail,
            }
        )
    body: dict[str, Any] = {"CustomerRef": {"value": customer_id}}
    if custom_numbers:
        body["DocNumber"] = snapshot.number
    else:
        body["CustomerMemo"] = {"value": f"Invoice {snapshot.number}"}
    body.update(
        {
            "TxnDate": snapshot.issue_date,
            "DueDate": snapshot.due_date,
            "CurrencyRef": {"value": snapshot.currency},
            "BillEmail": {"Address": snapshot.client_email},
            "PrivateNote": private_note(workflow_id, snapshot.number),
            "Line": lines,
        }
    )
    if tax is not None:
        body.update(tax.transaction)
    return body


def totals_mismatch(snapshot: InvoiceSnapshot, invoice: dict[str, Any], expected_tax: int) -> str | None:
    """How QuickBooks' tax and total differ from the platform's, in words; None when they agree."""
    qbo_tax = to_cents((invoice.get("TxnTaxDetail") or {}).get("TotalTax"))
    qbo_total = to_cents(invoice.get("TotalAmt"))
    expected_total = snapshot.subtotal_cents + expected_tax
    if (qbo_tax, qbo_total) == (expected_tax, expected_total):
        return None
    currency = snapshot.currency
    return (
        f"QuickBooks computed a tax of {_text(qbo_tax)} {currency} and a total of {_text(qbo_total)} {currency}; "
        f"the platform's invoice has a tax of {_text(expected_tax)} {currency} and a total of "
        f"{_text(expected_total)} {currency}. Check the tax codes of the invoice's lines in QuickBooks."
    )


def _text(cents: int) -> str:
    return f"{Decimal(cents) / 100:,.2f}"


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


def customer_display_names(name: str, email: str, currency: str | None = None) -> list[str]:
    """DisplayNames to try, in order, for a new customer; all deterministic, so retries pick the same one.

    QuickBooks' DisplayName is unique across customers, vendors and employees. A clash with the plain name
    means someone else already uses it: the email makes ours distinct, and numbered forms follow. A customer in
    a foreign currency (its currency can never change) says so in its name: "Ada Lovelace (EUR)".
    """
    clean = " ".join(_DISPLAY_NAME_FORBIDDEN.sub(" ", name).split()) or email
    suffix = f" ({currency})" if currency else ""
    with_email = f"{clean} ({email})"
    candidates = [
        f"{clean}{suffix}",
        f"{with_email}{suffix}",
        *(f"{with_email}{suffix} {n}" for n in range(2, 6)),
    ]
    # The distinguishing end survives the length limit: cut the name, not the currency or the number.
    return [_fit(candidate, len(candidate) - len(clean)) for candidate in candidates]


def _fit(candidate: str, tail: int) -> str:
    if len(candidate) <= DISPLAY_NAME_MAX_LENGTH:
        return candidate
    keep = max(DISPLAY_NAME_MAX_LENGTH - tail, 1)
    return (candidate[:keep] + candidate[len(candidate) - tail :])[:DISPLAY_NAME_MAX_LENGTH]


def customer_currency(customer: dict[str, Any], home_currency: str) -> str:
    """A customer's currency: its CurrencyRef, or the home currency when QuickBooks leaves it out."""
    return str((customer.get("CurrencyRef") or {}).get("value") or home_currency).upper()


def customer_body(display_name: str, name: str, email: str, currency: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"DisplayName": display_name, "PrimaryEmailAddr": {"Address": email}}
    if currency:
        body["CurrencyRef"] = {"value": currency}
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

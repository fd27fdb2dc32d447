"""Translating platform invoices into QuickBooks entities, and QuickBooks state back."""

from typing import Any

from activities.mapping import (
    customer_body,
    customer_display_names,
    invoice_body,
    is_ours,
    is_voided,
    linked_invoice_ids,
    observe_invoice,
    pick_income_account,
)
from workflows.messages import InvoiceLine, InvoiceSnapshot


def snapshot(*lines: InvoiceLine) -> InvoiceSnapshot:
    return InvoiceSnapshot(
        number="INV-1001",
        client_name="Ada Lovelace",
        client_email="ada@example.com",
        currency="USD",
        issue_date="2026-11-24",
        due_date="2026-12-24",
        lines=list(lines) or [InvoiceLine(description="Review", quantity="1.5", unit_price_cents=12000)],
    )


def test_line_amounts_are_quantity_times_price_rounded_half_up_to_cents() -> None:
    assert InvoiceLine(description="x", quantity="1.5", unit_price_cents=12000).amount_cents == 18000
    assert InvoiceLine(description="x", quantity="0.333", unit_price_cents=1000).amount_cents == 333
    assert InvoiceLine(description="x", quantity="0.125", unit_price_cents=100).amount_cents == 13
    invoice = snapshot(
        InvoiceLine(description="a", quantity="2", unit_price_cents=999),
        InvoiceLine(description="b", quantity="0.5", unit_price_cents=101),
    )
    assert invoice.total_cents == 1998 + 51


def test_invoice_body_carries_number_dates_lines_and_our_marker() -> None:
    body = invoice_body(snapshot(), customer_id="58", item_id="19", workflow_id="invoice-a-1")
    assert body["DocNumber"] == "INV-1001"
    assert (body["TxnDate"], body["DueDate"]) == ("2026-11-24", "2026-12-24")
    assert body["CustomerRef"] == {"value": "58"}
    assert body["BillEmail"] == {"Address": "ada@example.com"}
    [line] = body["Line"]
    assert line["Amount"] == 180.0
    assert line["SalesItemLineDetail"] == {"ItemRef": {"value": "19"}, "Qty": 1.5, "UnitPrice": 120.0}
    assert is_ours({"PrivateNote": body["PrivateNote"]}, "invoice-a-1")
    assert not is_ours({"PrivateNote": body["PrivateNote"]}, "invoice-a-10")
    assert is_ours({"PrivateNote": "Voided - " + body["PrivateNote"]}, "invoice-a-1")


def test_voided_means_zero_total_and_a_voided_note_not_just_zero_balance() -> None:
    assert is_voided({"TotalAmt": 0, "Balance": 0, "PrivateNote": "Voided - note"})
    assert not is_voided({"TotalAmt": 100, "Balance": 0, "PrivateNote": "paid"})
    observed = observe_invoice(
        "1", {"Id": "7", "SyncToken": "3", "TotalAmt": 362.07, "Balance": 100.5}, source="read"
    )
    assert (observed.total_cents, observed.balance_cents, observed.sync_token) == (36207, 10050, 3)


def test_payment_links_only_count_invoices() -> None:
    payment = {
        "Line": [
            {"Amount": 10, "LinkedTxn": [{"TxnId": "67", "TxnType": "Invoice"}]},
            {"Amount": 5, "LinkedTxn": [{"TxnId": "12", "TxnType": "CreditMemo"}]},
        ]
    }
    assert linked_invoice_ids(payment) == {"67"}
    assert linked_invoice_ids({"Line": []}) == set()


def test_display_names_are_deterministic_and_clean() -> None:
    names = customer_display_names("Ada: Lovelace\t", "ada@example.com")
    assert names[0] == "Ada Lovelace"
    assert names[1] == f"{names[0]} (ada@example.com)"
    assert names == customer_display_names("Ada: Lovelace\t", "ada@example.com")
    assert len(set(names)) == len(names)
    body = customer_body(names[0], "Ada Lovelace", "ada@example.com")
    assert (body["GivenName"], body["FamilyName"]) == ("Ada", "Lovelace")


def test_income_account_prefers_service_fee_income() -> None:
    accounts: list[dict[str, Any]] = [
        {"Id": "79", "Name": "Sales of Product Income", "AccountSubType": "SalesOfProductIncome"},
        {"Id": "1", "Name": "Services", "AccountSubType": "ServiceFeeIncome"},
        {"Id": "3", "Name": "Old", "AccountSubType": "ServiceFeeIncome", "Active": False},
    ]
    assert pick_income_account(accounts) == accounts[1]
    assert pick_income_account([accounts[0]]) == accounts[0]
    assert pick_income_account([]) is None

"""Invoice and Payment: creation rules, balances and links, void, delete, send, and their faults."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from tests.emulator.helpers import Connection, EmulatorHandle, connect, fault_of


def sales_line(amount: float, qty: float = 1, unit: float | None = None, item: str = "1") -> dict[str, Any]:
    return {
        "DetailType": "SalesItemLineDetail",
        "Amount": amount,
        "SalesItemLineDetail": {
            "ItemRef": {"value": item},
            "Qty": qty,
            "UnitPrice": amount / qty if unit is None else unit,
        },
    }


# --- Invoice creation -------------------------------------------------------------------------------------


async def test_invoice_create_numbers_lines_appends_a_subtotal_and_defaults_net_30(conn: Connection) -> None:
    customer = await conn.customer("Bird Sanctuary", BillAddr={"Line1": "4581 Finch St."})

    invoice = await conn.ok(
        "invoice",
        {"CustomerRef": {"value": customer["Id"]}, "TxnDate": "2024-01-15",
         "Line": [sales_line(100), sales_line(47.5, qty=5, unit=9.5)]},
    )  # fmt: skip

    assert [line.get("LineNum") for line in invoice["Line"]] == [1, 2, None]
    assert [line.get("Id") for line in invoice["Line"]] == ["1", "2", None]
    assert invoice["Line"][-1] == {
        "Amount": 147.5,
        "DetailType": "SubTotalLineDetail",
        "SubTotalLineDetail": {},
    }
    detail = invoice["Line"][0]["SalesItemLineDetail"]
    assert detail["ItemRef"] == {"value": "1", "name": "Services"}
    assert detail["ItemAccountRef"] == {"value": "1", "name": "Services"}
    assert detail["TaxCodeRef"] == {"value": "NON"}
    assert invoice["CustomerRef"] == {"value": customer["Id"], "name": "Bird Sanctuary"}
    assert invoice["DueDate"] == "2024-02-14"
    assert (invoice["TotalAmt"], invoice["Balance"]) == (147.5, 147.5)
    assert invoice["TxnTaxDetail"] == {"TotalTax": 0}
    assert invoice["BillAddr"]["Line1"] == "4581 Finch St."
    assert invoice["LinkedTxn"] == [] and invoice["CustomField"] == []
    assert (invoice["PrintStatus"], invoice["EmailStatus"]) == ("NeedToPrint", "NotSet")
    assert invoice["MetaData"]["LastModifiedByRef"]["value"].isdigit()
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == 147.5


async def test_invoice_numbers_are_generated_when_omitted_and_kept_when_supplied(conn: Connection) -> None:
    customer = await conn.customer()

    first = await conn.invoice(customer["Id"], 10)
    supplied = await conn.invoice(
        customer["Id"], 10, DocNumber="INV-2026-001", BillEmail={"Address": "ap@x.com"}
    )
    second = await conn.invoice(customer["Id"], 10)

    assert first["DocNumber"] == "1001"
    assert supplied["DocNumber"] == "INV-2026-001"
    assert supplied["BillEmail"] == {"Address": "ap@x.com"}
    assert second["DocNumber"] == "1002"


async def test_transactions_share_one_id_sequence_and_name_lists_have_their_own(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)
    payment = await conn.payment(customer["Id"], invoice["Id"], 5)
    second_invoice = await conn.invoice(customer["Id"], 10)

    assert (customer["Id"], invoice["Id"]) == ("1", "1")
    assert (payment["Id"], second_invoice["Id"]) == ("2", "3")


async def test_sales_terms_set_the_due_date_and_print_their_name(conn: Connection) -> None:
    customer = await conn.customer()

    invoice = await conn.invoice(customer["Id"], 10, TxnDate="2026-03-01", SalesTermRef={"value": "2"})

    assert invoice["SalesTermRef"] == {"value": "2", "name": "Net 15"}
    assert invoice["DueDate"] == "2026-03-16"


async def test_invoice_txn_date_defaults_to_today_in_the_company_time_zone(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)

    today = date.fromisoformat(invoice["TxnDate"])
    assert invoice["DueDate"] == (today + timedelta(days=30)).isoformat()
    assert invoice["MetaData"]["CreateTime"].startswith(invoice["TxnDate"])


async def test_with_custom_numbers_a_duplicate_doc_number_is_refused_unless_allowed(
    emulator: EmulatorHandle,
) -> None:
    conn = await connect(emulator, preferences={"SalesFormsPrefs": {"CustomTxnNumbers": True}})
    customer = await conn.customer()
    original = await conn.invoice(customer["Id"], 10, DocNumber="A-100")
    body = {"CustomerRef": {"value": customer["Id"]}, "DocNumber": "A-100", "Line": [sales_line(10)]}

    refused = await conn.post("invoice", body)
    allowed = await conn.post("invoice", body, {"include": "allowduplicatedocnum"})
    unnumbered = await conn.invoice(customer["Id"], 10)

    assert refused.status_code == 400
    assert fault_of(refused)["code"] == "6140"
    assert fault_of(refused)["Message"] == "Duplicate Document Number Error"
    assert f"TxnId={original['Id']}" in fault_of(refused)["Detail"]
    assert allowed.status_code == 200
    assert "DocNumber" not in unnumbered  # custom numbers: QuickBooks numbers nothing itself


async def test_without_custom_numbers_a_supplied_doc_number_is_stored_even_if_it_is_a_duplicate(
    conn: Connection,
) -> None:
    """Invoice reference (older wording): with CustomTxnNumbers false a supplied value "is stored even if it
    is a duplicate"; the current one only warns "it can lead to unwanted duplicates"."""
    customer = await conn.customer()
    await conn.invoice(customer["Id"], 10, DocNumber="A-100")

    duplicate = await conn.invoice(customer["Id"], 10, DocNumber="A-100")
    generated = await conn.invoice(customer["Id"], 10)

    assert duplicate["DocNumber"] == "A-100"
    assert generated["DocNumber"] == "1001"


async def test_line_amount_must_equal_quantity_times_unit_price_to_the_cent(conn: Connection) -> None:
    customer = await conn.customer()
    rounded = {"CustomerRef": {"value": customer["Id"]}, "Line": [sales_line(100.0, qty=3, unit=33.333)]}
    wrong = {"CustomerRef": {"value": customer["Id"]}, "Line": [sales_line(100.0, qty=3, unit=30)]}

    accepted = await conn.post("invoice", rounded)
    refused = await conn.post("invoice", wrong)

    assert accepted.status_code == 200
    assert refused.status_code == 400
    assert fault_of(refused)["code"] == "6070"
    assert refused.json()["Fault"]["type"] == "ValidationFault"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"CustomerRef": {"value": "9999"}}, "610"),
        ({"Line": [sales_line(10, item="9999")]}, "610"),
        ({"CustomerRef": None}, "2020"),
        ({"Line": []}, "2020"),
        ({"DocNumber": "X" * 22}, "2050"),
        ({"BillEmail": {"Address": "a" * 100 + "@x.com"}}, "2050"),
        ({"CurrencyRef": {"value": "CAD"}}, "6000"),
    ],
)
async def test_invoice_validation_faults(conn: Connection, change: dict[str, Any], code: str) -> None:
    customer = await conn.customer()
    body = {"CustomerRef": {"value": customer["Id"]}, "Line": [sales_line(10)], **change}
    body = {key: value for key, value in body.items() if value is not None}

    response = await conn.post("invoice", body)

    assert response.status_code == 400
    assert fault_of(response)["code"] == code


async def test_invoice_for_an_inactive_customer_is_object_not_found(conn: Connection) -> None:
    customer = await conn.customer()
    await conn.ok("customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Active": False})

    response = await conn.post(
        "invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [sales_line(10)]}
    )

    assert fault_of(response)["code"] == "610"


async def test_any_minorversion_is_accepted(conn: Connection) -> None:
    for version in ("4", "65", "75", "999"):
        response = await conn.get("preferences", {"minorversion": version})
        assert response.status_code == 200


# --- Invoice updates, send, void, delete ------------------------------------------------------------------


async def test_invoice_sparse_update_bumps_sync_token_and_keeps_lines(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 30, 20)

    updated = await conn.ok(
        "invoice",
        {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"], "sparse": True, "PrivateNote": "hi"},
    )

    assert updated["SyncToken"] == "1" and updated["PrivateNote"] == "hi"
    assert updated["Line"] == invoice["Line"]


async def test_invoice_sparse_update_with_lines_replaces_them_and_recomputes_totals(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 30, 20)

    updated = await conn.ok(
        "invoice", {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "Line": [sales_line(75)]}
    )

    assert (updated["TotalAmt"], updated["Balance"]) == (75, 75)
    assert len(updated["Line"]) == 2
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == 75


async def test_include_invoice_link_adds_the_link_to_reads(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)

    plain = await conn.get(f"invoice/{invoice['Id']}")
    linked = await conn.get(f"invoice/{invoice['Id']}", {"include": "invoiceLink"})

    assert "InvoiceLink" not in plain.json()["Invoice"]
    assert linked.json()["Invoice"]["InvoiceLink"].startswith("https://")


async def test_sending_an_invoice_records_the_email_delivery(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10, BillEmail={"Address": "first@x.com"})

    response = await conn.post(f"invoice/{invoice['Id']}/send", params={"sendTo": "billing@x.com"})

    assert response.status_code == 200
    sent = response.json()["Invoice"]
    assert sent["EmailStatus"] == "EmailSent"
    assert sent["BillEmail"] == {"Address": "billing@x.com"}
    assert sent["DeliveryInfo"]["DeliveryType"] == "Email"
    assert sent["SyncToken"] == "1"


async def test_invoice_pdf_is_a_pdf(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)

    response = await conn.get(f"invoice/{invoice['Id']}/pdf")

    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-") and response.content.rstrip().endswith(b"%%EOF")


@pytest.mark.parametrize(("note", "expected"), [(None, "Voided"), ("Rush job", "Voided - Rush job")])
async def test_voiding_an_invoice_zeroes_it_but_keeps_it_readable(
    conn: Connection, note: str | None, expected: str
) -> None:
    customer = await conn.customer()
    fields = {"PrivateNote": note} if note else {}
    invoice = await conn.invoice(customer["Id"], 40, 60, **fields)

    voided = await conn.ok("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, {"operation": "void"})

    assert voided["SyncToken"] == "1"
    assert (voided["TotalAmt"], voided["Balance"]) == (0, 0)
    assert voided["PrivateNote"] == expected
    assert all(line["Amount"] == 0 for line in voided["Line"])
    assert all(line["SalesItemLineDetail"]["Qty"] == 0 for line in voided["Line"][:-1])
    assert (await conn.read("Invoice", invoice["Id"]))["PrivateNote"] == expected
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == 0
    queried = (await conn.query(f"select * from Invoice where Id = '{invoice['Id']}'")).json()  # noqa: S608 - a QuickBooks query, not SQL
    assert queried["QueryResponse"]["Invoice"][0]["TotalAmt"] == 0


async def test_voiding_an_invoice_with_a_payment_applied_is_refused_until_the_payment_is_voided(
    conn: Connection,
) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    payment = await conn.payment(customer["Id"], invoice["Id"], 30)
    current = await conn.read("Invoice", invoice["Id"])

    refused = await conn.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": current["SyncToken"]}, {"operation": "void"}
    )
    await conn.ok("payment", {"Id": payment["Id"], "SyncToken": "0", "sparse": True},
                  {"operation": "update", "include": "void"})  # fmt: skip
    current = await conn.read("Invoice", invoice["Id"])
    accepted = await conn.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": current["SyncToken"]}, {"operation": "void"}
    )

    assert refused.status_code == 400
    assert fault_of(refused)["code"] == "6000"
    assert refused.json()["Fault"]["type"] == "ValidationFault"
    assert accepted.status_code == 200


async def test_void_with_a_stale_sync_token_is_refused(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)
    await conn.ok("invoice", {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "x"})

    response = await conn.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, {"operation": "void"})

    assert fault_of(response)["code"] == "5010"


async def test_deleting_an_invoice_returns_a_stub_then_reads_are_610(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)

    deleted = await conn.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, {"operation": "delete"})
    again = await conn.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, {"operation": "delete"})

    assert deleted.json()["Invoice"] == {"status": "Deleted", "domain": "QBO", "Id": invoice["Id"]}
    assert fault_of(await conn.get(f"invoice/{invoice['Id']}"))["code"] == "610"
    assert fault_of(again)["code"] == "610"
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == 0


async def test_an_invoice_with_payments_cannot_be_deleted(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)
    await conn.payment(customer["Id"], invoice["Id"], 10)
    current = await conn.read("Invoice", invoice["Id"])

    response = await conn.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": current["SyncToken"]}, {"operation": "delete"}
    )

    assert fault_of(response)["code"] == "6000"


# --- Payments ---------------------------------------------------------------------------------------------


async def test_payment_reduces_the_invoice_balance_and_links_both_ways(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 459)

    payment = await conn.payment(customer["Id"], invoice["Id"], 220, PaymentRefNum="CHK-5512")

    assert (payment["TotalAmt"], payment["UnappliedAmt"]) == (220, 0)
    assert payment["DepositToAccountRef"]["value"] == "3"  # Undeposited Funds
    assert payment["ProcessPayment"] is False and payment["PaymentRefNum"] == "CHK-5512"
    (line,) = payment["Line"]
    assert line["LinkedTxn"] == [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]
    names = {item["value"]["Name"]: item["value"]["Value"] for item in line["LineEx"]["any"]}
    assert names == {
        "txnId": invoice["Id"],
        "txnOpenBalance": "459.00",
        "txnReferenceNumber": invoice["DocNumber"],
    }
    after = await conn.read("Invoice", invoice["Id"])
    assert (after["Balance"], after["TotalAmt"], after["SyncToken"]) == (239, 459, "1")
    assert after["LinkedTxn"] == [{"TxnId": payment["Id"], "TxnType": "Payment"}]
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == 239


async def test_two_payments_settle_an_invoice_and_are_listed_newest_first(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)

    first = await conn.payment(customer["Id"], invoice["Id"], 60)
    second = await conn.payment(customer["Id"], invoice["Id"], 40)

    paid = await conn.read("Invoice", invoice["Id"])
    assert paid["Balance"] == 0 and paid["TotalAmt"] == 100
    assert [link["TxnId"] for link in paid["LinkedTxn"]] == [second["Id"], first["Id"]]


async def test_unapplied_payment_becomes_customer_credit(conn: Connection) -> None:
    customer = await conn.customer()

    payment = await conn.ok("payment", {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": 100})

    assert (payment["TotalAmt"], payment["UnappliedAmt"], payment["Line"]) == (100, 100, [])
    assert payment["TxnDate"] and payment["CurrencyRef"]["value"] == "USD"
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == -100


@pytest.mark.parametrize(
    ("amount", "total"),
    [(100.01, 100.01), (50, 40)],
    ids=["more-than-the-open-balance", "lines-exceed-the-payment-total"],
)
async def test_payment_amount_validation(conn: Connection, amount: float, total: float) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    body = {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": total,
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]}  # fmt: skip

    response = await conn.post("payment", body)

    assert response.status_code == 400
    assert fault_of(response)["code"] == "6000"
    assert (await conn.read("Invoice", invoice["Id"]))["Balance"] == 100


async def test_payment_against_another_customers_invoice_or_an_unknown_one_is_refused(
    conn: Connection,
) -> None:
    owner = await conn.customer()
    stranger = await conn.customer()
    invoice = await conn.invoice(owner["Id"], 100)

    foreign = await conn.post("payment", {"CustomerRef": {"value": stranger["Id"]}, "TotalAmt": 10,
                                          "Line": [{"Amount": 10, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]})  # fmt: skip
    unknown = await conn.post("payment", {"CustomerRef": {"value": owner["Id"]}, "TotalAmt": 10,
                                          "Line": [{"Amount": 10, "LinkedTxn": [{"TxnId": "777", "TxnType": "Invoice"}]}]})  # fmt: skip

    assert fault_of(foreign)["code"] == "6000"
    assert fault_of(unknown)["code"] == "610"


@pytest.mark.parametrize(
    "params",
    [{"operation": "update", "include": "void"}, {"operation": "void"}],
    ids=["include-void", "operation-void"],
)
async def test_voiding_a_payment_restores_the_invoice_balance(
    conn: Connection, params: dict[str, str]
) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    payment = await conn.payment(customer["Id"], invoice["Id"], 100)

    voided = await conn.ok("payment", {"Id": payment["Id"], "SyncToken": "0", "sparse": True}, params)

    assert (voided["TotalAmt"], voided["PrivateNote"], voided["SyncToken"]) == (0, "Voided", "1")
    reopened = await conn.read("Invoice", invoice["Id"])
    assert reopened["Balance"] == 100 and reopened["LinkedTxn"] == []
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == 100


async def test_deleting_a_payment_restores_the_invoice_balance(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    payment = await conn.payment(customer["Id"], invoice["Id"], 25)

    deleted = await conn.post("payment", {"Id": payment["Id"], "SyncToken": "0"}, {"operation": "delete"})

    assert deleted.json()["Payment"] == {"status": "Deleted", "domain": "QBO", "Id": payment["Id"]}
    assert (await conn.read("Invoice", invoice["Id"]))["Balance"] == 100
    assert fault_of(await conn.get(f"payment/{payment['Id']}"))["code"] == "610"


async def test_payment_sparse_update_of_a_note_leaves_the_invoices_alone(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    payment = await conn.payment(customer["Id"], invoice["Id"], 100)
    before = await conn.read("Invoice", invoice["Id"])

    updated = await conn.ok(
        "payment", {"Id": payment["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "x"}
    )

    assert updated["SyncToken"] == "1" and updated["Line"] == payment["Line"]
    assert (await conn.read("Invoice", invoice["Id"]))["SyncToken"] == before["SyncToken"]


async def test_changing_a_payment_line_moves_money_between_invoice_balances(conn: Connection) -> None:
    customer = await conn.customer()
    first = await conn.invoice(customer["Id"], 100)
    second = await conn.invoice(customer["Id"], 100)
    payment = await conn.payment(customer["Id"], first["Id"], 80)

    await conn.ok(
        "payment",
        {"Id": payment["Id"], "SyncToken": "0", "sparse": True, "TotalAmt": 80,
         "Line": [{"Amount": 80, "LinkedTxn": [{"TxnId": second["Id"], "TxnType": "Invoice"}]}]},
    )  # fmt: skip

    assert (await conn.read("Invoice", first["Id"]))["Balance"] == 100
    assert (await conn.read("Invoice", second["Id"]))["Balance"] == 20

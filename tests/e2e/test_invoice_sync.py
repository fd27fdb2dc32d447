"""Sending invoices: what lands in QuickBooks, what it costs, and what the platform sees."""

from __future__ import annotations

from typing import Any

from tests.engine import Engine
from tests.qbo_access import qbo_client_for

# The connection's own housekeeping (the change sweep, the daily check) runs on its clock, not the sync's.
HOUSEKEEPING = {"GET /cdc", "GET /companyinfo", "GET /preferences"}


def api_calls(requests: list[dict[str, Any]]) -> list[str]:
    """The sync's Accounting API calls in an emulator request log, as "METHOD /entity" (no OAuth, no housekeeping)."""
    calls = []
    for request in requests:
        path = str(request["path"])
        if "/v3/company/" not in path:
            continue
        entity = path.split("/v3/company/", 1)[1].split("/", 2)[1]
        call = f"{request['method']} /{entity}"
        if call not in HOUSEKEEPING:
            calls.append(call)
    return calls


async def test_sent_invoice_lands_in_quickbooks_with_customer_item_lines_amounts_dates_and_number(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)

    response = await engine.send_invoice(account, "inv-1", number="INV-1001")
    assert response.status_code == 202
    assert response.json()["duplicate"] is False
    assert response.json()["invoice"]["status"] in ("pending", "syncing", "synced")

    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    assert synced["quickbooks"]["synced"] is True
    assert synced["quickbooks"]["realm_id"] == realm
    assert synced["total_cents"] == 22550 and synced["balance_cents"] == 22550
    assert synced["last_error"] is None and synced["notification"] is None

    company = await engine.emulator.company(realm)
    [invoice] = [i for i in company["invoices"] if i["Id"] == synced["quickbooks"]["invoice_id"]]
    assert invoice["DocNumber"] == "INV-1001"
    assert (invoice["TxnDate"], invoice["DueDate"]) == ("2026-11-24", "2026-12-24")
    assert invoice["TotalAmt"] == 225.5 and invoice["Balance"] == 225.5
    sales_lines = [line for line in invoice["Line"] if line["DetailType"] == "SalesItemLineDetail"]
    assert [(line["Description"], line["Amount"]) for line in sales_lines] == [
        ("Architecture review", 180),
        ("Travel", 45.5),
    ]
    assert sales_lines[0]["SalesItemLineDetail"]["Qty"] == 1.5
    assert sales_lines[0]["SalesItemLineDetail"]["UnitPrice"] == 120

    [customer] = [c for c in company["customers"] if c["Id"] == invoice["CustomerRef"]["value"]]
    assert customer["DisplayName"] == "Ada Lovelace"
    assert customer["PrimaryEmailAddr"]["Address"] == "ada@example.com"
    item_ids = {line["SalesItemLineDetail"]["ItemRef"]["value"] for line in sales_lines}
    [item] = [i for i in company["items"] if i["Id"] in item_ids]
    assert (item["Name"], item["Type"]) == ("Professional Services", "Service")
    [income] = [a for a in company["accounts"] if a["Id"] == item["IncomeAccountRef"]["value"]]
    assert income["AccountType"] == "Income"

    assert "Synced to QuickBooks as invoice INV-1001." in await engine.timeline(account, "inv-1")
    listed = (await engine.api.get(f"/v1/accounts/{account}/invoices")).json()["invoices"]
    assert [(i["invoice_id"], i["quickbooks"]["synced"]) for i in listed] == [("inv-1", True)]


async def test_steady_state_sync_costs_one_quickbooks_call(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.wait_for_catch_up_sweep(realm)
    await engine.send_invoice(account, "inv-1", number="INV-1")
    await engine.wait_for_invoice(account, "inv-1", "synced")
    first_calls = api_calls(await engine.qbo_requests(realm))
    assert first_calls.count("POST /invoice") == 1

    seen = max(request["seq"] for request in await engine.qbo_requests())
    await engine.send_invoice(account, "inv-2", number="INV-2")
    await engine.wait_for_invoice(account, "inv-2", "synced")
    assert api_calls(await engine.qbo_requests(realm, since_seq=seen)) == ["POST /invoice"]

    seen = max(request["seq"] for request in await engine.qbo_requests())
    await engine.send_invoice(
        account, "inv-3", number="INV-3", client_name="Grace Hopper", client_email="grace@example.com"
    )
    await engine.wait_for_invoice(account, "inv-3", "synced")
    calls = api_calls(await engine.qbo_requests(realm, since_seq=seen))
    # A new client: look the customer up by email, create it, create the invoice (the item is remembered).
    assert sorted(calls) == sorted(["GET /query", "POST /customer", "POST /invoice"])


async def test_sending_the_same_invoice_twice_is_harmless(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    first = await engine.send_invoice(account, "inv-1")
    second = await engine.send_invoice(account, "inv-1")
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["duplicate"] is True
    await engine.wait_for_invoice(account, "inv-1", "synced")
    third = await engine.send_invoice(account, "inv-1")
    assert third.json()["duplicate"] is True and third.json()["invoice"]["status"] == "synced"
    assert len(await engine.qbo_invoices(realm)) == 1


async def test_invoices_sent_before_connecting_are_never_synced(engine: Engine) -> None:
    account = await engine.create_account()
    response = await engine.send_invoice(account, "inv-early")
    assert response.status_code == 202
    body = response.json()["invoice"]
    assert body["status"] == "not_synced"
    assert "not connected" in body["reason"]

    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-late", number="INV-LATE")
    await engine.wait_for_invoice(account, "inv-late", "synced")
    again = await engine.send_invoice(account, "inv-early")
    assert again.json()["invoice"]["status"] == "not_synced"
    assert [invoice["DocNumber"] for invoice in await engine.qbo_invoices(realm)] == ["INV-LATE"]


async def test_an_existing_customer_is_found_by_email(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    async with qbo_client_for(engine.emulator, realm) as qbo:
        existing = await qbo.create(
            "Customer",
            {"DisplayName": "Lovelace, A. (billing)", "PrimaryEmailAddr": {"Address": "ADA@Example.com"}},
            request_id="seed-customer-1",
        )
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    assert synced["quickbooks"]["customer_id"] == existing["Id"]
    company = await engine.emulator.company(realm)
    assert len([c for c in company["customers"] if "Lovelace" in c["DisplayName"]]) == 1


async def test_a_name_clash_with_a_stranger_creates_a_distinct_customer(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    async with qbo_client_for(engine.emulator, realm) as qbo:
        stranger = await qbo.create(
            "Customer",
            {"DisplayName": "Ada Lovelace", "PrimaryEmailAddr": {"Address": "someone.else@example.org"}},
            request_id="seed-stranger-1",
        )
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    assert synced["quickbooks"]["customer_id"] != stranger["Id"]
    company = await engine.emulator.company(realm)
    [ours] = [c for c in company["customers"] if c["Id"] == synced["quickbooks"]["customer_id"]]
    assert ours["DisplayName"] == "Ada Lovelace (ada@example.com)"
    assert ours["PrimaryEmailAddr"]["Address"] == "ada@example.com"


async def test_an_invoice_number_taken_by_another_quickbooks_invoice_fails_with_the_reason(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    async with qbo_client_for(engine.emulator, realm) as qbo:
        customer = await qbo.create("Customer", {"DisplayName": "Walk-in"}, request_id="seed-walkin")
        items = await qbo.query("SELECT * FROM Item WHERE Name = 'Services'")
        await qbo.create(
            "Invoice",
            {
                "CustomerRef": {"value": customer["Id"]},
                "DocNumber": "INV-7",
                "Line": [
                    {
                        "DetailType": "SalesItemLineDetail",
                        "Amount": 10,
                        "SalesItemLineDetail": {
                            "ItemRef": {"value": items[0]["Id"]},
                            "Qty": 1,
                            "UnitPrice": 10,
                        },
                    }
                ],
            },
            request_id="seed-invoice-7",
        )
    await engine.send_invoice(account, "inv-7", number="INV-7")
    failed = await engine.wait_for_invoice(account, "inv-7", "failed")
    assert "INV-7 is already used by another invoice in QuickBooks" in failed["last_error"]
    assert failed["notification"]["kind"] == "sync_failed"
    assert failed["notification"]["action"] == "retry"
    assert len(await engine.qbo_invoices(realm)) == 1

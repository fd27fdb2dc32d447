"""Customer, Item, Account and CompanyInfo: shapes, defaults, uniqueness, validation and updates."""

from __future__ import annotations

import re

import pytest

from tests.emulator.helpers import Connection, admin_ok, fault_of

RESPONSE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00")
META_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00")
DUPLICATE_DETAIL = (
    "The name supplied already exists. : Another customer, vendor or employee is already using this name. "
    "Please use a different name."
)


# --- a fresh company --------------------------------------------------------------------------------------


async def test_new_company_has_the_default_us_chart_of_accounts_and_service_items(conn: Connection) -> None:
    accounts = (await conn.query("select * from Account maxresults 1000")).json()["QueryResponse"]["Account"]
    items = (await conn.query("select * from Item")).json()["QueryResponse"]["Item"]

    by_name = {account["Name"]: account for account in accounts}
    assert (by_name["Services"]["AccountType"], by_name["Services"]["AccountSubType"]) == (
        "Income",
        "ServiceFeeIncome",
    )
    assert by_name["Sales of Product Income"]["AccountSubType"] == "SalesOfProductIncome"
    assert by_name["Undeposited Funds"]["AccountSubType"] == "UndepositedFunds"
    assert by_name["Accounts Receivable (A/R)"]["AccountType"] == "Accounts Receivable"
    assert by_name["Checking"]["AccountType"] == "Bank"
    assert by_name["Services"]["Classification"] == "Revenue"
    assert {item["Name"]: item["Type"] for item in items} == {"Hours": "Service", "Services": "Service"}
    assert all(item["IncomeAccountRef"]["name"] == "Services" for item in items)


async def test_company_info_and_preferences_describe_a_usd_company_without_multicurrency(
    conn: Connection,
) -> None:
    info = await conn.get(f"companyinfo/{conn.realm_id}", {"minorversion": "75"})
    preferences = await conn.get("preferences")
    queried = await conn.query("select * from CompanyInfo")

    assert info.status_code == 200
    company = info.json()["CompanyInfo"]
    assert company["Country"] == "US" and company["domain"] == "QBO" and company["sparse"] is False
    assert RESPONSE_TIME.fullmatch(info.json()["time"])
    currency = preferences.json()["Preferences"]["CurrencyPrefs"]
    assert currency == {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "USD"}}
    assert queried.json()["QueryResponse"]["CompanyInfo"][0]["CompanyName"] == company["CompanyName"]


async def test_company_info_sparse_update_renames_the_company(conn: Connection) -> None:
    info = (await conn.get(f"companyinfo/{conn.realm_id}")).json()["CompanyInfo"]

    updated = await conn.ok(
        "companyinfo",
        {"Id": info["Id"], "SyncToken": info["SyncToken"], "sparse": True, "CompanyName": "Renamed"},
    )

    assert updated["CompanyName"] == "Renamed"
    assert updated["SyncToken"] == str(int(info["SyncToken"]) + 1)


# --- Customer ---------------------------------------------------------------------------------------------


async def test_customer_create_fills_quickbooks_defaults(conn: Connection) -> None:
    response = await conn.post(
        "customer",
        {
            "DisplayName": "Ada Lovelace Consulting",
            "GivenName": "Ada",
            "FamilyName": "Lovelace",
            "PrimaryEmailAddr": {"Address": "ada@example.com"},
            "BillAddr": {"Line1": "1 Analytical Way", "City": "London"},
        },
        {"minorversion": "75"},
    )

    assert response.status_code == 200
    assert RESPONSE_TIME.fullmatch(response.json()["time"])
    customer = response.json()["Customer"]
    assert customer["Id"] == "1" and customer["SyncToken"] == "0"
    assert customer["domain"] == "QBO" and customer["sparse"] is False
    assert customer["Taxable"] is True and customer["Job"] is False and customer["BillWithParent"] is False
    assert customer["Balance"] == 0 and customer["BalanceWithJobs"] == 0
    assert customer["CurrencyRef"] == {"value": "USD", "name": "United States Dollar"}
    assert customer["PreferredDeliveryMethod"] == "Print" and customer["IsProject"] is False
    assert customer["FullyQualifiedName"] == "Ada Lovelace Consulting"
    assert customer["PrintOnCheckName"] == "Ada Lovelace"
    assert customer["Active"] is True
    assert customer["BillAddr"]["Id"].isdigit()
    assert META_TIME.fullmatch(customer["MetaData"]["CreateTime"])
    assert customer["MetaData"]["CreateTime"] == customer["MetaData"]["LastUpdatedTime"]
    # The pseudonym appears on later reads, not in the create answer (as recorded).
    assert "V4IDPseudonym" not in customer
    assert "V4IDPseudonym" in await conn.read("Customer", customer["Id"])


async def test_customer_display_name_is_built_from_name_parts_when_omitted(conn: Connection) -> None:
    customer = await conn.ok("customer", {"Title": "Dr.", "GivenName": "Grace", "FamilyName": "Hopper"})

    assert customer["DisplayName"] == "Dr. Grace Hopper"


@pytest.mark.parametrize("variant", ["Acme Studio", "ACME STUDIO", "acme studio"])
async def test_customer_display_name_must_be_unique_ignoring_case(conn: Connection, variant: str) -> None:
    await conn.customer("Acme Studio")

    duplicate = await conn.post("customer", {"DisplayName": variant})

    assert duplicate.status_code == 400
    assert duplicate.json()["Fault"]["type"] == "ValidationFault"
    assert fault_of(duplicate) == {
        "Message": "Duplicate Name Exists Error",
        "Detail": DUPLICATE_DETAIL,
        "code": "6240",
        "element": "",
    }


async def test_inactive_customers_still_hold_their_display_name(conn: Connection) -> None:
    customer = await conn.customer("Gone But Named")
    await conn.ok("customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Active": False})

    duplicate = await conn.post("customer", {"DisplayName": "gone but named"})

    assert fault_of(duplicate)["code"] == "6240"


@pytest.mark.parametrize(
    ("body", "code", "element"),
    [
        ({"DisplayName": "x" * 501}, "2050", "DisplayName"),
        ({"DisplayName": "Long Mail", "PrimaryEmailAddr": {"Address": "a" * 95 + "@b.com"}}, "2050",
         "PrimaryEmailAddr.Address"),
        ({"Notes": "no name at all"}, "2020", "DisplayName"),
        ({"DisplayName": "Bad", "FavouriteColour": "blue"}, "2010", "FavouriteColour"),
    ],
)  # fmt: skip
async def test_customer_validation_faults(
    conn: Connection, body: dict[str, object], code: str, element: str
) -> None:
    response = await conn.post("customer", body)

    assert response.status_code == 400
    assert fault_of(response)["code"] == code
    assert fault_of(response)["element"] == element


async def test_foreign_currency_on_a_usd_company_is_a_validation_fault(conn: Connection) -> None:
    response = await conn.post("customer", {"DisplayName": "Euro Client", "CurrencyRef": {"value": "EUR"}})

    assert response.status_code == 400
    assert response.json()["Fault"]["type"] == "ValidationFault"
    assert fault_of(response)["code"].startswith("6")


async def test_customer_sparse_update_changes_only_the_given_fields(conn: Connection) -> None:
    customer = await conn.customer(
        "Sparse Target", Notes="keep me", PrimaryEmailAddr={"Address": "old@x.com"}
    )
    await admin_ok(conn.emulator, "POST", "/__admin/clock", {"advance_seconds": 2})

    updated = await conn.ok(
        "customer",
        {"Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True,
         "PrimaryEmailAddr": {"Address": "new@x.com"}},
    )  # fmt: skip

    assert updated["SyncToken"] == "1"
    assert updated["PrimaryEmailAddr"] == {"Address": "new@x.com"}
    assert updated["Notes"] == "keep me"
    assert updated["MetaData"]["CreateTime"] == customer["MetaData"]["CreateTime"]
    assert updated["MetaData"]["LastUpdatedTime"] > customer["MetaData"]["LastUpdatedTime"]


async def test_customer_full_update_clears_omitted_writable_fields(conn: Connection) -> None:
    customer = await conn.customer("Full Target", Notes="will vanish")

    updated = await conn.ok(
        "customer", {"Id": customer["Id"], "SyncToken": "0", "DisplayName": "Full Target 2"}
    )

    assert updated["DisplayName"] == "Full Target 2"
    assert "Notes" not in updated


async def test_stale_sync_token_is_refused_with_5010(conn: Connection) -> None:
    customer = await conn.customer()
    await conn.ok("customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "first"})

    stale = await conn.post(
        "customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "second"}
    )

    assert stale.status_code == 400
    assert fault_of(stale)["code"] == "5010"
    assert fault_of(stale)["Message"] == "Stale Object Error"
    assert (await conn.read("Customer", customer["Id"]))["Notes"] == "first"


@pytest.mark.parametrize("entity", ["customer", "item", "account", "invoice", "payment"])
async def test_unknown_ids_are_object_not_found_610(conn: Connection, entity: str) -> None:
    read = await conn.get(f"{entity}/9999")
    update = await conn.post(entity, {"Id": "9999", "SyncToken": "0", "sparse": True})

    for response in (read, update):
        assert response.status_code == 400
        assert fault_of(response)["code"] == "610"
        assert fault_of(response)["Message"] == "Object Not Found"


async def test_name_list_entities_cannot_be_deleted(conn: Connection) -> None:
    customer = await conn.customer()

    response = await conn.post("customer", {"Id": customer["Id"], "SyncToken": "0"}, {"operation": "delete"})

    assert response.status_code == 400
    assert (await conn.read("Customer", customer["Id"]))["Active"] is True


async def test_sub_customer_gets_a_qualified_name_and_job_flag(conn: Connection) -> None:
    parent = await conn.customer("Parent Co")

    child = await conn.ok("customer", {"DisplayName": "Site A", "ParentRef": {"value": parent["Id"]}})

    assert child["FullyQualifiedName"] == "Parent Co:Site A"
    assert child["Job"] is True and child["Level"] == 1


# --- Item and Account -------------------------------------------------------------------------------------


async def test_service_item_create_matches_the_recorded_defaults(conn: Connection) -> None:
    accounts = (await conn.query("select * from Account where Name = 'Sales of Product Income'")).json()
    income = accounts["QueryResponse"]["Account"][0]

    item = await conn.ok(
        "item", {"Name": "Consulting", "Type": "Service", "IncomeAccountRef": {"value": income["Id"]}}
    )

    assert item["IncomeAccountRef"] == {"value": income["Id"], "name": "Sales of Product Income"}
    assert (item["Active"], item["Taxable"], item["UnitPrice"], item["PurchaseCost"]) == (True, False, 0, 0)
    assert item["TrackQtyOnHand"] is False and item["FullyQualifiedName"] == "Consulting"
    assert item["Id"] == "3"  # after the two items every new company has


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"Name": "services", "Type": "Service", "IncomeAccountRef": {"value": "1"}}, "6240"),
        ({"Name": "No Account", "Type": "Service"}, "2020"),
        ({"Name": "Ghost Account", "Type": "Service", "IncomeAccountRef": {"value": "999"}}, "610"),
        ({"Name": "x" * 101, "Type": "Service", "IncomeAccountRef": {"value": "1"}}, "2050"),
        ({"Type": "Service", "IncomeAccountRef": {"value": "1"}}, "2020"),
    ],
)
async def test_item_validation_faults(conn: Connection, body: dict[str, object], code: str) -> None:
    response = await conn.post("item", body)

    assert response.status_code == 400
    assert fault_of(response)["code"] == code


async def test_account_create_derives_classification_and_refuses_duplicates(conn: Connection) -> None:
    account = await conn.ok("account", {"Name": "Consulting Income", "AccountType": "Income"})
    duplicate = await conn.post("account", {"Name": "consulting income", "AccountType": "Income"})

    assert account["Classification"] == "Revenue"
    assert account["AccountSubType"] == "SalesOfProductIncome"
    assert fault_of(duplicate)["code"] == "6240"


async def test_renamed_customer_shows_its_new_name_on_existing_invoices(conn: Connection) -> None:
    customer = await conn.customer("Old Name")
    invoice = await conn.invoice(customer["Id"], 50)

    await conn.ok(
        "customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "DisplayName": "New Name"}
    )

    assert (await conn.read("Invoice", invoice["Id"]))["CustomerRef"] == {
        "value": customer["Id"],
        "name": "New Name",
    }

"""Companies of a country and their settings, the TaxCode and TaxRate lists, the tax QuickBooks computes,
closed books and multicurrency (shared/reference/quickbooks-global-editions.md)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator.helpers import (
    Connection,
    EmulatorHandle,
    admin_ok,
    coded_line,
    connect,
    fault_of,
    new_company,
    tax_code_id,
)

BUSINESS_MESSAGE = "A business validation error has occurred while processing your request"
CLOSED = {"AccountingInfoPrefs": {"BookCloseDate": "2026-01-31"}}
MULTICURRENCY_OFF = (
    "Business Validation Error: Multicurrency is not enabled for this company; the currency EUR cannot be used. "
    "Only the home currency CAD is accepted."
)


def invoice_body(customer_id: str, txn_date: str, **fields: Any) -> dict[str, Any]:
    return {"CustomerRef": {"value": customer_id}, "TxnDate": txn_date, "Line": [coded_line(100)], **fields}


def period_closed(response: Any) -> bool:
    error = fault_of(response)
    return bool(
        response.status_code == 400
        and error["code"] == "6200"
        and error["Message"] == "Account Period Closed Error"
        and "2026-01-31" in error["Detail"]
    )


async def invoice_with(conn: Connection, *lines: dict[str, Any], **fields: Any) -> Any:
    customer = await conn.customer()
    return await conn.post(
        "invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": list(lines), **fields}
    )


# --- companies of a country ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "currency", "city", "using_sales_tax", "codes"),
    [
        ("US", "USD", "San Pablo", False, ["TAX", "NON"]),
        ("CA", "CAD", "Toronto", True, ["HST ON", "GST", "Zero-rated", "Exempt", "Out of Scope"]),
        ("GB", "GBP", "London", True, ["20.0% S", "5.0% R", "0.0% Z", "Exempt", "No VAT"]),
        ("AU", "AUD", "Sydney", True, ["GST", "GST free", "Input taxed", "Out of Scope"]),
    ],
)
async def test_a_company_of_each_country_has_its_edition(
    emulator: EmulatorHandle, country: str, currency: str, city: str, using_sales_tax: bool, codes: list[str]
) -> None:
    conn = await connect(emulator, country=country)

    info = (await conn.get(f"companyinfo/{conn.realm_id}")).json()["CompanyInfo"]
    prefs = (await conn.get("preferences")).json()["Preferences"]
    dump = await emulator.company(conn.realm_id)
    listed = await admin_ok(emulator, "GET", "/__admin/companies")

    assert info["Country"] == country and info["CompanyAddr"]["City"] == city
    assert prefs["CurrencyPrefs"] == {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": currency}}
    assert prefs["TaxPrefs"]["UsingSalesTax"] is using_sales_tax
    assert prefs["SalesFormsPrefs"]["CustomTxnNumbers"] is False
    assert prefs["SalesFormsPrefs"]["AutoApplyCredit"] is True
    assert "BookCloseDate" not in prefs["AccountingInfoPrefs"]
    assert ("PartnerTaxEnabled" in prefs["TaxPrefs"]) is (country == "US")
    assert {account["CurrencyRef"]["value"] for account in dump["accounts"]} == {currency}
    assert (dump["country"], dump["home_currency"], dump["multicurrency"]) == (country, currency, False)
    assert [code["Name"] for code in dump["tax_codes"]] == codes
    mine = next(c for c in listed["companies"] if c["realm_id"] == conn.realm_id)
    assert (mine["country"], mine["home_currency"], mine["multicurrency"]) == (country, currency, False)


@pytest.mark.parametrize(
    "body",
    [
        {"country": "FR"},
        {"country": "IN"},
        {"multicurrency": "yes"},
        {"home_currency": "XYZ"},
        {"preferences": {"PayrollPrefs": {}}},
        {"preferences": {"SalesFormsPrefs": {"CustomTxnNumber": True}}},
        {"preferences": {"SalesFormsPrefs": {"CustomTxnNumbers": "true"}}},
        {"preferences": {"AccountingInfoPrefs": {"BookCloseDate": "last month"}}},
        {"preferences": {"TaxPrefs": {"UsingSalesTax": None}}},
    ],
)
async def test_a_company_of_an_unknown_country_or_with_unknown_settings_is_refused(
    emulator: EmulatorHandle, body: dict[str, Any]
) -> None:
    response = await emulator.admin.post("/__admin/companies", json={"name": "Refused", **body})

    assert response.status_code == 422


async def test_settings_given_at_creation_are_merged_over_the_editions_defaults(conn: Connection) -> None:
    realm_id = await new_company(
        conn.emulator,
        country="CA",
        preferences={
            "SalesFormsPrefs": {"CustomTxnNumbers": True, "AutoApplyCredit": False},
            "AccountingInfoPrefs": {"BookCloseDate": "2026-01-31"},
            "TaxPrefs": {"UsingSalesTax": False},
        },
    )

    prefs = (await conn.emulator.company(realm_id))["preferences"]

    assert prefs["SalesFormsPrefs"]["CustomTxnNumbers"] is True
    assert prefs["SalesFormsPrefs"]["AutoApplyCredit"] is False
    assert prefs["SalesFormsPrefs"]["DefaultTerms"] == {"value": "3"}  # untouched keys stay
    assert prefs["AccountingInfoPrefs"]["BookCloseDate"] == "2026-01-31"
    assert prefs["AccountingInfoPrefs"]["FirstMonthOfFiscalYear"] == "January"
    assert prefs["TaxPrefs"] == {"UsingSalesTax": False}
    assert prefs["CurrencyPrefs"]["HomeCurrency"] == {"value": "CAD"}


async def test_a_user_changing_settings_deep_merges_and_bumps_the_sync_token(conn: Connection) -> None:
    path = f"/__admin/companies/{conn.realm_id}/preferences"
    before = (await conn.get("preferences")).json()["Preferences"]

    closed = await admin_ok(conn.emulator, "PUT", path, {"AccountingInfoPrefs": {"BookCloseDate": "2026-01-31"},
                                                         "SalesFormsPrefs": {"CustomTxnNumbers": True}})  # fmt: skip
    reopened = await admin_ok(conn.emulator, "PUT", path, {"AccountingInfoPrefs": {"BookCloseDate": None}})
    read = (await conn.get("preferences")).json()["Preferences"]
    queried = (await conn.query("select * from Preferences")).json()["QueryResponse"]["Preferences"][0]

    assert closed["Preferences"]["AccountingInfoPrefs"]["BookCloseDate"] == "2026-01-31"
    assert closed["Preferences"]["AccountingInfoPrefs"]["TrackDepartments"] is False
    assert closed["Preferences"]["SyncToken"] == str(int(before["SyncToken"]) + 1)
    assert "BookCloseDate" not in reopened["Preferences"]["AccountingInfoPrefs"]
    assert read == reopened["Preferences"] == queried
    assert read["SalesFormsPrefs"]["CustomTxnNumbers"] is True
    assert read["SyncToken"] == str(int(before["SyncToken"]) + 2)
    assert read["MetaData"]["LastUpdatedTime"] >= before["MetaData"]["LastUpdatedTime"]


async def test_multicurrency_cannot_be_disabled_once_enabled_and_the_home_currency_never_changes(
    emulator: EmulatorHandle,
) -> None:
    """Intuit: multicurrency "cannot be disabled once it's been enabled"; the home currency cannot change."""
    realm_id = await new_company(emulator, country="GB")
    path = f"/__admin/companies/{realm_id}/preferences"

    enabled = await admin_ok(emulator, "PUT", path, {"CurrencyPrefs": {"MultiCurrencyEnabled": True}})
    disabled = await emulator.admin.put(path, json={"CurrencyPrefs": {"MultiCurrencyEnabled": False}})
    moved = await emulator.admin.put(path, json={"CurrencyPrefs": {"HomeCurrency": {"value": "EUR"}}})
    same = await emulator.admin.put(path, json={"CurrencyPrefs": {"HomeCurrency": {"value": "GBP"}}})
    unknown_field = await emulator.admin.put(path, json={"CurrencyPrefs": {"Rates": []}})

    assert enabled["Preferences"]["CurrencyPrefs"]["MultiCurrencyEnabled"] is True
    assert disabled.status_code == 400 and disabled.json()["error"] == "validation"
    assert "cannot be disabled once it's been enabled" in disabled.json()["message"]
    assert moved.status_code == 400 and moved.json()["error"] == "validation"
    assert same.status_code == 200
    assert unknown_field.status_code == 422
    assert (await emulator.company(realm_id))["multicurrency"] is True


# --- TaxCode and TaxRate ------------------------------------------------------------------------------------


async def test_tax_codes_and_rates_of_a_canadian_company_are_read_and_queried(
    emulator: EmulatorHandle,
) -> None:
    conn = await connect(emulator, country="CA")

    rows = (await conn.query("select * from TaxCode")).json()["QueryResponse"]
    hst = (await conn.query("select * from TaxCode where Name = 'HST ON'")).json()["QueryResponse"][
        "TaxCode"
    ][0]
    read = await conn.get(f"taxcode/{hst['Id']}")
    rate_ref = hst["SalesTaxRateList"]["TaxRateDetail"][0]["TaxRateRef"]
    rate = await conn.read("TaxRate", rate_ref["value"])
    zero = await conn.query("select * from TaxRate where Name = 'GST/HST ZR'")
    by_id = await conn.query(f"select * from TaxCode where Id = '{hst['Id']}'")  # noqa: S608 - not SQL
    counted = await conn.query("select count(*) from TaxCode")
    page = await conn.query("select * from TaxCode STARTPOSITION 2 MAXRESULTS 2")

    assert [code["Name"] for code in rows["TaxCode"]] == [
        "HST ON",
        "GST",
        "Zero-rated",
        "Exempt",
        "Out of Scope",
    ]
    assert read.json()["TaxCode"] == hst and "time" in read.json()
    assert (
        hst["Active"] is True
        and hst["Hidden"] is False
        and hst["Taxable"] is True
        and hst["TaxGroup"] is True
    )
    assert hst["SalesTaxRateList"]["TaxRateDetail"] == [
        {
            "TaxRateRef": {"value": rate["Id"], "name": "HST ON"},
            "TaxTypeApplicable": "TaxOnAmount",
            "TaxOrder": 0,
        }
    ]
    assert hst["PurchaseTaxRateList"] == {"TaxRateDetail": []}
    assert hst["TaxCodeConfigType"] == "SYSTEM_GENERATED"
    assert (hst["domain"], hst["sparse"], hst["SyncToken"]) == ("QBO", False, "0")
    assert (rate["Name"], rate["RateValue"], rate["SpecialTaxType"], rate["DisplayType"]) == (
        "HST ON", 13, "NONE", "ReadOnly",
    )  # fmt: skip
    assert rate["AgencyRef"]["value"] and rate["EffectiveTaxRate"][0]["RateValue"] == 13
    assert zero.json()["QueryResponse"]["TaxRate"][0]["SpecialTaxType"] == "ZERO_RATE"
    assert by_id.json()["QueryResponse"]["TaxCode"] == [hst]
    assert counted.json()["QueryResponse"]["totalCount"] == 5
    assert [code["Name"] for code in page.json()["QueryResponse"]["TaxCode"]] == ["GST", "Zero-rated"]
    exempt = next(code for code in rows["TaxCode"] if code["Name"] == "Exempt")
    assert exempt["Taxable"] is False


async def test_a_us_company_has_the_pseudo_codes_tax_and_non(conn: Connection) -> None:
    rows = (await conn.query("select * from TaxCode")).json()["QueryResponse"]["TaxCode"]

    assert {(row["Id"], row["Name"], row["Taxable"], row["TaxGroup"]) for row in rows} == {
        ("TAX", "TAX", True, False),
        ("NON", "NON", False, False),
    }
    assert (await conn.read("TaxCode", "TAX"))["SalesTaxRateList"] == {"TaxRateDetail": []}
    assert (await conn.query("select * from TaxRate")).json()["QueryResponse"] == {}


async def test_tax_code_ids_differ_between_companies(emulator: EmulatorHandle) -> None:
    ids = set()
    for _ in range(4):
        conn = await connect(emulator, country="CA")
        ids.add(await tax_code_id(conn, "HST ON"))

    assert len(ids) > 1


async def test_a_user_adds_a_tax_rate_and_makes_codes_inactive(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="CA")
    base = f"/__admin/companies/{conn.realm_id}/tax-codes"

    added = await admin_ok(conn.emulator, "POST", base, {"name": "PST BC", "rate_percent": 7}, status=201)
    duplicate = await conn.emulator.admin.post(base, json={"name": "pst bc", "rate_percent": 7})
    bad_rate = await conn.emulator.admin.post(base, json={"name": "Too much", "rate_percent": 101})
    code = added["TaxCode"]
    inactive = await admin_ok(conn.emulator, "PUT", f"{base}/{code['Id']}", {"active": False})
    active_only = await conn.query("select * from TaxCode")
    everything = await conn.query("select * from TaxCode where Active IN (true, false)")
    inactive_only = await conn.query("select * from TaxCode where Active = false")
    missing = await conn.emulator.admin.put(f"{base}/99999", json={"active": False})

    assert code["Name"] == "PST BC" and code["TaxGroup"] is True and code["Taxable"] is True
    assert code["TaxCodeConfigType"] == "USER_DEFINED"
    assert code["SalesTaxRateList"]["TaxRateDetail"][0]["TaxRateRef"] == {
        "value": added["TaxRate"]["Id"], "name": "PST BC",
    }  # fmt: skip
    assert added["TaxRate"]["RateValue"] == 7
    assert duplicate.status_code == 400 and duplicate.json()["error"] == "validation"
    assert bad_rate.status_code == 422
    assert inactive["TaxCode"]["Active"] is False and inactive["TaxCode"]["SyncToken"] == "1"
    assert "PST BC" not in [row["Name"] for row in active_only.json()["QueryResponse"]["TaxCode"]]
    assert "PST BC" in [row["Name"] for row in everything.json()["QueryResponse"]["TaxCode"]]
    assert [row["Name"] for row in inactive_only.json()["QueryResponse"]["TaxCode"]] == ["PST BC"]
    assert missing.status_code == 404
    refused = await invoice_with(conn, coded_line(100, code["Id"]))
    assert refused.status_code == 400 and fault_of(refused)["code"] == "610"


# --- invoice tax in global editions -------------------------------------------------------------------------


async def test_canadian_hst_is_computed_as_quickbooks_did_for_a_live_company(
    emulator: EmulatorHandle,
) -> None:
    """quickbooks-online-mcp-server PR #101: 6698.22 at 13% HST gives TotalTax 870.77 and TotalAmt 7568.99."""
    conn = await connect(emulator, country="CA")
    hst = await tax_code_id(conn, "HST ON")
    customer = await conn.customer()

    invoice = await conn.ok(
        "invoice",
        {"CustomerRef": {"value": customer["Id"]}, "Line": [coded_line(6000, hst), coded_line(698.22, hst)]},
    )
    paid = await admin_ok(
        emulator,
        "POST",
        f"/__admin/companies/{conn.realm_id}/payments",
        {"invoice_id": invoice["Id"]},
        status=201,
    )

    rate_id = (await conn.read("TaxCode", hst))["SalesTaxRateList"]["TaxRateDetail"][0]["TaxRateRef"]["value"]
    assert invoice["TxnTaxDetail"] == {
        "TotalTax": 870.77,
        "TaxLine": [
            {
                "Amount": 870.77,
                "DetailType": "TaxLineDetail",
                "TaxLineDetail": {
                    "TaxRateRef": {"value": rate_id},
                    "PercentBased": True,
                    "TaxPercent": 13,
                    "NetAmountTaxable": 6698.22,
                },
            }
        ],
    }
    assert (invoice["TotalAmt"], invoice["Balance"]) == (7568.99, 7568.99)
    assert invoice["GlobalTaxCalculation"] == "TaxExcluded"
    assert invoice["Line"][0]["SalesItemLineDetail"]["TaxCodeRef"] == {"value": hst}
    assert invoice["Line"][2] == {
        "Amount": 6698.22,
        "DetailType": "SubTotalLineDetail",
        "SubTotalLineDetail": {},
    }
    assert (await conn.read("Customer", customer["Id"]))["Balance"] == 0
    assert paid["payment"]["TotalAmt"] == 7568.99 and paid["payment"]["CurrencyRef"]["value"] == "CAD"


@pytest.mark.parametrize(
    ("country", "detail"),
    [
        (
            "CA",
            "Business Validation Error: Make sure all your transactions have a GST/HST rate before you save.",
        ),
        ("GB", "Business Validation Error: Make sure all your transactions have a VAT rate before you save."),
        ("AU", "Business Validation Error: Make sure all your transactions have a GST rate before you save."),
    ],
)
async def test_a_line_without_a_tax_code_is_refused_in_a_global_edition(
    emulator: EmulatorHandle, country: str, detail: str
) -> None:
    """activepieces#8539 (CA) and quickbooks-online-mcp-server#94 (GB): 400, ValidationFault, code 6000."""
    conn = await connect(emulator, country=country)

    response = await invoice_with(conn, coded_line(100))

    assert response.status_code == 400
    assert response.json()["Fault"]["type"] == "ValidationFault"
    assert (fault_of(response)["code"], fault_of(response)["Message"], fault_of(response)["Detail"]) == (
        "6000", BUSINESS_MESSAGE, detail,
    )  # fmt: skip


async def test_unknown_and_us_tax_codes_are_unknown_objects_in_a_global_edition(
    emulator: EmulatorHandle,
) -> None:
    conn = await connect(emulator, country="GB")

    pseudo = await invoice_with(conn, coded_line(100, "TAX"))
    unknown = await invoice_with(conn, coded_line(100, "424242"))

    assert (pseudo.status_code, fault_of(pseudo)["code"]) == (400, "610")
    assert (unknown.status_code, fault_of(unknown)["code"]) == (400, "610")


async def test_zero_rated_and_exempt_lines_next_to_a_standard_rate(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="GB")
    standard, zero, exempt = [await tax_code_id(conn, name) for name in ("20.0% S", "0.0% Z", "Exempt")]

    response = await invoice_with(
        conn,
        coded_line(100, standard),
        coded_line(50, zero),
        coded_line(30, exempt),
        coded_line(10.05, standard),
    )

    assert response.status_code == 200, response.text
    invoice = response.json()["Invoice"]
    tax_lines = invoice["TxnTaxDetail"]["TaxLine"]
    assert [(t["Amount"], t["TaxLineDetail"]["TaxPercent"], t["TaxLineDetail"]["NetAmountTaxable"])
            for t in tax_lines] == [(22.01, 20, 110.05), (0, 0, 50)]  # fmt: skip
    assert invoice["TxnTaxDetail"]["TotalTax"] == 22.01
    assert invoice["TotalAmt"] == 212.06  # 190.05 + 22.01


async def test_tax_inclusive_amounts_hold_the_tax(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="CA")
    hst = await tax_code_id(conn, "HST ON")

    response = await invoice_with(
        conn, coded_line(113, hst, Qty=1, UnitPrice=113), coded_line(1, hst), coded_line(1, hst), coded_line(1, hst),
        GlobalTaxCalculation="TaxInclusive",
    )  # fmt: skip

    assert response.status_code == 200, response.text
    invoice = response.json()["Invoice"]
    first = invoice["Line"][0]
    assert (first["Amount"], first["SalesItemLineDetail"]["TaxInclusiveAmt"]) == (100, 113)
    assert first["SalesItemLineDetail"]["UnitPrice"] == 100
    assert invoice["Line"][1]["Amount"] == 0.88
    assert invoice["GlobalTaxCalculation"] == "TaxInclusive"
    assert invoice["TotalAmt"] == 116  # the tax-inclusive amounts, to the cent
    assert invoice["TxnTaxDetail"]["TotalTax"] == 13.36
    assert invoice["Line"][4]["Amount"] == 102.64  # the SubTotal line adds the net amounts
    again = await conn.ok("invoice", {**invoice, "sparse": False})
    assert (again["TotalAmt"], again["TxnTaxDetail"]) == (116, invoice["TxnTaxDetail"])


async def test_a_discount_lowers_the_taxable_amount_in_a_global_edition(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="AU")
    gst = await tax_code_id(conn, "GST")
    discount = {"DetailType": "DiscountLineDetail", "Amount": 10,
                "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": 10}}  # fmt: skip

    response = await invoice_with(conn, coded_line(200, gst), discount)

    invoice = response.json()["Invoice"]
    assert invoice["TxnTaxDetail"]["TaxLine"][0]["TaxLineDetail"]["NetAmountTaxable"] == 180
    assert invoice["TxnTaxDetail"]["TotalTax"] == 18
    assert invoice["TotalAmt"] == 198


async def test_not_applicable_needs_no_tax_code_and_refuses_a_tax_detail(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="CA")

    untaxed = await invoice_with(conn, coded_line(100), GlobalTaxCalculation="NotApplicable")
    with_detail = await invoice_with(
        conn, coded_line(100), GlobalTaxCalculation="NotApplicable", TxnTaxDetail={"TotalTax": 13}
    )
    invalid = await invoice_with(conn, coded_line(100), GlobalTaxCalculation="TaxIncluded")

    assert untaxed.status_code == 200, untaxed.text
    assert untaxed.json()["Invoice"]["TxnTaxDetail"] == {"TotalTax": 0}
    assert untaxed.json()["Invoice"]["TotalAmt"] == 100
    assert "TaxCodeRef" not in untaxed.json()["Invoice"]["Line"][0]["SalesItemLineDetail"]
    assert (with_detail.status_code, fault_of(with_detail)["code"]) == (400, "6170")
    assert (
        "The TxnTaxDetail attribute isn't allowed when GlobalTaxCalculation is set to NotApplicable."
        in (fault_of(with_detail)["Detail"])
    )
    assert (invalid.status_code, fault_of(invalid)["code"]) == (400, "2010")


async def test_without_sales_tax_a_global_edition_needs_no_code_and_ignores_the_tax_detail(
    emulator: EmulatorHandle,
) -> None:
    """Invoice reference: "If sales tax is disabled ... then TxnTaxDetail is ignored and not stored"."""
    conn = await connect(emulator, country="CA", preferences={"TaxPrefs": {"UsingSalesTax": False}})
    hst = await tax_code_id(conn, "HST ON")

    response = await invoice_with(conn, coded_line(100), coded_line(50, hst), TxnTaxDetail={"TotalTax": 19.5})

    assert response.status_code == 200, response.text
    assert response.json()["Invoice"]["TxnTaxDetail"] == {"TotalTax": 0}
    assert response.json()["Invoice"]["TotalAmt"] == 150


async def test_changing_lines_recomputes_the_tax_and_other_changes_keep_it(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="CA")
    gst = await tax_code_id(conn, "GST")
    created = (await invoice_with(conn, coded_line(100, gst))).json()["Invoice"]

    memo = await conn.ok("invoice", {"Id": created["Id"], "SyncToken": created["SyncToken"], "sparse": True,
                                     "PrivateNote": "no tax change"})  # fmt: skip
    relined = await conn.ok("invoice", {"Id": created["Id"], "SyncToken": memo["SyncToken"], "sparse": True,
                                        "Line": [coded_line(300, gst)]})  # fmt: skip

    assert (created["TxnTaxDetail"]["TotalTax"], created["TotalAmt"]) == (5, 105)
    assert memo["TxnTaxDetail"] == created["TxnTaxDetail"] and memo["TotalAmt"] == 105
    assert (relined["TxnTaxDetail"]["TotalTax"], relined["TotalAmt"], relined["Balance"]) == (15, 315, 315)


async def test_a_taxable_invoice_is_limited_to_750_lines(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="AU")
    gst = await tax_code_id(conn, "GST")

    refused = await invoice_with(conn, *[coded_line(1, gst) for _ in range(751)])
    allowed = await invoice_with(conn, *[coded_line(1, gst) for _ in range(750)])

    assert (refused.status_code, fault_of(refused)["code"]) == (400, "6000")
    assert allowed.status_code == 200 and allowed.json()["Invoice"]["TxnTaxDetail"]["TotalTax"] == 75


# --- US sales tax -------------------------------------------------------------------------------------------


async def test_us_sales_tax_comes_from_the_transactions_tax_rate_and_taxable_lines(
    emulator: EmulatorHandle,
) -> None:
    conn = await connect(emulator, preferences={"TaxPrefs": {"UsingSalesTax": True}})
    added = await admin_ok(emulator, "POST", f"/__admin/companies/{conn.realm_id}/tax-codes",
                           {"name": "San Pablo", "rate_percent": 8.25}, status=201)  # fmt: skip
    code_id = added["TaxCode"]["Id"]

    taxed = await invoice_with(
        conn, coded_line(100, "TAX"), coded_line(40, "NON"), TxnTaxDetail={"TxnTaxCodeRef": {"value": code_id}},
        GlobalTaxCalculation="TaxInclusive",
    )  # fmt: skip
    untaxed = await invoice_with(conn, coded_line(100, "TAX"))
    wrong_code = await invoice_with(conn, coded_line(100, "HST"))

    invoice = taxed.json()["Invoice"]
    assert invoice["TxnTaxDetail"]["TxnTaxCodeRef"] == {"value": code_id}
    assert invoice["TxnTaxDetail"]["TotalTax"] == 8.25
    assert invoice["TxnTaxDetail"]["TaxLine"][0]["TaxLineDetail"]["NetAmountTaxable"] == 100
    assert invoice["TotalAmt"] == 148.25
    assert "GlobalTaxCalculation" not in invoice  # not applicable to US companies: ignored
    assert untaxed.json()["Invoice"]["TxnTaxDetail"] == {"TotalTax": 0}
    assert (wrong_code.status_code, fault_of(wrong_code)["code"]) == (400, "6100")


async def test_a_us_company_without_sales_tax_ignores_the_tax_rate(conn: Connection) -> None:
    added = await admin_ok(conn.emulator, "POST", f"/__admin/companies/{conn.realm_id}/tax-codes",
                           {"name": "County", "rate_percent": 5}, status=201)  # fmt: skip

    response = await invoice_with(
        conn, coded_line(100, "TAX"), TxnTaxDetail={"TxnTaxCodeRef": {"value": added["TaxCode"]["Id"]}}
    )

    assert response.json()["Invoice"]["TxnTaxDetail"] == {"TotalTax": 0}
    assert response.json()["Invoice"]["TotalAmt"] == 100


# --- closed books -------------------------------------------------------------------------------------------


async def test_transactions_on_or_before_the_book_close_date_cannot_be_written(conn: Connection) -> None:
    """Preferences reference: "Transactions before this date are protected from changes"; fault 6200."""
    customer = await conn.customer()
    old = await conn.ok("invoice", invoice_body(customer["Id"], "2026-01-15"))
    old_payment = await conn.payment(customer["Id"], old["Id"], 10, TxnDate="2026-01-20")
    old = await conn.read("Invoice", old["Id"])  # the payment moved its SyncToken
    await admin_ok(conn.emulator, "PUT", f"/__admin/companies/{conn.realm_id}/preferences", CLOSED)

    on_the_date = await conn.post("invoice", invoice_body(customer["Id"], "2026-01-31"))
    after = await conn.ok("invoice", invoice_body(customer["Id"], "2026-02-01"))
    moved_back = await conn.post("invoice", {"Id": after["Id"], "SyncToken": after["SyncToken"], "sparse": True,
                                             "TxnDate": "2026-01-30"})  # fmt: skip
    changed_old = await conn.post("invoice", {"Id": old["Id"], "SyncToken": old["SyncToken"], "sparse": True,
                                              "TxnDate": "2026-02-02"})  # fmt: skip
    voided = await conn.post(
        "invoice", {"Id": old["Id"], "SyncToken": old["SyncToken"]}, {"operation": "void"}
    )
    deleted = await conn.post("payment", {"Id": old_payment["Id"], "SyncToken": old_payment["SyncToken"]},
                              {"operation": "delete"})  # fmt: skip
    paid_late = await conn.post("payment", {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": 5,
                                            "TxnDate": "2026-01-02"})  # fmt: skip

    for refused in (on_the_date, moved_back, changed_old, voided, deleted, paid_late):
        assert period_closed(refused), refused.text
    assert after["TxnDate"] == "2026-02-01"


async def test_user_actions_in_a_closed_period_are_refused_too(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.ok("invoice", invoice_body(customer["Id"], "2026-01-15"))
    base = f"/__admin/companies/{conn.realm_id}"
    paid = await admin_ok(conn.emulator, "POST", f"{base}/payments",
                          {"invoice_id": invoice["Id"], "amount": "10", "txn_date": "2026-01-16"}, status=201)  # fmt: skip
    await admin_ok(conn.emulator, "PUT", f"{base}/preferences", CLOSED)

    late_payment = await conn.emulator.admin.post(
        f"{base}/payments", json={"invoice_id": invoice["Id"], "amount": "10", "txn_date": "2026-01-20"}
    )
    void = await conn.emulator.admin.post(f"{base}/payments/{paid['payment_id']}/void")
    paid_now = await conn.emulator.admin.post(
        f"{base}/payments", json={"invoice_id": invoice["Id"], "amount": "5"}
    )

    for refused in (late_payment, void):
        assert refused.status_code == 400 and refused.json()["error"] == "validation"
        assert refused.json()["fault"]["Fault"]["Error"][0]["code"] == "6200"
    assert paid_now.status_code == 201  # dated today, after the close: the old invoice may still be paid


# --- multicurrency ------------------------------------------------------------------------------------------


async def test_a_customers_currency_is_set_once_and_added_to_the_companys_list(
    emulator: EmulatorHandle,
) -> None:
    """Customer reference: "Once set, it cannot be changed. If specified currency is not currently in the
    company's currency list, it is added. If not specified… the home currency"."""
    conn = await connect(emulator, country="CA", multicurrency=True)

    euro = await conn.customer(CurrencyRef={"value": "EUR"})
    home = await conn.customer()
    read = await conn.read("Customer", euro["Id"])
    changed = await conn.post("customer", {"Id": euro["Id"], "SyncToken": euro["SyncToken"], "sparse": True,
                                           "CurrencyRef": {"value": "USD"}})  # fmt: skip
    renamed = await conn.ok("customer", {"Id": euro["Id"], "SyncToken": euro["SyncToken"], "sparse": True,
                                         "DisplayName": "Renamed Euro Customer"})  # fmt: skip
    unknown = await conn.post("customer", {"DisplayName": "Nowhere", "CurrencyRef": {"value": "XYZ"}})
    currencies = (await conn.query("select * from CompanyCurrency")).json()["QueryResponse"][
        "CompanyCurrency"
    ]

    assert euro["CurrencyRef"] == read["CurrencyRef"] == {"value": "EUR", "name": "Euro"}
    assert home["CurrencyRef"] == {"value": "CAD", "name": "Canadian Dollar"}
    assert (changed.status_code, fault_of(changed)["code"]) == (400, "6000")
    assert renamed["CurrencyRef"]["value"] == "EUR"
    assert (unknown.status_code, fault_of(unknown)["code"]) == (400, "6000")
    assert [(row["Code"], row["Name"], row["Active"]) for row in currencies] == [("EUR", "Euro", True)]


async def test_an_invoice_is_in_its_customers_currency_with_an_exchange_rate(
    emulator: EmulatorHandle,
) -> None:
    conn = await connect(emulator, country="CA", multicurrency=True)
    hst = await tax_code_id(conn, "HST ON")
    euro = await conn.customer(CurrencyRef={"value": "EUR"})
    base = {"CustomerRef": {"value": euro["Id"]}, "Line": [coded_line(100, hst)]}

    defaulted = await conn.ok("invoice", base)
    given = await conn.ok("invoice", {**base, "CurrencyRef": {"value": "EUR"}, "ExchangeRate": 1.5})
    other = await conn.post("invoice", {**base, "CurrencyRef": {"value": "CAD"}})
    paid = await admin_ok(emulator, "POST", f"/__admin/companies/{conn.realm_id}/payments",
                          {"invoice_id": given["Id"]}, status=201)  # fmt: skip

    assert defaulted["CurrencyRef"] == {"value": "EUR", "name": "Euro"}
    assert defaulted["ExchangeRate"] == 1.479452  # the emulator's table: EUR 1.08 USD, CAD 0.73 USD
    assert defaulted["TotalAmt"] == 113 and defaulted["HomeTotalAmt"] == 167.18
    assert (given["ExchangeRate"], given["HomeTotalAmt"]) == (1.5, 169.5)
    assert (other.status_code, fault_of(other)["code"]) == (400, "6000")
    assert "Business Validation Error: " in fault_of(other)["Detail"]
    assert paid["payment"]["CurrencyRef"]["value"] == "EUR" and paid["payment"]["TotalAmt"] == 113
    assert (await conn.read("Invoice", given["Id"]))["Balance"] == 0
    assert (await conn.read("Customer", euro["Id"]))["Balance"] == 113  # the defaulted invoice, in euros


async def test_without_multicurrency_only_the_home_currency_is_accepted(emulator: EmulatorHandle) -> None:
    conn = await connect(emulator, country="CA")
    customer = await conn.customer()

    foreign_customer = await conn.post(
        "customer", {"DisplayName": "Euro Buyer", "CurrencyRef": {"value": "EUR"}}
    )
    foreign_invoice = await conn.post("invoice", {"CustomerRef": {"value": customer["Id"]},
                                                  "CurrencyRef": {"value": "EUR"}, "Line": [coded_line(1, "x")]})  # fmt: skip
    home = await conn.ok("invoice", {"CustomerRef": {"value": customer["Id"]}, "CurrencyRef": {"value": "CAD"},
                                     "Line": [coded_line(10, await tax_code_id(conn, "GST"))]})  # fmt: skip

    assert fault_of(foreign_customer)["Detail"] == MULTICURRENCY_OFF
    assert fault_of(foreign_invoice)["Detail"] == MULTICURRENCY_OFF
    assert home["CurrencyRef"] == {"value": "CAD", "name": "Canadian Dollar"}
    assert "ExchangeRate" not in home and "HomeTotalAmt" not in home

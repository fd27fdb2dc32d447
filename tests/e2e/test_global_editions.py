"""Every QuickBooks company, not only a US one with default settings: tax codes in global editions, the company
check (numbering, automatic credits, closed books, multicurrency) and what the user reads when something blocks.

Intuit's behaviour is in shared/reference/quickbooks-global-editions.md; the emulator reproduces it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.service import RPCError, RPCStatusCode

from tests.e2e.test_invoice_sync import api_calls
from tests.engine import Engine
from workflows.ids import invoice_workflow_id

ADA = {"client_name": "Ada Lovelace", "client_email": "ada@example.com"}


def sales_lines(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in invoice["Line"] if line["DetailType"] == "SalesItemLineDetail"]


async def qbo_invoice(engine: Engine, realm: str, synced: dict[str, Any]) -> dict[str, Any]:
    [invoice] = [i for i in await engine.qbo_invoices(realm) if i["Id"] == synced["quickbooks"]["invoice_id"]]
    return invoice


async def tax_code_names(engine: Engine, realm: str) -> dict[str, str]:
    """Tax code id -> name, as QuickBooks holds them (ids differ per company)."""
    company = await engine.emulator.company(realm)
    return {code["Id"]: code["Name"] for code in company["tax_codes"]}


def line_code_names(invoice: dict[str, Any], names: dict[str, str]) -> list[str]:
    return [names[line["SalesItemLineDetail"]["TaxCodeRef"]["value"]] for line in sales_lines(invoice)]


def checks_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["code"]: check for check in status["company"]["checks"]}


async def creates(engine: Engine, realm: str) -> int:
    return api_calls(await engine.qbo_requests(realm)).count("POST /invoice")


async def add_tax_code(engine: Engine, realm: str, name: str, rate: float) -> str:
    response = await engine.emulator.admin.post(
        f"/__admin/companies/{realm}/tax-codes", json={"name": name, "rate_percent": rate}
    )
    response.raise_for_status()
    return str(response.json()["TaxCode"]["Id"])


async def set_tax_code_active(engine: Engine, realm: str, code_id: str, active: bool) -> None:
    response = await engine.emulator.admin.put(
        f"/__admin/companies/{realm}/tax-codes/{code_id}", json={"active": active}
    )
    response.raise_for_status()


async def wait_for_company(engine: Engine, account: str, done: Any = None) -> dict[str, Any]:
    status: dict[str, Any] = await engine.wait_for(
        lambda: engine.connection_status(account),
        lambda body: body.get("company") is not None and (done is None or done(body)),
    )
    return status


# --- tax in global editions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "currency", "rate", "taxed_code", "untaxed_code"),
    [
        ("CA", "CAD", "13", "HST ON", "Zero-rated"),
        ("GB", "GBP", "20", "20.0% S", "0.0% Z"),
        ("AU", "AUD", "10", "GST", "GST free"),
    ],
)
async def test_a_global_edition_invoice_gets_a_tax_code_on_every_line_and_quickbooks_tax_matches(
    engine: Engine, country: str, currency: str, rate: str, taxed_code: str, untaxed_code: str
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(country=country)
    await engine.connect(account, realm)
    status = await wait_for_company(engine, account)
    assert (status["company"]["country"], status["company"]["home_currency"]) == (country, currency)
    assert status["sync_paused_reason"] is None

    lines = [
        # The reference's live Canadian invoice: 6698.22 at 13% gives TotalTax 870.77 and TotalAmt 7568.99.
        {
            "description": "Architecture review",
            "quantity": "1",
            "unit_price_cents": 669822,
            "tax_rate_percent": rate,
        },
        {"description": "Travel", "quantity": "1", "unit_price_cents": 4550},
    ]
    await engine.send_invoice(account, "taxed", number="G-1", currency=currency, lines=lines, **ADA)
    await engine.send_invoice(account, "untaxed", number="G-2", currency=currency, **ADA)
    taxed = await engine.wait_for_invoice(account, "taxed", "synced", "failed")
    untaxed = await engine.wait_for_invoice(account, "untaxed", "synced", "failed")
    assert (taxed["status"], taxed["last_error"]) == ("synced", None)
    assert (untaxed["status"], untaxed["last_error"]) == ("synced", None)

    names = await tax_code_names(engine, realm)
    invoice = await qbo_invoice(engine, realm, taxed)
    assert line_code_names(invoice, names) == [taxed_code, untaxed_code]
    expected_tax = round(6698.22 * int(rate) / 100, 2)
    assert invoice["TxnTaxDetail"]["TotalTax"] == expected_tax
    assert invoice["TotalAmt"] == round(6698.22 + 45.50 + expected_tax, 2)
    assert taxed["total_cents"] == round(invoice["TotalAmt"] * 100)
    if country == "CA":
        assert expected_tax == 870.77
    assert line_code_names(await qbo_invoice(engine, realm, untaxed), names) == [untaxed_code, untaxed_code]

    # Paid in QuickBooks with the tax included: paid here.
    payment = await engine.emulator.admin.post(
        f"/__admin/companies/{realm}/payments", json={"invoice_id": invoice["Id"]}
    )
    payment.raise_for_status()
    paid = await engine.wait_for_invoice(account, "taxed", "paid")
    assert paid["balance_cents"] == 0


async def test_a_us_company_takes_tax_and_non_and_the_rate_of_its_sales_tax_code(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(preferences={"TaxPrefs": {"UsingSalesTax": True}})
    california = await add_tax_code(engine, realm, "California", 7.25)
    await engine.connect(account, realm)
    await wait_for_company(engine, account)

    lines = [
        {
            "description": "Architecture review",
            "quantity": "2",
            "unit_price_cents": 10000,
            "tax_rate_percent": "7.25",
        },
        {"description": "Travel", "quantity": "1", "unit_price_cents": 4550},
    ]
    await engine.send_invoice(account, "taxed", number="US-1", lines=lines, **ADA)
    await engine.send_invoice(account, "plain", number="US-2", **ADA)
    taxed = await engine.wait_for_invoice(account, "taxed", "synced", "failed")
    plain = await engine.wait_for_invoice(account, "plain", "synced", "failed")
    assert (taxed["status"], taxed["last_error"], plain["status"]) == ("synced", None, "synced")

    invoice = await qbo_invoice(engine, realm, taxed)
    assert [line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in sales_lines(invoice)] == [
        "TAX",
        "NON",
    ]
    assert invoice["TxnTaxDetail"]["TxnTaxCodeRef"]["value"] == california
    assert (invoice["TxnTaxDetail"]["TotalTax"], invoice["TotalAmt"]) == (14.5, 260)
    plain_invoice = await qbo_invoice(engine, realm, plain)
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in sales_lines(plain_invoice)} == {
        "NON"
    }
    assert plain_invoice["TxnTaxDetail"]["TotalTax"] == 0


async def test_quickbooks_tax_that_differs_from_the_platforms_is_reported_not_kept_silently(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(country="CA")
    await engine.connect(account, realm)
    await wait_for_company(engine, account)
    lines = [{"description": "Review", "quantity": "1", "unit_price_cents": 10000, "tax_rate_percent": "13"}]
    # The platform says 12.00 of tax; QuickBooks computes 13.00 at 13%.
    await engine.send_invoice(account, "inv", number="M-1", currency="CAD", lines=lines, total_tax_cents=1200)
    synced = await engine.wait_for(
        lambda: engine.invoice(account, "inv"), lambda body: body["status"] == "synced" and body["last_error"]
    )
    assert "13.00" in synced["last_error"] and "12.00" in synced["last_error"]
    assert synced["notification"]["kind"] == "sync_mismatch"
    assert (await qbo_invoice(engine, realm, synced))["TotalAmt"] == 113


async def test_a_tax_fault_is_explained_not_retried_and_a_manual_retry_works_once_fixed(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    # Sales tax off when the company is checked; the user turns it on afterwards, so the stored check is stale and
    # QuickBooks refuses the invoice without tax codes (6000, "Make sure all your transactions have a GST/HST
    # rate before you save.").
    realm = await engine.emulator.create_company(
        country="CA", preferences={"TaxPrefs": {"UsingSalesTax": False}}
    )
    await engine.connect(account, realm)
    await wait_for_company(engine, account)
    await engine.emulator.set_preferences(realm, {"TaxPrefs": {"UsingSalesTax": True}})

    await engine.send_invoice(account, "inv", number="T-1", currency="CAD", **ADA)
    failed = await engine.wait_for_invoice(account, "inv", "failed", "synced")
    assert failed["status"] == "failed"
    assert "GST/HST rate" in failed["last_error"]
    assert "needs a sales tax code on every line" in failed["last_error"]
    assert await creates(engine, realm) == 1  # a validation fault: not retried

    retried = await engine.api.post(f"/v1/accounts/{account}/invoices/inv/quickbooks/retry")
    assert retried.status_code == 202
    synced = await engine.wait_for_invoice(account, "inv", "synced", timeout=60)
    assert synced["last_error"] is None
    names = await tax_code_names(engine, realm)
    assert line_code_names(await qbo_invoice(engine, realm, synced), names) == ["Zero-rated", "Zero-rated"]


async def test_a_rate_several_codes_share_fails_with_their_names_until_the_account_chooses_one(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(country="CA")
    await engine.connect(account, realm)
    second = await add_tax_code(engine, realm, "HST 13 (old)", 13)
    await engine.api.post(f"/v1/accounts/{account}/quickbooks/company-check")
    await wait_for_company(engine, account, lambda body: True)
    codes = await engine.wait_for(
        lambda: engine.api.get(f"/v1/accounts/{account}/quickbooks/tax-codes"),
        lambda response: (
            response.status_code == 200 and any(code["id"] == second for code in response.json()["codes"])
        ),
    )
    listed = {code["name"]: code for code in codes.json()["codes"]}
    assert listed["HST ON"]["rate_percent"] == "13" and listed["Zero-rated"]["zero_rated"] is True
    assert codes.json()["no_tax_code"]["name"] == "Zero-rated"

    lines = [
        {"description": "Review", "quantity": "1", "unit_price_cents": 10000, "tax_rate_percent": "13.0"}
    ]
    await engine.send_invoice(account, "inv", number="A-1", currency="CAD", lines=lines, **ADA)
    failed = await engine.wait_for_invoice(account, "inv", "failed", "synced")
    assert failed["status"] == "failed"
    assert "Several QuickBooks tax codes have a rate of 13% (HST ON, HST 13 (old))" in failed["last_error"]
    assert await creates(engine, realm) == 0

    base = f"/v1/accounts/{account}/quickbooks/tax-codes"
    wrong_rate = await engine.api.put(base, json={"rates": {"13": listed["GST"]["id"]}})
    assert (wrong_rate.status_code, wrong_rate.json()["error"]["code"]) == (422, "tax_code_rate_mismatch")
    unknown = await engine.api.put(base, json={"rates": {"13": "999"}})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "unknown_tax_code")
    twice = await engine.api.put(base, json={"rates": {"13": second, "13.0": listed["HST ON"]["id"]}})
    assert (twice.status_code, twice.json()["error"]["code"]) == (422, "duplicate_rate")
    zero_rate = await engine.api.put(base, json={"rates": {"0.0": listed["Exempt"]["id"]}})
    assert (zero_rate.status_code, zero_rate.json()["error"]["code"]) == (422, "use_no_tax")
    taxed_for_none = await engine.api.put(base, json={"no_tax": listed["HST ON"]["id"]})
    assert (taxed_for_none.status_code, taxed_for_none.json()["error"]["code"]) == (
        422,
        "tax_code_not_untaxed",
    )
    chosen = await engine.api.put(base, json={"rates": {"13": second}, "no_tax": listed["Exempt"]["id"]})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["defaults"] == {"no_tax": listed["Exempt"]["id"], "rates": {"13": second}}
    assert chosen.json()["check_requested"] is True

    await engine.api.post(f"/v1/accounts/{account}/invoices/inv/quickbooks/retry")
    synced = await engine.wait_for_invoice(account, "inv", "synced", timeout=60)
    names = await tax_code_names(engine, realm)
    assert line_code_names(await qbo_invoice(engine, realm, synced), names) == ["HST 13 (old)"]
    await engine.send_invoice(account, "plain", number="A-2", currency="CAD", **ADA)
    plain = await engine.wait_for_invoice(account, "plain", "synced")
    assert line_code_names(await qbo_invoice(engine, realm, plain), names) == ["Exempt", "Exempt"]


async def test_a_company_without_an_untaxed_code_pauses_syncing_and_resumes_once_one_exists(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(country="GB")
    company = await engine.emulator.company(realm)
    zero_rate = [
        code["Id"] for code in company["tax_codes"] if code["Name"] in ("0.0% Z", "Exempt", "No VAT")
    ]
    for code_id in zero_rate:
        await set_tax_code_active(engine, realm, code_id, False)
    await engine.connect(account, realm)
    status = await wait_for_company(engine, account)
    [blocking] = [check for check in status["company"]["checks"] if check["severity"] == "blocking"]
    assert blocking["code"] == "no_untaxed_code"
    assert status["sync_paused_reason"] == blocking["message"]
    notifications = (await engine.api.get(f"/v1/accounts/{account}/notifications")).json()["notifications"]
    assert [n["kind"] for n in notifications] == ["company_settings_blocked"]

    await engine.send_invoice(account, "inv", number="B-1", currency="GBP", **ADA)
    paused = await engine.wait_for_invoice(account, "inv", "paused")
    assert "zero-rated or exempt" in paused["reason"]
    assert await creates(engine, realm) == 0

    # The user turns a code back on in QuickBooks and presses Retry: the company is checked again, syncing resumes.
    await set_tax_code_active(engine, realm, zero_rate[0], True)
    retried = await engine.api.post(f"/v1/accounts/{account}/invoices/inv/quickbooks/retry")
    assert retried.status_code == 202
    synced = await engine.wait_for_invoice(account, "inv", "synced", timeout=60)
    assert synced["last_error"] is None
    status = await engine.connection_status(account)
    assert status["sync_paused_reason"] is None
    assert all(check["severity"] != "blocking" for check in status["company"]["checks"])
    notifications = (
        await engine.api.get(f"/v1/accounts/{account}/notifications", params={"include_resolved": "true"})
    ).json()["notifications"]
    assert [
        n["resolved_at"] is not None for n in notifications if n["kind"] == "company_settings_blocked"
    ] == [True]


# --- company settings ------------------------------------------------------------------------------------------


async def test_with_custom_numbers_off_quickbooks_numbers_the_invoice_and_a_lost_answer_makes_no_duplicate(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(custom_numbers=False)
    await engine.connect(account, realm)
    status = await wait_for_company(engine, account)
    assert checks_of(status)["custom_numbers_off"]["severity"] == "warning"
    assert status["company"]["custom_transaction_numbers"] is False

    # The create is committed in QuickBooks but its answer is lost: the retry must find it without a DocNumber.
    fault = {"kind": "http", "method": "POST", "path_contains": "/invoice", "realm_id": realm, "status": 500,
             "apply": "after", "count": 1}  # fmt: skip
    (await engine.emulator.admin.post("/__admin/faults", json=fault)).raise_for_status()
    await engine.send_invoice(account, "inv", number="INV-77", **ADA)
    synced = await engine.wait_for_invoice(account, "inv", "synced", timeout=60)
    # The retry found it by its customer and date (no number to look for) and wrote nothing again.
    assert await creates(engine, realm) == 1
    invoices = await engine.qbo_invoices(realm)
    assert len(invoices) == 1
    [invoice] = invoices
    assert invoice["Id"] == synced["quickbooks"]["invoice_id"]
    assert invoice["DocNumber"] != "INV-77" and invoice["DocNumber"].isdigit()  # QuickBooks' own number
    assert invoice["CustomerMemo"]["value"] == "Invoice INV-77"
    assert "INV-77" in invoice["PrivateNote"]


async def test_automatic_credits_are_a_warning_and_syncing_goes_on(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(preferences={"SalesFormsPrefs": {"AutoApplyCredit": True}})
    await engine.connect(account, realm)
    status = await wait_for_company(engine, account)
    credit = checks_of(status)["auto_apply_credit"]
    assert credit["severity"] == "warning"
    assert credit["message"].startswith(
        "QuickBooks applies open credits to new invoices automatically: a client's credit may be used on an "
        "invoice you sent."
    )
    assert status["sync_paused_reason"] is None
    await engine.send_invoice(account, "inv", **ADA)
    assert (await engine.wait_for_invoice(account, "inv", "synced"))["last_error"] is None


async def test_closed_books_refuse_an_earlier_invoice_in_words_and_a_manual_retry_works_once_reopened(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(
        preferences={"AccountingInfoPrefs": {"BookCloseDate": "2026-11-30"}}
    )
    await engine.connect(account, realm)
    status = await wait_for_company(engine, account)
    assert "2026-11-30" in checks_of(status)["books_closed"]["message"]

    await engine.send_invoice(account, "old", number="C-1", issue_date="2026-11-24", **ADA)
    await engine.send_invoice(
        account, "new", number="C-2", issue_date="2026-12-01", due_date="2026-12-31", **ADA
    )
    failed = await engine.wait_for_invoice(account, "old", "failed", "synced")
    assert failed["status"] == "failed"
    assert (
        "closed through 2026-11-30" in failed["last_error"]
        and "Move the closing date" in failed["last_error"]
    )
    assert (await engine.wait_for_invoice(account, "new", "synced"))["last_error"] is None
    assert await creates(engine, realm) == 2  # one refused, one made: the refusal was not retried

    await engine.emulator.set_preferences(realm, {"AccountingInfoPrefs": {"BookCloseDate": "2026-10-31"}})
    await engine.api.post(f"/v1/accounts/{account}/invoices/old/quickbooks/retry")
    synced = await engine.wait_for_invoice(account, "old", "synced", timeout=60)
    assert synced["last_error"] is None


# --- multicurrency ---------------------------------------------------------------------------------------------


async def test_a_multicurrency_company_gets_a_eur_customer_and_invoice_beside_the_home_currency_one(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(multicurrency=True)
    await engine.connect(account, realm)
    status = await wait_for_company(engine, account)
    assert status["company"]["multicurrency"] is True

    await engine.send_invoice(account, "eur", number="E-1", currency="EUR", **ADA)
    await engine.send_invoice(account, "usd", number="E-2", currency="USD", **ADA)
    eur = await engine.wait_for_invoice(account, "eur", "synced", "failed")
    usd = await engine.wait_for_invoice(account, "usd", "synced", "failed")
    assert (eur["status"], eur["last_error"], usd["status"]) == ("synced", None, "synced")

    company = await engine.emulator.company(realm)
    customers = {c["Id"]: c for c in company["customers"]}
    eur_invoice = await qbo_invoice(engine, realm, eur)
    usd_invoice = await qbo_invoice(engine, realm, usd)
    assert eur_invoice["CurrencyRef"]["value"] == "EUR" and usd_invoice["CurrencyRef"]["value"] == "USD"
    eur_customer = customers[eur_invoice["CustomerRef"]["value"]]
    usd_customer = customers[usd_invoice["CustomerRef"]["value"]]
    assert (eur_customer["DisplayName"], eur_customer["CurrencyRef"]["value"]) == (
        "Ada Lovelace (EUR)",
        "EUR",
    )
    assert (usd_customer["DisplayName"], usd_customer["CurrencyRef"]["value"]) == ("Ada Lovelace", "USD")
    assert eur_customer["PrimaryEmailAddr"]["Address"] == usd_customer["PrimaryEmailAddr"]["Address"]

    # The next EUR invoice of the same client goes to the same EUR customer.
    await engine.send_invoice(account, "eur-2", number="E-3", currency="EUR", **ADA)
    second = await engine.wait_for_invoice(account, "eur-2", "synced")
    assert (await qbo_invoice(engine, realm, second))["CustomerRef"]["value"] == eur_customer["Id"]


async def test_a_eur_invoice_to_a_company_without_multicurrency_fails_once_with_what_to_change(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    await engine.connect(account, realm)
    await wait_for_company(engine, account)

    await engine.send_invoice(account, "eur", number="F-1", currency="EUR", **ADA)
    failed = await engine.wait_for_invoice(account, "eur", "failed", "synced")
    assert failed["status"] == "failed"
    assert "in EUR" in failed["last_error"] and "Turn on Multicurrency" in failed["last_error"]
    assert await creates(engine, realm) == 0
    assert failed["notification"]["action"] == "retry"

    # Multicurrency turned on in QuickBooks (it cannot be turned off again): the manual retry syncs it.
    await engine.emulator.set_preferences(realm, {"CurrencyPrefs": {"MultiCurrencyEnabled": True}})
    await engine.api.post(f"/v1/accounts/{account}/invoices/eur/quickbooks/retry")
    synced = await engine.wait_for_invoice(account, "eur", "synced", timeout=60)
    assert (await qbo_invoice(engine, realm, synced))["CurrencyRef"]["value"] == "EUR"


async def test_the_daily_check_sees_settings_changed_in_quickbooks_since_connecting(
    skipping_engine: Engine,
) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.emulator.create_company(preferences={"SalesFormsPrefs": {"AutoApplyCredit": False}})
    await engine.connect(account, realm)
    status = await wait_for_company(engine, account)
    assert {"books_closed", "auto_apply_credit"}.isdisjoint(checks_of(status))
    first_check = status["company"]["checked_at"]

    await engine.emulator.set_preferences(
        realm,
        {
            "AccountingInfoPrefs": {"BookCloseDate": "2026-06-30"},
            "SalesFormsPrefs": {"AutoApplyCredit": True},
        },
    )
    await engine.skip_time(timedelta(hours=26))
    status = await engine.wait_for(
        lambda: engine.connection_status(account),
        lambda body: body["company"]["checked_at"] != first_check,
        skip_time=True,
    )
    assert {"books_closed", "auto_apply_credit"} <= set(checks_of(status))
    assert status["sync_paused_reason"] is None


async def test_a_retry_pressed_while_the_invoice_is_being_paused_is_taken(engine: Engine) -> None:
    # The workflow reads `paused` from the moment it pauses, not only once the database says so: a user who sees
    # `paused` and presses Retry must not be told a sync is under way. The pause's write is held here (its timeline
    # insert waits on a table lock), which widens to seconds a window that is otherwise milliseconds long.
    if not engine.settings.database_url.startswith("postgresql"):
        pytest.skip("the window is held open with a PostgreSQL table lock")
    account = await engine.create_account()
    realm = await engine.emulator.create_company(country="GB")
    company = await engine.emulator.company(realm)
    for code in company["tax_codes"]:
        if code["Name"] in ("0.0% Z", "Exempt", "No VAT"):
            await set_tax_code_active(engine, realm, code["Id"], False)
    await engine.connect(account, realm)
    await wait_for_company(engine, account)
    async with engine.sessions() as holder:
        await engine.send_invoice(account, "inv", number="B-2", currency="GBP", **ADA)
        await holder.exec(text("LOCK TABLE invoice_timeline IN SHARE MODE"))  # type: ignore[call-overload]
        handle = engine.temporal.get_workflow_handle(invoice_workflow_id(account, "inv"))

        async def pausing() -> bool:
            try:
                description = await handle.describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                return False  # the API's starter starts it right after the send's answer
            return any(
                activity.activity_type.name == "pause_invoice"
                for activity in description.raw_description.pending_activities
            )

        await engine.wait_for(pausing, bool)
        retried = await engine.api.post(f"/v1/accounts/{account}/invoices/inv/quickbooks/retry")
        await holder.rollback()
    assert retried.status_code == 202, retried.text
    # The retry was taken: the paused invoice checks its connection again (still blocked, so it stays paused).
    paused = await engine.wait_for_invoice(account, "inv", "paused")
    assert "zero-rated or exempt" in paused["reason"]

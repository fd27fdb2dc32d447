"""What a company's settings mean for a sync: the tax code of each line, the checks, the numbers (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from activities.mapping import customer_display_names, invoice_body, totals_mismatch
from models.domain import CheckCode, CheckSeverity
from qbo.company_settings import (
    CompanySettings,
    TaxCodeProblem,
    TaxDefaults,
    blocking_reason,
    canonical_rate,
    company_checks,
    currency_problem,
    expected_tax_cents,
    explain_fault,
    invoice_tax,
    settings_from,
    untaxed_code,
)
from workflows.messages import InvoiceLine, InvoiceSnapshot


def _rate(rate_id: str, value: float, special: str = "NONE") -> dict[str, Any]:
    return {
        "Id": rate_id,
        "Name": f"rate {rate_id}",
        "RateValue": value,
        "SpecialTaxType": special,
        "Active": True,
    }


def _code(
    code_id: str, name: str, *rate_ids: str, taxable: bool = True, active: bool = True
) -> dict[str, Any]:
    return {
        "Id": code_id,
        "Name": name,
        "Active": active,
        "Taxable": taxable,
        "TaxGroup": True,
        "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": r}} for r in rate_ids]},
    }


def _preferences(**tax: Any) -> dict[str, Any]:
    return {
        "SalesFormsPrefs": {"CustomTxnNumbers": True, "AutoApplyCredit": False},
        "CurrencyPrefs": {"HomeCurrency": {"value": "CAD"}, "MultiCurrencyEnabled": False},
        "TaxPrefs": {"UsingSalesTax": True, **tax},
        "AccountingInfoPrefs": {},
    }


def canadian(*extra_codes: dict[str, Any], **tax: Any) -> CompanySettings:
    rates = [_rate("1", 13), _rate("2", 5), _rate("3", 0, "ZERO_RATE"), _rate("4", 0), _rate("5", 8)]
    codes = [
        _code("11", "HST ON", "1"),
        _code("12", "GST", "2"),
        _code("13", "Zero-rated", "3"),
        _code("14", "Exempt", "4", taxable=False),
        _code("15", "Out of Scope", "4", taxable=False),
        *extra_codes,
    ]
    return settings_from("9130", {"Country": "CA"}, _preferences(**tax), codes, rates)


def test_rates_are_one_canonical_percent() -> None:
    assert canonical_rate("13.000") == canonical_rate(13) == "13"
    assert canonical_rate("14.975") == "14.975"
    assert canonical_rate("0.0") == "0"
    with pytest.raises(ValueError, match="not a tax rate"):
        canonical_rate("-1")


def test_a_canadian_company_reads_as_a_global_edition_with_its_codes_rates_summed() -> None:
    settings = canadian()
    assert settings.global_edition and settings.home_currency == "CAD"
    assert {code.name: code.rate for code in settings.tax_codes} == {
        "HST ON": "13",
        "GST": "5",
        "Zero-rated": "0",
        "Exempt": "0",
        "Out of Scope": "0",
    }
    assert settings.code("13") is not None and settings.code("13").zero_rated  # type: ignore[union-attr]
    # Stored as JSON and read back the same.
    assert CompanySettings.from_json(settings.to_json()) == settings


def test_each_line_gets_the_code_of_its_rate_and_untaxed_lines_the_zero_rated_code() -> None:
    tax = invoice_tax(canadian(), TaxDefaults(), ["13", None, "5", "0"])
    assert tax.line_codes == ["11", "13", "12", "13"]
    assert tax.transaction == {"GlobalTaxCalculation": "TaxExcluded"}


def test_without_a_zero_rated_code_lines_without_tax_get_the_exempt_one_and_the_account_may_choose() -> None:
    settings = settings_from(
        "1",
        {"Country": "CA"},
        _preferences(),
        [_code("14", "Exempt", "4", taxable=False), _code("15", "Out of Scope", "4", taxable=False)],
        [_rate("4", 0)],
    )
    assert untaxed_code(settings, TaxDefaults()).name == "Exempt"  # type: ignore[union-attr]
    assert untaxed_code(settings, TaxDefaults(no_tax="15")).name == "Out of Scope"  # type: ignore[union-attr]


def test_no_untaxed_code_blocks_syncing_with_words_that_say_what_to_do() -> None:
    settings = settings_from(
        "1", {"Country": "GB"}, _preferences(), [_code("11", "20.0% S", "1")], [_rate("1", 20)]
    )
    checks = company_checks(settings, TaxDefaults())
    assert checks[0].code == CheckCode.NO_UNTAXED_CODE and checks[0].severity == CheckSeverity.BLOCKING
    reason = blocking_reason(checks)
    assert reason is not None and "zero-rated or exempt" in reason and "tax codes" in reason
    with pytest.raises(TaxCodeProblem):
        invoice_tax(settings, TaxDefaults(), [None])
    # A chosen default that is no longer active blocks too, with its own code.
    chosen = company_checks(canadian(), TaxDefaults(no_tax="99"))
    assert chosen[0].code == CheckCode.DEFAULT_TAX_CODE_UNUSABLE


def test_a_rate_no_code_has_or_several_codes_have_is_a_problem_named_in_words() -> None:
    with pytest.raises(TaxCodeProblem, match="no active sales tax code with a rate of 7%"):
        invoice_tax(canadian(), TaxDefaults(), ["7"])
    twin = _code("16", "HST NB old", "1")
    with pytest.raises(
        TaxCodeProblem, match=r"Several QuickBooks tax codes have a rate of 13% \(HST ON, HST NB old\)"
    ):
        invoice_tax(canadian(twin), TaxDefaults(), ["13"])
    chosen = invoice_tax(canadian(twin), TaxDefaults(rates={"13": "16"}), ["13"])
    assert chosen.line_codes == ["16"]


def test_tax_on_an_invoice_of_a_company_without_sales_tax_is_refused_with_what_to_change() -> None:
    settings = settings_from("1", {"Country": "CA"}, _preferences(UsingSalesTax=False))
    assert invoice_tax(settings, TaxDefaults(), [None]).line_codes == [None]
    with pytest.raises(TaxCodeProblem, match="sales tax is off"):
        invoice_tax(settings, TaxDefaults(), ["13"])


def test_us_lines_take_tax_and_non_and_the_rate_goes_on_the_transaction() -> None:
    us_prefs = {**_preferences(), "CurrencyPrefs": {"HomeCurrency": {"value": "USD"}}}
    codes = [
        {"Id": "TAX", "Name": "TAX", "Active": True, "Taxable": True, "TaxGroup": False},
        {"Id": "NON", "Name": "NON", "Active": True, "Taxable": False, "TaxGroup": False},
        _code("3", "California", "1"),
    ]
    settings = settings_from("1", {"Country": "US"}, us_prefs, codes, [_rate("1", 7.25)])
    tax = invoice_tax(settings, TaxDefaults(), ["7.25", None])
    assert tax.line_codes == ["TAX", "NON"]
    assert tax.transaction == {"TxnTaxDetail": {"TxnTaxCodeRef": {"value": "3"}}}
    with pytest.raises(TaxCodeProblem, match="one sales tax rate"):
        invoice_tax(settings, TaxDefaults(), ["7.25", "5"])
    plain = settings_from("1", {"Country": "US"}, {"TaxPrefs": {"UsingSalesTax": False}})
    assert invoice_tax(plain, TaxDefaults(), [None, None]).line_codes == ["NON", "NON"]


def test_checks_warn_about_numbers_credits_and_closed_books_and_name_the_currency() -> None:
    prefs = {
        "SalesFormsPrefs": {"CustomTxnNumbers": False, "AutoApplyCredit": True},
        "AccountingInfoPrefs": {"BookCloseDate": "2026-06-30"},
        "CurrencyPrefs": {"HomeCurrency": {"value": "USD"}, "MultiCurrencyEnabled": False},
        "TaxPrefs": {"UsingSalesTax": False},
    }
    settings = settings_from("1", {"Country": "US"}, prefs)
    checks = {check.code: check for check in company_checks(settings, TaxDefaults())}
    assert checks[CheckCode.AUTO_APPLY_CREDIT].message.startswith(
        "QuickBooks applies open credits to new invoices automatically: a client's credit may be used on an "
        "invoice you sent."
    )
    assert checks[CheckCode.CUSTOM_NUMBERS_OFF].severity == CheckSeverity.WARNING
    assert "2026-06-30" in checks[CheckCode.BOOKS_CLOSED].message
    assert blocking_reason(checks.values()) is None
    problem = currency_problem(settings, "EUR")
    assert problem is not None and "Turn on Multicurrency" in problem
    assert currency_problem(settings, "USD") is None


def _snapshot(lines: list[InvoiceLine], total_tax_cents: int | None = None) -> InvoiceSnapshot:
    return InvoiceSnapshot(
        number="INV-7",
        client_name="Ada Lovelace",
        client_email="ada@example.com",
        currency="CAD",
        issue_date="2026-11-24",
        due_date="2026-12-24",
        lines=lines,
        total_tax_cents=total_tax_cents,
    )


def test_the_platforms_tax_is_rounded_per_rate_as_quickbooks_does() -> None:
    # The reference's live Canadian invoice: 6698.22 at 13% HST gives TotalTax 870.77 and TotalAmt 7568.99.
    snapshot = _snapshot([InvoiceLine("Review", "1", 669822, tax_rate="13")])
    assert (snapshot.tax_cents, snapshot.total_cents) == (87077, 756899)
    assert (
        totals_mismatch(snapshot, {"TotalAmt": 7568.99, "TxnTaxDetail": {"TotalTax": 870.77}}, 87077) is None
    )
    mismatch = totals_mismatch(snapshot, {"TotalAmt": 6698.22, "TxnTaxDetail": {"TotalTax": 0}}, 87077)
    assert mismatch is not None and "870.77" in mismatch and "0.00" in mismatch
    assert _snapshot([InvoiceLine("Review", "1", 1000)], total_tax_cents=130).total_cents == 1130
    settings = canadian()
    tax = invoice_tax(settings, TaxDefaults(), ["13", None])
    assert expected_tax_cents(settings, tax, [669822, 4550]) == 87077


def test_the_expected_tax_rounds_each_rate_of_a_combined_code_as_quickbooks_does() -> None:
    # Quebec: GST 5% + QST 9.975% on 1.10 is 0.06 + 0.11 = 0.17 in QuickBooks (one TaxLine per rate), where one
    # rounding of 14.975% would say 0.16.
    quebec = _code("17", "GST/QST QC", "2", "6")
    settings = settings_from(
        "1", {"Country": "CA"}, _preferences(), [quebec], [_rate("2", 5), _rate("6", 9.975)]
    )
    assert settings.code("17").rate == "14.975"  # type: ignore[union-attr]
    tax = invoice_tax(settings, TaxDefaults(), ["14.975"])
    assert expected_tax_cents(settings, tax, [110]) == 17


def test_a_code_whose_rate_quickbooks_did_not_list_is_never_chosen() -> None:
    settings = settings_from("1", {"Country": "CA"}, _preferences(), [_code("18", "Mystery", "404")], [])
    assert settings.tax_codes == ()


def test_with_custom_numbers_off_the_number_goes_in_the_message_not_docnumber() -> None:
    snapshot = _snapshot([InvoiceLine("Review", "1", 1000)])
    body = invoice_body(snapshot, customer_id="5", item_id="9", workflow_id="wf", custom_numbers=False)
    assert "DocNumber" not in body
    assert body["CustomerMemo"] == {"value": "Invoice INV-7"}
    assert "INV-7" in body["PrivateNote"]
    assert invoice_body(snapshot, customer_id="5", item_id="9", workflow_id="wf")["DocNumber"] == "INV-7"


def test_a_foreign_currency_customer_says_its_currency_and_keeps_it_past_the_length_limit() -> None:
    assert customer_display_names("Ada Lovelace", "ada@example.com", "EUR")[:2] == [
        "Ada Lovelace (EUR)",
        "Ada Lovelace (ada@example.com) (EUR)",
    ]
    long = customer_display_names("A" * 600, "ada@example.com", "EUR")
    assert all(len(name) <= 500 for name in long)
    assert long[0].endswith(" (EUR)") and long[2].endswith("(EUR) 2")
    assert len(set(long)) == len(long)


def test_the_invoice_tax_fields_are_strict_and_tax_needs_a_taxed_line() -> None:
    from pydantic import ValidationError

    from models.schemas import InvoiceSend

    base = {
        "number": "T-1",
        "client": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "currency": "CAD",
        "issue_date": "2026-11-24",
        "due_date": "2026-12-24",
        "lines": [
            {"description": "Review", "quantity": "1", "unit_price_cents": 1000, "tax_rate_percent": "13.0"}
        ],
    }
    sent = InvoiceSend.model_validate_json(json.dumps({**base, "total_tax_cents": 130}))
    assert sent.snapshot().lines[0].tax_rate == "13" and sent.snapshot().total_cents == 1130
    for bad in (True, "130", 130.0):
        with pytest.raises(ValidationError):
            InvoiceSend.model_validate_json(json.dumps({**base, "total_tax_cents": bad}))
    untaxed = {**base, "lines": [{"description": "Review", "quantity": "1", "unit_price_cents": 1000}]}
    with pytest.raises(ValidationError, match="no line has a tax_rate_percent"):
        InvoiceSend.model_validate_json(json.dumps({**untaxed, "total_tax_cents": 130}))
    for rate in ("101", "-1", "1e2", "13.12345", "NaN"):
        line = {**base["lines"][0], "tax_rate_percent": rate}  # type: ignore[index]
        with pytest.raises(ValidationError):
            InvoiceSend.model_validate_json(json.dumps({**base, "lines": [line]}))


@pytest.mark.parametrize(
    ("code", "detail", "words"),
    [
        ("6000", "Business Validation Error: Make sure all your transactions have a VAT rate before you save.",
         "needs a sales tax code on every line"),
        ("6100", "Valid Line TaxCodes for US should be TAX or NON.", "refused a line's tax code"),
        ("6170", "The TxnTaxDetail attribute isn't allowed", "does not apply tax"),
        ("2280", "A tax amount is required with TaxCodeRef applied.", "wants a tax amount"),
        ("6470", "You either selected a tax on a transaction that's not allowed", "not allowed"),
        ("6200", "Account Period Closed Error", "Move the closing date"),
        ("6210", "A password is required", "closing password"),
    ],
)  # fmt: skip
def test_tax_and_closed_books_faults_are_explained_with_what_to_do(
    code: str, detail: str, words: str
) -> None:
    advice = explain_fault(code, detail)
    assert advice is not None and words in advice
    assert "retry" in advice


def test_other_faults_get_no_tax_advice() -> None:
    assert explain_fault("6000", "The discount amount can't be greater than the subtotal.") is None
    assert explain_fault("610", "Object Not Found") is None

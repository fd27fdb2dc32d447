"""What a QuickBooks company's settings mean for syncing: its edition, numbering, currencies, closed books and
sales tax codes (read from CompanyInfo, Preferences, TaxCode and TaxRate), the checks shown to the user, and the
tax code each invoice line gets.

Intuit's behaviour is in `shared/reference/quickbooks-global-editions.md`: a company whose `Country` is not "US"
is a global edition, where every sales line needs a `TaxCodeRef` once the company uses sales tax (fault 6000
otherwise); US companies use the pseudo codes TAX and NON, with the rate on the transaction. Tax code ids differ
per company, so they are always looked up, never assumed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from models.domain import CheckCode, CheckSeverity
from qbo.client import QboClient

US = "US"
US_TAXABLE = "TAX"
US_NON_TAXABLE = "NON"
# Where the user changes each setting in QuickBooks Online (Intuit's menus).
_SALES_SETTINGS = "Settings → Account and settings → Sales"
_ADVANCED_SETTINGS = "Settings → Account and settings → Advanced"
_TAX_SETTINGS = "Taxes → Sales tax settings"
_ZERO_RATED_NAME = re.compile(r"zero|\b0(\.0+)?%\s*z\b|\bfree\b", re.IGNORECASE)
_EXEMPT_NAME = re.compile(r"exempt", re.IGNORECASE)
# The rates a platform sends: a percent with at most four decimals, from 0 to 100.
RATE_PATTERN = r"^(100(\.0{1,4})?|[0-9]{1,2}(\.[0-9]{1,4})?)$"
NO_TAX = "none"


class TaxCodeProblem(Exception):
    """The company has no usable tax code for a line: the message says what to change, in the user's words."""


def canonical_rate(value: Any) -> str:
    """A percent as one canonical string ("13", "14.975", "0"), so 13, "13.0" and "13.000" are the same rate."""
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a tax rate: {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise ValueError(f"not a tax rate: {value!r}")
    text = format(number.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


@dataclass(frozen=True)
class TaxCodeInfo:
    """One active sales tax code of the company, with its combined sales rate (None for TAX/NON)."""

    id: str
    name: str
    rate: str | None
    taxable: bool
    group: bool
    zero_rated: bool = False
    description: str | None = None
    # Its sales rates (TaxRate id, percent): QuickBooks computes and rounds the tax of each separately.
    components: tuple[tuple[str, str], ...] = ()

    @property
    def untaxed(self) -> bool:
        """A code that adds no tax: zero-rated, exempt, out of scope."""
        return self.rate is not None and Decimal(self.rate) == 0


@dataclass(frozen=True)
class CompanySettings:
    """The company's settings that change what a sync sends; stored with the connection as JSON."""

    realm_id: str
    country: str
    home_currency: str
    multicurrency: bool
    custom_txn_numbers: bool
    auto_apply_credit: bool
    book_close_date: str | None
    using_sales_tax: bool
    automated_sales_tax: bool
    tax_codes: tuple[TaxCodeInfo, ...] = ()

    @property
    def global_edition(self) -> bool:
        return self.country != US

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CompanySettings:
        values = dict(data)
        values["tax_codes"] = tuple(
            TaxCodeInfo(**{**code, "components": tuple(tuple(c) for c in code.get("components") or ())})
            for code in values.get("tax_codes") or ()
        )
        return cls(**values)

    def code(self, code_id: str) -> TaxCodeInfo | None:
        return next((code for code in self.tax_codes if code.id == code_id), None)


@dataclass(frozen=True)
class TaxDefaults:
    """The account's own choices of tax code for this company: for lines without tax, and per rate."""

    no_tax: str | None = None
    rates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CompanyCheck:
    code: CheckCode
    severity: CheckSeverity
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code.value, "severity": self.severity.value, "message": self.message}


# --- reading -------------------------------------------------------------------------------------------------


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _ref(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("value") not in (None, ""):
        return str(value["value"])
    return None


def settings_from(
    realm_id: str,
    company_info: Mapping[str, Any],
    preferences: Mapping[str, Any],
    tax_codes: Iterable[Mapping[str, Any]] = (),
    tax_rates: Iterable[Mapping[str, Any]] = (),
) -> CompanySettings:
    """The settings a sync needs, from what QuickBooks printed."""
    sales = preferences.get("SalesFormsPrefs") or {}
    currency = preferences.get("CurrencyPrefs") or {}
    accounting = preferences.get("AccountingInfoPrefs") or {}
    tax = preferences.get("TaxPrefs") or {}
    country = str(company_info.get("Country") or US).strip().upper() or US
    rates = {str(rate.get("Id")): rate for rate in tax_rates}
    codes = []
    for code in tax_codes:
        if not _flag(code.get("Active", True)) or _flag(code.get("Hidden", False)):
            continue
        details = ((code.get("SalesTaxRateList") or {}).get("TaxRateDetail")) or []
        group = _flag(code.get("TaxGroup", False))
        components: tuple[tuple[str, str], ...] = ()
        if not group:
            rate: str | None = None  # TAX and NON: the US rate is the transaction's, not the line's
            zero_rated = False
        elif not details:
            continue  # a purchase-only code: never on a sale
        else:
            used = [rates.get(str(_ref(detail.get("TaxRateRef")))) for detail in details]
            if any(r is None for r in used):
                continue  # a rate QuickBooks did not list: its code's rate is unknown, so it is never chosen
            components = tuple(
                (str(r.get("Id")), canonical_rate(r.get("RateValue") or 0)) for r in used if r is not None
            )
            rate = canonical_rate(sum((Decimal(pct) for _, pct in components), Decimal(0)))
            zero_rated = any(str(r.get("SpecialTaxType", "")).upper() == "ZERO_RATE" for r in used if r)
        name = str(code.get("Name") or code.get("Id"))
        codes.append(
            TaxCodeInfo(
                id=str(code.get("Id")),
                name=name,
                rate=rate,
                taxable=_flag(code.get("Taxable", False)),
                group=group,
                zero_rated=zero_rated
                or (rate is not None and Decimal(rate) == 0 and bool(_ZERO_RATED_NAME.search(name))),
                description=str(code["Description"]) if code.get("Description") else None,
                components=components,
            )
        )
    close = accounting.get("BookCloseDate")
    return CompanySettings(
        realm_id=realm_id,
        country=country,
        home_currency=str(_ref(currency.get("HomeCurrency")) or "USD").upper(),
        multicurrency=_flag(currency.get("MultiCurrencyEnabled", False)),
        custom_txn_numbers=_flag(sales.get("CustomTxnNumbers", False)),
        auto_apply_credit=_flag(sales.get("AutoApplyCredit", False)),
        book_close_date=str(close)[:10] if close else None,
        using_sales_tax=_flag(tax.get("UsingSalesTax", False)),
        automated_sales_tax=_flag(tax.get("PartnerTaxEnabled", False)),
        tax_codes=tuple(
            sorted(codes, key=lambda c: (not c.id.isdigit(), int(c.id) if c.id.isdigit() else 0, c.id))
        ),
    )


async def read_company_settings(client: QboClient) -> CompanySettings:
    """CompanyInfo and Preferences, and the tax codes and rates where sales tax is used: 2 to 4 calls."""
    info = await client.company_info()
    preferences = await client.preferences()
    settings = settings_from(client.realm_id, info, preferences)
    if not settings.using_sales_tax:
        return settings
    codes = await client.query_all("SELECT * FROM TaxCode WHERE Active = true")
    rates = await client.query_all("SELECT * FROM TaxRate WHERE Active IN (true, false)")
    return settings_from(client.realm_id, info, preferences, codes, rates)


# --- tax codes for lines -------------------------------------------------------------------------------------


def percent_text(rate: str) -> str:
    return f"{rate}%"


def untaxed_code(settings: CompanySettings, defaults: TaxDefaults) -> TaxCodeInfo | None:
    """The code for lines without tax: the account's choice, else a zero-rated one, else an exempt one."""
    if defaults.no_tax is not None:
        chosen = settings.code(defaults.no_tax)
        if chosen is not None and chosen.untaxed:
            return chosen
        return None
    candidates = [code for code in settings.tax_codes if code.untaxed]
    for wanted in (lambda c: c.zero_rated, lambda c: bool(_EXEMPT_NAME.search(c.name))):
        found = [code for code in candidates if wanted(code)]
        if found:
            return found[0]
    return None


def code_for_rate(settings: CompanySettings, defaults: TaxDefaults, rate: str) -> TaxCodeInfo:
    """The active tax code whose combined sales rate is `rate` (or the account's choice for it)."""
    chosen_id = defaults.rates.get(rate)
    if chosen_id is not None:
        chosen = settings.code(chosen_id)
        if chosen is not None and chosen.rate == rate:
            return chosen
        raise TaxCodeProblem(
            f"The QuickBooks tax code chosen for {percent_text(rate)} is no longer active or no longer has that "
            f"rate. Choose another one in the QuickBooks settings of qbo-sync (tax codes), then retry."
        )
    matching = [code for code in settings.tax_codes if code.group and code.rate == rate]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        raise TaxCodeProblem(
            f"QuickBooks has no active sales tax code with a rate of {percent_text(rate)}. Add one in QuickBooks "
            f"({_TAX_SETTINGS}), or choose the code to use in the QuickBooks settings of qbo-sync, then retry."
        )
    names = ", ".join(code.name for code in matching)
    raise TaxCodeProblem(
        f"Several QuickBooks tax codes have a rate of {percent_text(rate)} ({names}). Choose the one to use in the "
        "QuickBooks settings of qbo-sync (tax codes), then retry."
    )


@dataclass(frozen=True)
class InvoiceTax:
    """The tax part of an invoice's create body: each line's TaxCodeRef and the transaction's fields."""

    line_codes: list[str | None]
    transaction: dict[str, Any]


def invoice_tax(settings: CompanySettings, defaults: TaxDefaults, line_rates: list[str | None]) -> InvoiceTax:
    """Tax codes for lines with these rates (None or "0": no tax). TaxCodeProblem when the company cannot take them."""
    taxed = sorted({rate for rate in line_rates if rate is not None and Decimal(rate) != 0}, key=Decimal)
    if taxed and not settings.using_sales_tax:
        raise TaxCodeProblem(
            f"This invoice charges tax ({', '.join(percent_text(rate) for rate in taxed)}) but sales tax is off in "
            f"this QuickBooks company. Turn on sales tax in QuickBooks ({_TAX_SETTINGS}), then retry."
        )
    if not settings.global_edition:
        return _us_invoice_tax(settings, defaults, line_rates, taxed)
    if not settings.using_sales_tax:
        return InvoiceTax(line_codes=[None] * len(line_rates), transaction={})
    codes: list[str | None] = []
    for rate in line_rates:
        if rate is None or Decimal(rate) == 0:
            untaxed = untaxed_code(settings, defaults)
            if untaxed is None:
                raise TaxCodeProblem(no_untaxed_code_message(settings, defaults))
            codes.append(untaxed.id)
        else:
            codes.append(code_for_rate(settings, defaults, rate).id)
    # The platform's amounts are before tax: QuickBooks adds the tax of each code (reference §2).
    return InvoiceTax(line_codes=codes, transaction={"GlobalTaxCalculation": "TaxExcluded"})


def _us_invoice_tax(
    settings: CompanySettings, defaults: TaxDefaults, line_rates: list[str | None], taxed: list[str]
) -> InvoiceTax:
    codes: list[str | None] = [
        US_NON_TAXABLE if rate is None or Decimal(rate) == 0 else US_TAXABLE for rate in line_rates
    ]
    if not taxed or settings.automated_sales_tax:
        # Automated sales tax computes the rate from the addresses; TxnTaxCodeRef is not the app's to set.
        return InvoiceTax(line_codes=codes, transaction={})
    if len(taxed) > 1:
        raise TaxCodeProblem(
            "A US QuickBooks company applies one sales tax rate to a whole invoice, and this invoice's lines have "
            f"several ({', '.join(percent_text(rate) for rate in taxed)}). It cannot be synced as it is: issue it on "
            "the platform as invoices of one rate each, or enter it in QuickBooks by hand."
        )
    code = code_for_rate(settings, defaults, taxed[0])
    return InvoiceTax(line_codes=codes, transaction={"TxnTaxDetail": {"TxnTaxCodeRef": {"value": code.id}}})


def expected_tax_cents(settings: CompanySettings, tax: InvoiceTax, line_amounts: list[int]) -> int | None:
    """The tax QuickBooks computes for lines with these codes: per sales rate, the net amounts of the lines using
    it times the rate, rounded half up to the cent (one TaxLine per rate). None where QuickBooks decides the rate
    itself (US automated sales tax)."""
    net_by_rate: dict[tuple[str, str], int] = {}

    def add(code: TaxCodeInfo | None, amount: int) -> None:
        for component in code.components if code is not None else ():
            net_by_rate[component] = net_by_rate.get(component, 0) + amount

    if settings.global_edition:
        for amount, code_id in zip(line_amounts, tax.line_codes, strict=True):
            add(settings.code(code_id) if code_id is not None else None, amount)
    else:
        txn_code = _ref((tax.transaction.get("TxnTaxDetail") or {}).get("TxnTaxCodeRef"))
        if txn_code is None:
            return None if settings.automated_sales_tax and US_TAXABLE in tax.line_codes else 0
        for amount, code_id in zip(line_amounts, tax.line_codes, strict=True):
            if code_id == US_TAXABLE:
                add(settings.code(txn_code), amount)
    return sum(
        int((Decimal(net) * Decimal(percent) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        for (_, percent), net in net_by_rate.items()
    )


# --- the check -----------------------------------------------------------------------------------------------


def no_untaxed_code_message(settings: CompanySettings, defaults: TaxDefaults) -> str:
    if defaults.no_tax is not None:
        return (
            "The QuickBooks tax code chosen for lines without tax is no longer active. Choose another one in the "
            "QuickBooks settings of qbo-sync (tax codes); syncing resumes then."
        )
    return (
        f"QuickBooks needs a tax code on every line of a {settings.country} company, and it has no active "
        f"zero-rated or exempt code for lines without tax. Add one in QuickBooks ({_TAX_SETTINGS}) or choose "
        "the code to use in the QuickBooks settings of qbo-sync (tax codes); syncing resumes then."
    )


def company_checks(settings: CompanySettings, defaults: TaxDefaults) -> list[CompanyCheck]:
    """What the company's settings mean for syncing, blocking problems first."""
    checks: list[CompanyCheck] = []

    def add(code: CheckCode, severity: CheckSeverity, message: str) -> None:
        checks.append(CompanyCheck(code, severity, message))

    edition = "US" if not settings.global_edition else f"global ({settings.country})"
    add(
        CheckCode.EDITION,
        CheckSeverity.INFO,
        f"QuickBooks Online {edition} edition, home currency {settings.home_currency}.",
    )
    if settings.global_edition and settings.using_sales_tax:
        untaxed = untaxed_code(settings, defaults)
        if untaxed is None:
            code = (
                CheckCode.DEFAULT_TAX_CODE_UNUSABLE
                if defaults.no_tax is not None
                else CheckCode.NO_UNTAXED_CODE
            )
            add(code, CheckSeverity.BLOCKING, no_untaxed_code_message(settings, defaults))
        else:
            add(
                CheckCode.UNTAXED_CODE,
                CheckSeverity.INFO,
                f'Lines without tax get the QuickBooks tax code "{untaxed.name}"; lines with a tax rate get the '
                "active code of that rate.",
            )
    for rate, code_id in sorted(defaults.rates.items()):
        chosen = settings.code(code_id)
        if chosen is None or chosen.rate != rate:
            add(
                CheckCode.DEFAULT_TAX_CODE_UNUSABLE,
                CheckSeverity.WARNING,
                f"The QuickBooks tax code chosen for {percent_text(rate)} is no longer active or no longer has "
                "that rate: invoices with that rate fail until another one is chosen.",
            )
    if not settings.using_sales_tax:
        add(
            CheckCode.SALES_TAX_OFF,
            CheckSeverity.INFO,
            f"Sales tax is off in QuickBooks: invoices without tax sync as they are; an invoice that charges tax "
            f"fails until sales tax is turned on ({_TAX_SETTINGS}).",
        )
    elif settings.automated_sales_tax:
        add(
            CheckCode.AUTOMATED_SALES_TAX,
            CheckSeverity.WARNING,
            "QuickBooks calculates sales tax automatically from the customer's address: the tax on a synced "
            "invoice may differ from the platform's, and a difference is reported on the invoice.",
        )
    if not settings.custom_txn_numbers:
        add(
            CheckCode.CUSTOM_NUMBERS_OFF,
            CheckSeverity.WARNING,
            "QuickBooks numbers invoices itself (custom transaction numbers are off): a synced invoice gets "
            "QuickBooks' next number, and the platform's number is shown in its message and memo. Turn on "
            f"Custom transaction numbers ({_SALES_SETTINGS}) to keep the platform's numbers.",
        )
    if settings.auto_apply_credit:
        add(
            CheckCode.AUTO_APPLY_CREDIT,
            CheckSeverity.WARNING,
            "QuickBooks applies open credits to new invoices automatically: a client's credit may be used on an "
            f"invoice you sent. Turn off Automatically apply credits ({_ADVANCED_SETTINGS}) to prevent it.",
        )
    if settings.book_close_date is not None:
        add(
            CheckCode.BOOKS_CLOSED,
            CheckSeverity.WARNING,
            f"The books are closed through {settings.book_close_date} in QuickBooks: an invoice dated on or before "
            "that day cannot be added or voided there until the closing date is moved "
            f"({_ADVANCED_SETTINGS} → Accounting).",
        )
    if settings.multicurrency:
        add(
            CheckCode.MULTICURRENCY_ON,
            CheckSeverity.INFO,
            f"Multicurrency is on: an invoice in another currency than {settings.home_currency} goes to a "
            "QuickBooks customer of that currency (one per client and currency).",
        )
    else:
        add(
            CheckCode.MULTICURRENCY_OFF,
            CheckSeverity.INFO,
            f"Multicurrency is off in QuickBooks: only invoices in {settings.home_currency} can sync.",
        )
    order = {CheckSeverity.BLOCKING: 0, CheckSeverity.WARNING: 1, CheckSeverity.INFO: 2}
    return sorted(checks, key=lambda check: order[check.severity])


def blocking_reason(checks: Iterable[CompanyCheck]) -> str | None:
    blocking = [check.message for check in checks if check.severity == CheckSeverity.BLOCKING]
    return " ".join(blocking) if blocking else None


def currency_problem(settings: CompanySettings, currency: str) -> str | None:
    """Why an invoice in `currency` cannot go to this company, or None."""
    if currency.upper() == settings.home_currency or settings.multicurrency:
        return None
    return (
        f"This invoice is in {currency.upper()}, but the QuickBooks company works in {settings.home_currency} only "
        f"(multicurrency is off). Turn on Multicurrency in QuickBooks ({_ADVANCED_SETTINGS} → Currency; it cannot "
        "be turned off again), then retry."
    )


def books_closed_message(close_date: str | None, txn_date: str) -> str:
    through = f" through {close_date}" if close_date else ""
    return (
        f"The books are closed{through} in QuickBooks, so an invoice dated {txn_date} cannot be added or changed "
        f"there. Move the closing date in QuickBooks ({_ADVANCED_SETTINGS} → Accounting → Close the books), "
        "then retry."
    )


# Intuit's fault codes about tax (reference §2) and what the user does about each.
_TAX_FAULTS = {
    "6100": "QuickBooks refused a line's tax code.",
    "6170": "QuickBooks refused the invoice's tax details for a company that does not apply tax to it.",
    "2280": "QuickBooks wants a tax amount with the tax code.",
    "6470": "QuickBooks refused a tax that is not allowed on this transaction, or a missing tax rate.",
}


def explain_fault(code: str | None, detail: str | None) -> str | None:
    """What to do about a tax or closed-books fault, in the user's words; None for other faults."""
    text = (detail or "").lower()
    if code == "6000" and "rate before you save" in text:
        return (
            "QuickBooks needs a sales tax code on every line of this company's invoices. Check its sales tax "
            f"settings ({_TAX_SETTINGS}) and the tax codes chosen in the QuickBooks settings of qbo-sync, then "
            "retry: the retry reads the company's tax codes again."
        )
    if code in _TAX_FAULTS:
        return (
            f"{_TAX_FAULTS[code]} Check the company's sales tax settings ({_TAX_SETTINGS}) and the tax codes "
            "chosen in the QuickBooks settings of qbo-sync, then retry."
        )
    if code in ("6200", "6210"):
        return (
            "The books are closed in QuickBooks for this invoice's date"
            + (" (and changing them needs the closing password)" if code == "6210" else "")
            + f". Move the closing date in QuickBooks ({_ADVANCED_SETTINGS} → Accounting), then retry."
        )
    return None

"""Sales tax: the TaxCode and TaxRate lists, and the tax QuickBooks works out for an invoice's lines."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from emulator import errors
from emulator.clock import COMPANY_TZ, meta_time, parse_time, precise_time
from emulator.editions import Edition, edition_of
from emulator.errors import QBOError
from emulator.money import cents, number, to_decimal
from emulator.store import Company

TAX_EXCLUDED = "TaxExcluded"
TAX_INCLUSIVE = "TaxInclusive"
NOT_APPLICABLE = "NotApplicable"
CALCULATIONS = (TAX_EXCLUDED, TAX_INCLUSIVE, NOT_APPLICABLE)
US_LINE_CODES = ("TAX", "NON")
# "If an invoice is taxable, there is a limit of 750 lines per invoice." (Invoice reference)
MAX_TAXABLE_LINES = 750
AGENCY_ID = "1"


class TaxListError(ValueError):
    """A change to the tax lists that QuickBooks' settings page would refuse."""


# --- the lists --------------------------------------------------------------------------------------------


def _next_id(company: Company, sequence: str) -> str:
    """Tax ids start at a random number per company, so a client has to look them up by name, as in reality."""
    if sequence not in company.sequences:
        company.sequences[sequence] = secrets.randbelow(40) + 2
    return company.next_id(sequence)


def _metadata(at: datetime) -> dict[str, str]:
    stamp = precise_time(at)
    return {"CreateTime": stamp, "LastUpdatedTime": stamp}


def _rate_body(
    company: Company,
    name: str,
    description: str,
    percent: Decimal,
    special: str,
    effective: str,
    at: datetime,
) -> dict[str, Any]:
    rate = number(percent)
    return {
        "Name": name,
        "Description": description,
        "Active": True,
        "RateValue": rate,
        "AgencyRef": {"value": AGENCY_ID},
        "SpecialTaxType": special,
        "DisplayType": "ReadOnly",
        "EffectiveTaxRate": [{"RateValue": rate, "EffectiveDate": meta_time(parse_time(effective))}],
        "domain": "QBO",
        "sparse": False,
        "Id": _next_id(company, "TaxRate"),
        "SyncToken": "0",
        "MetaData": _metadata(at),
    }


def _code_body(
    company: Company,
    name: str,
    description: str,
    *,
    taxable: bool,
    rate_id: str | None,
    config: str,
    code_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    details = []
    if rate_id is not None:
        details.append({"TaxRateRef": {"value": rate_id}, "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0})
    return {
        "Name": name,
        "Description": description,
        "Active": True,
        "Hidden": False,
        "Taxable": taxable,
        "TaxGroup": rate_id is not None,
        "SalesTaxRateList": {"TaxRateDetail": details},
        "PurchaseTaxRateList": {"TaxRateDetail": []},
        "TaxCodeConfigType": config,
        "domain": "QBO",
        "sparse": False,
        "Id": code_id or _next_id(company, "TaxCode"),
        "SyncToken": "0",
        "MetaData": _metadata(at),
    }


def seed_tax_codes(company: Company, edition: Edition, at: datetime) -> None:
    """The codes a new company of the edition has: the US pseudo codes, or one group per seeded rate."""
    for seed in edition.taxes:
        rate_id = None
        if seed.rate_name is not None:
            rate = _rate_body(
                company,
                seed.rate_name,
                seed.rate_name,
                Decimal(seed.rate_percent),
                seed.special,
                seed.effective,
                at,
            )
            company.table("TaxRate")[rate["Id"]] = rate
            rate_id = rate["Id"]
        code = _code_body(
            company,
            seed.code,
            seed.description,
            taxable=seed.taxable,
            rate_id=rate_id,
            config="SYSTEM_GENERATED",
            code_id=seed.code if edition.country == "US" else None,
            at=at,
        )
        company.table("TaxCode")[code["Id"]] = code


def add_tax_code(
    company: Company, name: str, percent: Decimal, taxable: bool, description: str | None, at: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A user adds a sales tax rate in QuickBooks: one TaxRate and the TaxCode (a group) that applies it."""
    folded = name.strip().casefold()
    if not folded:
        raise TaxListError("A tax code needs a name.")
    for table in ("TaxCode", "TaxRate"):
        if any(str(other.get("Name", "")).casefold() == folded for other in company.table(table).values()):
            raise TaxListError(f"A tax code or rate named {name.strip()!r} already exists.")
    text = description if description is not None else name.strip()
    today = at.astimezone(COMPANY_TZ).date().isoformat()
    special = "ZERO_RATE" if percent == 0 else "NONE"
    rate = _rate_body(company, name.strip(), text, percent, special, today, at)
    code = _code_body(
        company,
        name.strip(),
        text,
        taxable=taxable,
        rate_id=rate["Id"],
        config="USER_DEFINED",
        code_id=None,
        at=at,
    )
    company.table("TaxRate")[rate["Id"]] = rate
    company.table("TaxCode")[code["Id"]] = code
    return code, rate


def set_tax_code_active(company: Company, code_id: str, active: bool, at: datetime) -> dict[str, Any]:
    code = company.table("TaxCode")[code_id]
    if not code["TaxGroup"]:
        raise TaxListError(f"The pseudo tax code {code['Name']} cannot be made inactive.")
    if code["Active"] != active:
        code["Active"] = active
        code["SyncToken"] = str(int(code["SyncToken"]) + 1)
        code["MetaData"] = {**code["MetaData"], "LastUpdatedTime": precise_time(at)}
    return code


# --- an invoice's tax -------------------------------------------------------------------------------------


def invoice_tax(company: Company, calculation: Any, supplied_detail: Any, txn_code_ref: Any) -> InvoiceTax:
    """The rules for one invoice write, from its GlobalTaxCalculation and the TxnTaxDetail it carries.

    `txn_code_ref` is the TxnTaxCodeRef in force (US only): supplied now, or kept by a sparse update.
    """
    if company.country == "US":
        # GlobalTaxCalculation is "not applicable to US companies": ignored.
        tax = InvoiceTax(company, None)
        if (
            tax.using_sales_tax
            and isinstance(txn_code_ref, dict)
            and txn_code_ref.get("value") not in (None, "")
        ):
            code = company.table("TaxCode").get(str(txn_code_ref["value"]))
            if code is None or code.get("Active") is False:
                raise errors.object_not_found()
            if not code["TaxGroup"]:
                raise errors.business_error(
                    "TxnTaxDetail.TxnTaxCodeRef must reference a sales tax rate, not the line codes TAX or NON."
                )
            tax.txn_code = code
        return tax
    chosen = calculation if calculation not in (None, "") else TAX_EXCLUDED
    if chosen not in CALCULATIONS:
        raise errors.invalid_property(
            "GlobalTaxCalculation", f"value {chosen} is not one of {', '.join(CALCULATIONS)}"
        )
    if chosen == NOT_APPLICABLE and _meaningful(supplied_detail):
        raise errors.business_error(
            "The TxnTaxDetail attribute isn't allowed when GlobalTaxCalculation is set to NotApplicable.",
            code="6170",
        )
    return InvoiceTax(company, str(chosen))


def _meaningful(detail: Any) -> bool:
    """A TxnTaxDetail that says something: an empty one or {"TotalTax": 0} (what a read prints) does not."""
    if not isinstance(detail, dict):
        return False
    return any(key != "TotalTax" for key in detail) or detail.get("TotalTax") not in (None, 0, "0")


@dataclass
class _RateTotal:
    rate_id: str
    percent: Decimal
    net: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)


@dataclass
class InvoiceTax:
    """The tax rules of one invoice write: which line codes are valid, and the TxnTaxDetail they produce.

    `calculation` is None for US companies (GlobalTaxCalculation is "not applicable to US companies").
    """

    company: Company
    calculation: str | None
    # US only: the TaxCode of TxnTaxDetail.TxnTaxCodeRef.
    txn_code: dict[str, Any] | None = None
    lines_by_code: dict[str, list[tuple[Decimal, Decimal]]] = field(default_factory=dict)

    @property
    def using_sales_tax(self) -> bool:
        return bool(self.company.preferences.get("TaxPrefs", {}).get("UsingSalesTax", False))

    @property
    def computes_global_tax(self) -> bool:
        return self.calculation in (TAX_EXCLUDED, TAX_INCLUSIVE) and self.using_sales_tax

    @property
    def inclusive(self) -> bool:
        return self.calculation == TAX_INCLUSIVE and self.using_sales_tax

    def taxable(self) -> bool:
        return self.computes_global_tax or self.txn_code is not None

    def _rates_of(self, code: dict[str, Any]) -> list[tuple[str, Decimal]]:
        rates = []
        for detail in code.get("SalesTaxRateList", {}).get("TaxRateDetail", []):
            rate_id = str(detail["TaxRateRef"]["value"])
            rate = self.company.table("TaxRate").get(rate_id)
            if rate is not None:
                rates.append((rate_id, to_decimal(rate["RateValue"])))
        return rates

    def line_code(self, detail: dict[str, Any]) -> str | None:
        """The TaxCodeRef value a sales line keeps, after QuickBooks' checks."""
        value = detail.get("TaxCodeRef")
        supplied = (
            str(value["value"]) if isinstance(value, dict) and value.get("value") not in (None, "") else None
        )
        if self.calculation is None:
            code = supplied or "NON"
            if code not in US_LINE_CODES:
                raise QBOError(
                    "6100",
                    "Invalid Line TaxCode in the request",
                    f"Valid Line TaxCodes for US should be TAX or NON. Supplied value:{code}",
                )
            return code
        if supplied is None:
            if self.computes_global_tax:
                tax_name = self.company_tax_name()
                raise errors.business_error(
                    f"Make sure all your transactions have a {tax_name} rate before you save."
                )
            return None
        found = self.company.table("TaxCode").get(supplied)
        if found is None or found.get("Active") is False:
            raise errors.object_not_found()
        return supplied

    def company_tax_name(self) -> str:
        return edition_of(self.company.country).tax_name or "sales tax"

    def gross_divisor(self, code_id: str | None) -> Decimal:
        """1 + the code's rates: what a tax-inclusive amount is divided by to get the net amount."""
        if not self.inclusive or code_id is None:
            return Decimal(1)
        code = self.company.table("TaxCode")[code_id]
        if not code.get("Taxable", True):
            return Decimal(1)
        return 1 + sum((percent for _, percent in self._rates_of(code)), Decimal(0)) / 100

    def note_line(self, code_id: str | None, net: Decimal, gross: Decimal) -> None:
        if code_id is not None:
            self.lines_by_code.setdefault(code_id, []).append((net, gross))

    def detail(self, subtotal: Decimal, discount: Decimal, *, discount_first: bool) -> dict[str, Any]:
        """TxnTaxDetail as QuickBooks computes it: one TaxLine per rate, rounded on the rate's total."""
        if self.calculation is None:
            return self._us_detail(subtotal, discount, discount_first=discount_first)
        if not self.computes_global_tax:
            return {"TotalTax": 0}
        # Global editions always apply a discount before tax: it lowers every line's net in proportion.
        share = (subtotal - discount) / subtotal if subtotal else Decimal(1)
        totals: dict[str, _RateTotal] = {}
        for code_id, amounts in self.lines_by_code.items():
            code = self.company.table("TaxCode")[code_id]
            if not code.get("Taxable", True):
                continue
            rates = self._rates_of(code)
            net = sum((n for n, _ in amounts), Decimal(0))
            gross = sum((g for _, g in amounts), Decimal(0))
            code_tax = None
            if self.inclusive and discount == 0:
                code_tax = gross - net  # what the lines' tax-inclusive amounts held
            allocated = Decimal(0)
            combined = sum((percent for _, percent in rates), Decimal(0))
            for index, (rate_id, percent) in enumerate(rates):
                entry = totals.setdefault(rate_id, _RateTotal(rate_id, percent))
                taxable_net = cents(net * share)
                if code_tax is None:
                    tax = cents(taxable_net * percent / 100)
                elif index == len(rates) - 1:
                    tax = code_tax - allocated
                else:
                    tax = cents(code_tax * percent / combined) if combined else Decimal(0)
                allocated += tax
                entry.net += taxable_net
                entry.tax += tax
        if self.calculation == TAX_EXCLUDED:
            # Rounded on each rate's total net, not line by line (6698.22 at 13% is 870.77).
            for entry in totals.values():
                entry.tax = cents(entry.net * entry.percent / 100)
        return _printed(totals.values(), None)

    def _us_detail(self, subtotal: Decimal, discount: Decimal, *, discount_first: bool) -> dict[str, Any]:
        if self.txn_code is None or not self.using_sales_tax:
            return {"TotalTax": 0}
        base = sum((net for net, _ in self.lines_by_code.get("TAX", [])), Decimal(0))
        if discount_first and subtotal:
            base = base * (subtotal - discount) / subtotal
        base = cents(base)
        totals = [
            _RateTotal(rate_id, percent, base, cents(base * percent / 100))
            for rate_id, percent in self._rates_of(self.txn_code)
        ]
        return _printed(totals, {"value": self.txn_code["Id"]})


def _printed(totals: Any, txn_code_ref: dict[str, Any] | None) -> dict[str, Any]:
    lines = []
    total_tax = Decimal(0)
    for entry in totals:
        total_tax += entry.tax
        lines.append(
            {
                "Amount": number(entry.tax),
                "DetailType": "TaxLineDetail",
                "TaxLineDetail": {
                    "TaxRateRef": {"value": entry.rate_id},
                    "PercentBased": True,
                    "TaxPercent": number(entry.percent),
                    "NetAmountTaxable": number(cents(entry.net)),
                },
            }
        )
    detail: dict[str, Any] = {}
    if txn_code_ref is not None:
        detail["TxnTaxCodeRef"] = txn_code_ref
    detail["TotalTax"] = number(cents(total_tax))
    if lines:
        detail["TaxLine"] = lines
    return detail


def total_tax(detail: dict[str, Any]) -> Decimal:
    return to_decimal(detail.get("TotalTax", 0))

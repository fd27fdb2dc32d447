"""QuickBooks Online's editions by country: home currency, address, sales tax wording and the tax codes a new
company starts with (shared/reference/quickbooks-global-editions.md; the README lists the choices)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedTax:
    """One tax code a new company has, with the single rate it groups (none for the US pseudo codes)."""

    code: str
    description: str
    taxable: bool
    rate_name: str | None = None
    rate_percent: int = 0
    special: str = "NONE"  # TaxRate.SpecialTaxType
    effective: str = "2000-01-01"  # EffectiveTaxRate.EffectiveDate


@dataclass(frozen=True)
class Edition:
    country: str
    currency: str
    # What a line without a tax code is missing, in the 6000 refusal ("GST/HST rate"); None for the US.
    tax_name: str | None
    using_sales_tax: bool
    address: dict[str, str]
    taxes: tuple[SeedTax, ...]


US = Edition(
    country="US",
    currency="USD",
    tax_name=None,
    using_sales_tax=False,
    address={
        "Line1": "123 Sierra Way",
        "City": "San Pablo",
        "CountrySubDivisionCode": "CA",
        "PostalCode": "87999",
    },
    taxes=(SeedTax("TAX", "TAX", taxable=True), SeedTax("NON", "NON", taxable=False)),
)

CA = Edition(
    country="CA",
    currency="CAD",
    tax_name="GST/HST",
    using_sales_tax=True,
    address={"Line1": "100 King Street West", "City": "Toronto", "CountrySubDivisionCode": "ON",
             "PostalCode": "M5X 1A9", "Country": "CA"},
    taxes=(
        SeedTax("HST ON", "HST ON", True, "HST ON", 13, effective="2010-07-01"),
        SeedTax("GST", "GST", True, "GST", 5, effective="2008-01-01"),
        SeedTax("Zero-rated", "Zero-rated", True, "GST/HST ZR", 0, "ZERO_RATE"),
        SeedTax("Exempt", "Exempt", False, "Exempt", 0),
        SeedTax("Out of Scope", "Out of Scope", False, "Out of Scope", 0),
    ),
)  # fmt: skip

GB = Edition(
    country="GB",
    currency="GBP",
    tax_name="VAT",
    using_sales_tax=True,
    address={"Line1": "1 Poultry", "City": "London", "PostalCode": "EC2R 8EJ", "Country": "GB"},
    taxes=(
        SeedTax("20.0% S", "Standard", True, "SS-20.0", 20, effective="2011-01-04"),
        SeedTax("5.0% R", "Reduced", True, "RS-5.0", 5),
        SeedTax("0.0% Z", "Zero-rated", True, "ZS-0.0", 0, "ZERO_RATE"),
        SeedTax("Exempt", "Exempt", False, "Exempt", 0),
        SeedTax("No VAT", "No VAT", False, "No VAT", 0),
    ),
)

AU = Edition(
    country="AU",
    currency="AUD",
    tax_name="GST",
    using_sales_tax=True,
    address={"Line1": "1 Martin Place", "City": "Sydney", "CountrySubDivisionCode": "NSW", "PostalCode": "2000",
             "Country": "AU"},
    taxes=(
        SeedTax("GST", "GST", True, "GST", 10, effective="2000-07-01"),
        SeedTax("GST free", "GST free", True, "GST free", 0, "ZERO_RATE"),
        SeedTax("Input taxed", "Input taxed", False, "Input taxed", 0),
        SeedTax("Out of Scope", "Out of Scope", False, "Out of Scope", 0),
    ),
)  # fmt: skip

EDITIONS = {edition.country: edition for edition in (US, CA, GB, AU)}


def edition_of(country: str) -> Edition:
    return EDITIONS[country]

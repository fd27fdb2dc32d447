"""What a brand-new QuickBooks Online company contains: chart of accounts, two service items, terms, tax codes,
settings, in its country's edition."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from emulator import currency, preferences
from emulator.clock import COMPANY_TZ, precise_time
from emulator.editions import edition_of
from emulator.store import Company, new_realm_id
from emulator.tax import seed_tax_codes

# AccountType -> Classification, as QuickBooks derives it.
CLASSIFICATIONS = {
    "Bank": "Asset",
    "Accounts Receivable": "Asset",
    "Other Current Asset": "Asset",
    "Fixed Asset": "Asset",
    "Other Asset": "Asset",
    "Accounts Payable": "Liability",
    "Credit Card": "Liability",
    "Other Current Liability": "Liability",
    "Long Term Liability": "Liability",
    "Equity": "Equity",
    "Income": "Revenue",
    "Other Income": "Revenue",
    "Expense": "Expense",
    "Cost of Goods Sold": "Expense",
    "Other Expense": "Expense",
}

# The AccountSubType QuickBooks picks when a create names only the AccountType.
DEFAULT_SUBTYPES = {
    "Bank": "Checking",
    "Accounts Receivable": "AccountsReceivable",
    "Other Current Asset": "OtherCurrentAssets",
    "Fixed Asset": "OtherFixedAssets",
    "Other Asset": "OtherLongTermAssets",
    "Accounts Payable": "AccountsPayable",
    "Credit Card": "CreditCard",
    "Other Current Liability": "OtherCurrentLiabilities",
    "Long Term Liability": "OtherLongTermLiabilities",
    "Equity": "OpeningBalanceEquity",
    "Income": "SalesOfProductIncome",
    "Other Income": "OtherMiscellaneousIncome",
    "Expense": "OtherMiscellaneousServiceCost",
    "Cost of Goods Sold": "SuppliesMaterialsCogs",
    "Other Expense": "OtherMiscellaneousExpense",
}

# (Name, AccountType, AccountSubType) of a fresh US company's default chart, in Id order.
DEFAULT_ACCOUNTS = (
    ("Services", "Income", "ServiceFeeIncome"),
    ("Sales of Product Income", "Income", "SalesOfProductIncome"),
    ("Undeposited Funds", "Other Current Asset", "UndepositedFunds"),
    ("Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable"),
    ("Checking", "Bank", "Checking"),
    ("Inventory Asset", "Other Current Asset", "Inventory"),
    ("Accounts Payable (A/P)", "Accounts Payable", "AccountsPayable"),
    ("Opening Balance Equity", "Equity", "OpeningBalanceEquity"),
    ("Retained Earnings", "Equity", "RetainedEarnings"),
    ("Cost of Goods Sold", "Cost of Goods Sold", "SuppliesMaterialsCogs"),
    ("Discounts given", "Income", "DiscountsRefundsGiven"),
    ("Uncategorized Income", "Income", "OtherPrimaryIncome"),
    ("Uncategorized Expense", "Expense", "OtherMiscellaneousServiceCost"),
    ("Uncategorized Asset", "Other Asset", "OtherLongTermAssets"),
)

DEFAULT_TERMS = {
    "1": {"Name": "Due on receipt", "DueDays": 0},
    "2": {"Name": "Net 15", "DueDays": 15},
    "3": {"Name": "Net 30", "DueDays": 30},
    "4": {"Name": "Net 60", "DueDays": 60},
}


def metadata(at: datetime) -> dict[str, str]:
    stamp = precise_time(at)
    return {"CreateTime": stamp, "LastUpdatedTime": stamp}


def account_body(
    company: Company, name: str, account_type: str, subtype: str, at: datetime, currency_code: str
) -> dict[str, Any]:
    return {
        "Name": name,
        "SubAccount": False,
        "FullyQualifiedName": name,
        "Active": True,
        "Classification": CLASSIFICATIONS[account_type],
        "AccountType": account_type,
        "AccountSubType": subtype,
        "CurrentBalance": 0,
        "CurrentBalanceWithSubAccounts": 0,
        "CurrencyRef": currency.ref(currency_code),
        "domain": "QBO",
        "sparse": False,
        "Id": company.next_id("Account"),
        "SyncToken": "0",
        "MetaData": metadata(at),
    }


def service_item(company: Company, name: str, income_account_id: str, at: datetime) -> dict[str, Any]:
    return {
        "Name": name,
        "Active": True,
        "FullyQualifiedName": name,
        "Taxable": False,
        "UnitPrice": 0,
        "Type": "Service",
        "IncomeAccountRef": {"value": income_account_id},
        "PurchaseCost": 0,
        "TrackQtyOnHand": False,
        "DeferredRevenue": False,
        "domain": "QBO",
        "sparse": False,
        "Id": company.next_id("Item"),
        "SyncToken": "0",
        "MetaData": metadata(at),
    }


def new_company(
    name: str,
    at: datetime,
    realm_id: str | None = None,
    *,
    country: str = "US",
    multicurrency: bool = False,
    home_currency: str | None = None,
    preference_changes: dict[str, Any] | None = None,
) -> Company:
    """A company as QuickBooks creates it for a new subscriber of the country's edition (Net 30, no
    multicurrency unless asked), with `preference_changes` deep-merged over the edition's settings."""
    edition = edition_of(country)
    company = Company(
        realm_id=realm_id or new_realm_id(),
        name=name,
        created_at=at,
        user_id=str(secrets.randbelow(9 * 10**15) + 10**15),
        country=country,
    )
    company.preferences = preferences.merged(
        preferences.defaults(edition, home_currency or edition.currency, multicurrency, at),
        preference_changes or {},
    )
    home = company.home_currency
    accounts = company.table("Account")
    for account_name, account_type, subtype in DEFAULT_ACCOUNTS:
        body = account_body(company, account_name, account_type, subtype, at, home)
        accounts[body["Id"]] = body
    services_account = next(a["Id"] for a in accounts.values() if a["Name"] == "Services")
    items = company.table("Item")
    for item_name in ("Services", "Hours"):
        body = service_item(company, item_name, services_account, at)
        items[body["Id"]] = body
    company.terms = {key: dict(value) for key, value in DEFAULT_TERMS.items()}
    seed_tax_codes(company, edition, at)
    address = {"Id": company.next_id("address"), **edition.address}
    start = at.astimezone(COMPANY_TZ).date().isoformat()
    company.company_info = {
        "CompanyName": name,
        "LegalName": name,
        "CompanyAddr": dict(address),
        "CustomerCommunicationAddr": dict(address),
        "LegalAddr": dict(address),
        "CustomerCommunicationEmailAddr": {"Address": "noreply@example.com"},
        "PrimaryPhone": {},
        "CompanyStartDate": start,
        "FiscalYearStartMonth": "January",
        "Country": country,
        "Email": {"Address": "noreply@example.com"},
        "WebAddr": {},
        "SupportedLanguages": "en",
        "NameValue": [
            {"Name": "NeoEnabled", "Value": "true"},
            {"Name": "IndustryType", "Value": "Professional services"},
            {"Name": "CompanyType", "Value": "Other/None"},
            {"Name": "SubscriptionStatus", "Value": "SUBSCRIBED"},
            {"Name": "OfferingSku", "Value": "QuickBooks Online Plus"},
            {"Name": "PayrollFeature", "Value": "false"},
            {"Name": "AccountantFeature", "Value": "false"},
            {"Name": "IsQbdtMigrated", "Value": "false"},
            {"Name": "ItemCategoriesFeature", "Value": "true"},
            {"Name": "AssignedTime", "Value": "Online"},
        ],
        "domain": "QBO",
        "sparse": False,
        "Id": "1",
        "SyncToken": "0",
        "MetaData": metadata(at),
    }
    return company


def upgrade(company: Company) -> None:
    """A company from a state file written before tax codes existed gets its edition's codes."""
    if not company.table("TaxCode"):
        seed_tax_codes(company, edition_of(company.country), company.created_at)

"""What a brand-new US QuickBooks Online company contains: chart of accounts, two service items, terms."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from emulator.clock import COMPANY_TZ, precise_time
from emulator.store import Company, new_realm_id

USD = {"value": "USD", "name": "United States Dollar"}

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

COMPANY_ADDRESS = {
    "Line1": "123 Sierra Way",
    "City": "San Pablo",
    "CountrySubDivisionCode": "CA",
    "PostalCode": "87999",
}


def metadata(at: datetime) -> dict[str, str]:
    stamp = precise_time(at)
    return {"CreateTime": stamp, "LastUpdatedTime": stamp}


def account_body(
    company: Company, name: str, account_type: str, subtype: str, at: datetime
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
        "CurrencyRef": dict(USD),
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


def new_company(name: str, at: datetime, realm_id: str | None = None) -> Company:
    """A company as QuickBooks creates it for a new US subscriber: USD, no multicurrency, Net 30."""
    company = Company(
        realm_id=realm_id or new_realm_id(),
        name=name,
        created_at=at,
        user_id=str(secrets.randbelow(9 * 10**15) + 10**15),
    )
    accounts = company.table("Account")
    for account_name, account_type, subtype in DEFAULT_ACCOUNTS:
        body = account_body(company, account_name, account_type, subtype, at)
        accounts[body["Id"]] = body
    services_account = next(a["Id"] for a in accounts.values() if a["Name"] == "Services")
    items = company.table("Item")
    for item_name in ("Services", "Hours"):
        body = service_item(company, item_name, services_account, at)
        items[body["Id"]] = body
    company.terms = {key: dict(value) for key, value in DEFAULT_TERMS.items()}
    address = {"Id": company.next_id("address"), **COMPANY_ADDRESS}
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
        "Country": "US",
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
    company.preferences = {
        "AccountingInfoPrefs": {
            "TrackDepartments": False,
            "ClassTrackingPerTxn": False,
            "ClassTrackingPerTxnLine": False,
            "CustomerTerminology": "Customers",
            "FirstMonthOfFiscalYear": "January",
        },
        "SalesFormsPrefs": {
            "CustomTxnNumbers": False,
            "AllowDeposit": False,
            "AllowDiscount": True,
            "AllowEstimates": True,
            "AllowShipping": False,
            "DefaultTerms": {"value": "3"},
            "AutoApplyCredit": True,
            "ETransactionEnabledStatus": "NotApplicable",
        },
        "CurrencyPrefs": {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "USD"}},
        "TaxPrefs": {"UsingSalesTax": False, "PartnerTaxEnabled": False},
        "domain": "QBO",
        "sparse": False,
        "Id": "1",
        "SyncToken": "0",
        "MetaData": metadata(at),
    }
    return company

"""QuickBooks' business rules for Customer, Item, Account, Invoice, Payment and CompanyInfo writes."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from emulator import currency, errors
from emulator.clock import COMPANY_TZ, meta_time, parse_time, precise_time
from emulator.errors import QBOError
from emulator.money import NotANumber, cents, number, to_decimal, two_places
from emulator.seed import CLASSIFICATIONS, DEFAULT_SUBTYPES
from emulator.store import NAME_LISTS, READ_ONLY_LISTS, TRANSACTIONS, Company
from emulator.tax import MAX_TAXABLE_LINES, InvoiceTax, invoice_tax, total_tax

# Keys QuickBooks adds or ignores on every entity; a request may echo them back.
SYSTEM_KEYS = {"Id", "SyncToken", "sparse", "domain", "MetaData", "status"}

CUSTOMER_FIELDS = {
    "Title", "GivenName", "MiddleName", "FamilyName", "Suffix", "DisplayName", "CompanyName",
    "PrintOnCheckName", "PrimaryEmailAddr", "PrimaryPhone", "Mobile", "Fax", "AlternatePhone", "WebAddr",
    "BillAddr", "ShipAddr", "OtherAddr", "Notes", "Active", "Taxable", "PreferredDeliveryMethod",
    "CurrencyRef", "ResaleNum", "BusinessNumber", "PaymentMethodRef", "SalesTermRef", "DefaultTaxCodeRef",
    "TaxExemptionReasonId", "Job", "ParentRef", "BillWithParent", "Level", "OpenBalanceDate",
    "ARAccountRef", "CustomerTypeRef", "SecondaryTaxIdentifier", "PrimaryTaxIdentifier", "GSTIN",
    "GSTRegistrationType", "IsProject", "Source", "TaxRegimeType", "ClientEntityId",
    "FullyQualifiedName", "Balance", "BalanceWithJobs", "V4IDPseudonym",
}  # fmt: skip
CUSTOMER_READ_ONLY = {"FullyQualifiedName", "Balance", "BalanceWithJobs", "V4IDPseudonym", "ClientEntityId",
                      "IsProject", "Level", "Job"}  # fmt: skip

ITEM_FIELDS = {
    "Name", "Description", "Active", "Type", "UnitPrice", "IncomeAccountRef", "ExpenseAccountRef",
    "AssetAccountRef", "PurchaseDesc", "PurchaseCost", "Taxable", "SalesTaxIncluded", "PurchaseTaxIncluded",
    "TrackQtyOnHand", "QtyOnHand", "InvStartDate", "Sku", "ParentRef", "SubItem", "Level", "ClassRef",
    "SalesTaxCodeRef", "PurchaseTaxCodeRef", "AbatementRate", "ReverseChargeRate", "ServiceType",
    "ItemCategoryType", "PrefVendorRef", "UQCDisplayText", "UQCId", "TaxClassificationRef",
    "DeferredRevenue", "FullyQualifiedName", "ReorderPoint", "Source",
}  # fmt: skip
ITEM_TYPES = {"Service", "NonInventory", "Inventory", "Category", "Group"}

ACCOUNT_FIELDS = {
    "Name", "AcctNum", "Description", "Active", "AccountType", "AccountSubType", "ParentRef", "SubAccount",
    "CurrencyRef", "TaxCodeRef", "OpeningBalance", "OpeningBalanceDate", "AccountAlias", "TxnLocationType",
    "Classification", "FullyQualifiedName", "CurrentBalance", "CurrentBalanceWithSubAccounts",
}  # fmt: skip

INVOICE_FIELDS = {
    "CustomerRef", "Line", "TxnDate", "DueDate", "DocNumber", "BillEmail", "BillEmailCc", "BillEmailBcc",
    "CurrencyRef", "ExchangeRate", "PrivateNote", "CustomerMemo", "SalesTermRef", "BillAddr", "ShipAddr",
    "ShipFromAddr", "ShipDate", "TrackingNum", "ShipMethodRef", "EmailStatus", "PrintStatus",
    "AllowOnlinePayment", "AllowOnlineCreditCardPayment", "AllowOnlineACHPayment", "AllowIPNPayment",
    "ApplyTaxAfterDiscount", "TxnTaxDetail", "CustomField", "ClassRef", "DepartmentRef", "Deposit",
    "DepositToAccountRef", "GlobalTaxCalculation", "TransactionLocationType", "LinkedTxn", "FreeFormAddress",
    "TotalAmt", "Balance", "HomeBalance", "HomeTotalAmt", "DeliveryInfo", "InvoiceLink", "RecurDataRef",
    "TaxExemptionRef", "ProjectRef", "TxnSource", "TxnStatus", "AutoDocNumber",
}  # fmt: skip
INVOICE_READ_ONLY = {"TotalAmt", "Balance", "HomeBalance", "HomeTotalAmt", "DeliveryInfo", "InvoiceLink",
                     "LinkedTxn", "TxnTaxDetail", "ShipFromAddr", "AutoDocNumber"}  # fmt: skip

PAYMENT_FIELDS = {
    "CustomerRef", "TotalAmt", "TxnDate", "PaymentRefNum", "PaymentMethodRef", "DepositToAccountRef",
    "PrivateNote", "Line", "CurrencyRef", "ExchangeRate", "ARAccountRef", "ProcessPayment",
    "CreditCardPayment", "TxnSource", "TransactionLocationType", "UnappliedAmt", "LinkedTxn", "ProjectRef",
    "TxnStatus",
}  # fmt: skip
PAYMENT_READ_ONLY = {"UnappliedAmt", "LinkedTxn"}

COMPANY_INFO_FIELDS = {
    "CompanyName", "LegalName", "CompanyAddr", "CustomerCommunicationAddr", "LegalAddr",
    "CustomerCommunicationEmailAddr", "PrimaryPhone", "CompanyStartDate", "FiscalYearStartMonth", "Country",
    "Email", "WebAddr", "SupportedLanguages", "NameValue", "OtherContactInfo", "EmployerId",
}  # fmt: skip

# Key order of each entity as QuickBooks prints it (recorded 2026-05); unknown keys keep their place at the end.
ORDER = {
    "Customer": [
        "Taxable", "BillAddr", "ShipAddr", "Notes", "Job", "BillWithParent", "ParentRef", "Level", "Balance",
        "BalanceWithJobs", "CurrencyRef", "PreferredDeliveryMethod", "IsProject", "ClientEntityId", "domain",
        "sparse", "Id", "SyncToken", "MetaData", "Title", "GivenName", "MiddleName", "FamilyName", "Suffix",
        "FullyQualifiedName", "CompanyName", "DisplayName", "PrintOnCheckName", "Active", "V4IDPseudonym",
        "PrimaryPhone", "Mobile", "Fax", "AlternatePhone", "PrimaryEmailAddr", "WebAddr", "DefaultTaxCodeRef",
        "SalesTermRef", "PaymentMethodRef",
    ],
    "Item": [
        "Name", "Description", "Active", "SubItem", "ParentRef", "Level", "FullyQualifiedName", "Taxable",
        "SalesTaxIncluded", "UnitPrice", "Type", "IncomeAccountRef", "PurchaseDesc", "PurchaseTaxIncluded",
        "PurchaseCost", "ExpenseAccountRef", "AssetAccountRef", "TrackQtyOnHand", "QtyOnHand", "InvStartDate",
        "Sku", "DeferredRevenue", "domain", "sparse", "Id", "SyncToken", "MetaData",
    ],
    "Account": [
        "Name", "SubAccount", "ParentRef", "FullyQualifiedName", "Description", "Active", "Classification",
        "AccountType", "AccountSubType", "AcctNum", "CurrentBalance", "CurrentBalanceWithSubAccounts",
        "CurrencyRef", "domain", "sparse", "Id", "SyncToken", "MetaData",
    ],
    "Invoice": [
        "AllowIPNPayment", "AllowOnlinePayment", "AllowOnlineCreditCardPayment", "AllowOnlineACHPayment",
        "InvoiceLink", "domain", "sparse", "Id", "SyncToken", "MetaData", "CustomField", "DocNumber", "TxnDate",
        "CurrencyRef", "ExchangeRate", "PrivateNote", "LinkedTxn", "Line", "TxnTaxDetail", "CustomerRef",
        "CustomerMemo", "BillAddr", "ShipAddr", "FreeFormAddress", "ShipFromAddr", "SalesTermRef", "DueDate",
        "GlobalTaxCalculation", "TotalAmt", "HomeTotalAmt", "ApplyTaxAfterDiscount", "PrintStatus", "EmailStatus",
        "BillEmail", "BillEmailCc", "BillEmailBcc", "Balance", "DeliveryInfo",
    ],
    "Payment": [
        "CustomerRef", "DepositToAccountRef", "PaymentMethodRef", "PaymentRefNum", "TotalAmt", "UnappliedAmt",
        "ProcessPayment", "domain", "sparse", "Id", "SyncToken", "MetaData", "TxnDate", "CurrencyRef",
        "ExchangeRate", "PrivateNote", "LinkedTxn", "Line",
    ],
}  # fmt: skip

LINE_ORDER = ["Id", "LineNum", "Description", "Amount", "LinkedTxn", "DetailType"]

MAX_LENGTHS = {
    "Customer": {"DisplayName": 500, "GivenName": 100, "MiddleName": 100, "FamilyName": 100, "Title": 16,
                 "Suffix": 16, "CompanyName": 100, "PrintOnCheckName": 110, "Notes": 2000},
    "Item": {"Name": 100, "Description": 4000, "Sku": 100},
    "Account": {"Name": 100, "Description": 100, "AcctNum": 20},
    "Invoice": {"DocNumber": 21, "PrivateNote": 4000},
    "Payment": {"PaymentRefNum": 21, "PrivateNote": 4000},
}  # fmt: skip
MAX_EMAIL = 100

EMAIL_STATUSES = {"NotSet", "NeedToSend", "EmailSent"}
PRINT_STATUSES = {"NotSet", "NeedToPrint", "PrintComplete"}

ENTITY_NAMES = {name.lower(): name for name in (*NAME_LISTS, *TRANSACTIONS, *READ_ONLY_LISTS, "CompanyInfo")}


@dataclass
class Change:
    """One entity change, as a webhook reports it."""

    entity: str
    id: str
    operation: str
    at: datetime


def ordered(body: dict[str, Any], order: list[str]) -> dict[str, Any]:
    rank = {key: index for index, key in enumerate(order)}
    keys = sorted(body, key=lambda key: rank.get(key, len(order)))
    return {key: body[key] for key in keys}


def canonical_entity(name: str) -> str | None:
    return ENTITY_NAMES.get(name.lower())


def is_voided(body: dict[str, Any]) -> bool:
    return bool(body.get("_voided"))


def voided_note(note: Any) -> str:
    """QuickBooks prepends "Voided" to the private note."""
    return f"Voided - {note}" if isinstance(note, str) and note else "Voided"


def _decimal(value: Any, element: str) -> Decimal:
    try:
        return to_decimal(value)
    except NotANumber:
        raise errors.invalid_property(element, "has an invalid number value") from None


def _date(value: Any, element: str) -> date:
    if not isinstance(value, str):
        raise errors.invalid_property(element, "has an invalid date value")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise errors.invalid_property(element, "has an invalid date value") from None


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value)


def _ref_value(ref: Any) -> str | None:
    if isinstance(ref, dict) and ref.get("value") not in (None, ""):
        return str(ref["value"])
    return None


class Books:
    """One company's books for the span of one request: every write goes through here.

    All writes of a request share one timestamp, and the changes they make are collected in `changes` so the
    caller can announce them by webhook.
    """

    def __init__(self, company: Company, now: datetime) -> None:
        self.company = company
        self.now = now
        self.stamp = precise_time(now)
        self.changes: list[Change] = []

    # --- lookups --------------------------------------------------------------------------------------

    def get(self, entity: str, entity_id: Any) -> dict[str, Any]:
        found = self.company.table(entity).get(str(entity_id))
        if found is None:
            raise errors.object_not_found()
        return found

    def _active(self, entity: str, ref: Any, element: str) -> dict[str, Any]:
        """A referenced object that must exist and be active (610 otherwise, as QuickBooks answers)."""
        value = _ref_value(ref)
        if value is None:
            raise errors.required_param(element)
        found = self.company.table(entity).get(value)
        if found is None or found.get("Active") is False:
            raise errors.object_not_found()
        return found

    def _undeposited_funds(self) -> str | None:
        for account in self.company.table("Account").values():
            if account.get("AccountSubType") == "UndepositedFunds" and account.get("Active", True):
                return str(account["Id"])
        return None

    # --- helpers ----------------------------------------------------------------------------------------

    def _check_fields(self, entity: str, body: dict[str, Any], allowed: set[str]) -> None:
        for key in body:
            if key not in allowed and key not in SYSTEM_KEYS:
                raise errors.invalid_property(key)

    def _check_lengths(self, entity: str, body: dict[str, Any]) -> None:
        for key, maximum in MAX_LENGTHS.get(entity, {}).items():
            value = body.get(key)
            if isinstance(value, str) and len(value) > maximum:
                raise errors.string_length(key, maximum, len(value))

    def _check_email(self, value: Any, element: str) -> None:
        if isinstance(value, dict):
            address = value.get("Address")
            if isinstance(address, str) and len(address) > MAX_EMAIL:
                raise errors.string_length(element, MAX_EMAIL, len(address))

    def _currency(self, value: Any) -> str:
        """The ISO code a CurrencyRef names (the home currency when absent), if the company may use it."""
        home = self.company.home_currency
        code = _ref_value(value)
        if code is None or code.upper() == home:
            return home
        code = code.upper()
        if not self.company.multicurrency:
            raise errors.business_error(
                f"Multicurrency is not enabled for this company; the currency {code} cannot be used. "
                f"Only the home currency {home} is accepted."
            )
        if not currency.is_known(code):
            raise errors.business_error(f"The currency {code} is not a currency QuickBooks supports.")
        return code

    def _transaction_currency(self, value: Any, customer: dict[str, Any]) -> str:
        """A transaction is in its customer's currency; naming another one is refused."""
        customer_currency = _ref_value(customer.get("CurrencyRef")) or self.company.home_currency
        if _ref_value(value) is None:
            return customer_currency
        code = self._currency(value)
        if code != customer_currency:
            raise errors.business_error(
                f"The transaction currency {code} is not the currency of the customer ({customer_currency}). "
                "A transaction must be in its customer's currency."
            )
        return code

    def _exchange_rate(
        self, code: str, fields: dict[str, Any], existing: dict[str, Any] | None, incoming: dict[str, Any]
    ) -> Decimal | None:
        """Home-currency units per unit of a foreign currency: the one given, else the emulator's table."""
        if code == self.company.home_currency:
            return None
        kept = existing is not None and _ref_value(existing.get("CurrencyRef")) == code
        if fields.get("ExchangeRate") not in (None, "") and ("ExchangeRate" in incoming or kept):
            rate = _decimal(fields["ExchangeRate"], "ExchangeRate")
            if rate <= 0:
                raise errors.invalid_property("ExchangeRate", "must be greater than zero")
            return rate
        return currency.exchange_rate(code, self.company.home_currency)

    def _add_company_currency(self, code: str) -> None:
        """ "If specified currency is not currently in the company's currency list, it is added." (Customer)"""
        table = self.company.table("CompanyCurrency")
        if code == self.company.home_currency or any(row["Code"] == code for row in table.values()):
            return
        row: dict[str, Any] = {
            "Code": code,
            "Name": currency.NAMES[code],
            "Active": True,
            "domain": "QBO",
            "sparse": False,
            "Id": self.company.next_id("CompanyCurrency"),
            "SyncToken": "0",
            "MetaData": self._new_metadata(),
        }
        table[row["Id"]] = row

    def _check_period_open(self, *txn_dates: Any) -> None:
        """Transactions dated on or before the BookCloseDate "are protected from changes" (6200)."""
        close = self.company.preferences.get("AccountingInfoPrefs", {}).get("BookCloseDate")
        if not close:
            return
        closed = date.fromisoformat(str(close)[:10])
        for txn_date in txn_dates:
            if txn_date and date.fromisoformat(str(txn_date)[:10]) <= closed:
                raise errors.period_closed(closed.isoformat())

    def _checked_for_update(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("Id") in (None, ""):
            raise errors.required_param("Id")
        existing = self.get(entity, body["Id"])
        if body.get("SyncToken") in (None, ""):
            raise errors.required_param("SyncToken")
        if str(body["SyncToken"]) != existing["SyncToken"]:
            raise errors.stale_object()
        return existing

    def _address(self, value: Any, previous: Any) -> dict[str, Any] | None:
        """An address keeps its Id across updates; a new one gets the next address Id."""
        if not isinstance(value, dict) or not value:
            return None
        address = dict(value)
        if "Id" not in address:
            if isinstance(previous, dict) and "Id" in previous:
                address["Id"] = previous["Id"]
            else:
                address["Id"] = self.company.next_id("address")
        return ordered(address, ["Id"])

    def _bump(self, body: dict[str, Any]) -> None:
        body["SyncToken"] = str(int(body["SyncToken"]) + 1)
        body["MetaData"] = {**body["MetaData"], "LastUpdatedTime": self.stamp}

    def _record(self, entity: str, body: dict[str, Any], operation: str) -> None:
        self.changes.append(Change(entity, str(body["Id"]), operation, self.now))

    def _new_metadata(self, with_user: bool = False) -> dict[str, Any]:
        if with_user:
            return {
                "CreateTime": self.stamp,
                "LastModifiedByRef": {"value": self.company.user_id},
                "LastUpdatedTime": self.stamp,
            }
        return {"CreateTime": self.stamp, "LastUpdatedTime": self.stamp}

    def _adjust_customer_balance(self, customer_id: str, delta: Decimal) -> None:
        """Open A/R moves with invoices and payments; QuickBooks bumps LastUpdatedTime, not SyncToken."""
        if delta == 0:
            return
        customer = self.company.table("Customer").get(customer_id)
        if customer is None:
            return
        customer["Balance"] = number(cents(to_decimal(customer.get("Balance", 0)) + delta))
        customer["BalanceWithJobs"] = number(cents(to_decimal(customer.get("BalanceWithJobs", 0)) + delta))
        customer["MetaData"] = {**customer["MetaData"], "LastUpdatedTime": self.stamp}
        parent_id = _ref_value(customer.get("ParentRef"))
        if parent_id is not None:
            parent = self.company.table("Customer").get(parent_id)
            if parent is not None:
                parent["BalanceWithJobs"] = number(
                    cents(to_decimal(parent.get("BalanceWithJobs", 0)) + delta)
                )

    # --- dispatch ---------------------------------------------------------------------------------------

    def write(self, entity: str, operation: str | None, include: set[str], body: Any) -> dict[str, Any]:
        """Performs `POST /{entity}?operation=...`; returns the stored object (a deleted stub for deletes)."""
        if not isinstance(body, dict):
            raise errors.invalid_property(entity, "request body must be a JSON object")
        op = (operation or "").lower()
        if op in ("", "create", "update"):
            if entity == "Payment" and "void" in include and op == "update":
                return self.void_payment(body)
            if op == "update" or body.get("Id") not in (None, ""):
                return self.update(entity, body, include)
            return self.create(entity, body, include)
        if op == "delete":
            if entity == "Invoice":
                return self.delete_invoice(body)
            if entity == "Payment":
                return self.delete_payment(body)
            raise errors.unsupported_operation("Delete", entity)
        if op == "void":
            if entity == "Invoice":
                return self.void_invoice(body)
            if entity == "Payment":
                return self.void_payment(body)
            raise errors.unsupported_operation("Void", entity)
        raise errors.unsupported_operation(operation or "", entity)

    def create(self, entity: str, body: dict[str, Any], include: set[str]) -> dict[str, Any]:
        if entity == "Customer":
            return self._save_customer(body, None, sparse=False)
        if entity == "Item":
            return self._save_item(body, None, sparse=False)
        if entity == "Account":
            return self._save_account(body, None, sparse=False)
        if entity == "Invoice":
            return self._save_invoice(body, None, sparse=False, include=include)
        if entity == "Payment":
            return self._save_payment(body, None, sparse=False)
        raise errors.unsupported_operation("Create", entity)

    def update(self, entity: str, body: dict[str, Any], include: set[str]) -> dict[str, Any]:
        if entity == "CompanyInfo":
            return self._update_company_info(body)
        existing = self._checked_for_update(entity, body)
        sparse = body.get("sparse") is True
        if entity == "Customer":
            return self._save_customer(body, existing, sparse=sparse)
        if entity == "Item":
            return self._save_item(body, existing, sparse=sparse)
        if entity == "Account":
            return self._save_account(body, existing, sparse=sparse)
        if entity == "Invoice":
            return self._save_invoice(body, existing, sparse=sparse, include=include)
        if entity == "Payment":
            return self._save_payment(body, existing, sparse=sparse)
        raise errors.unsupported_operation("Update", entity)

    # --- Customer ---------------------------------------------------------------------------------------

    def _save_customer(
        self, body: dict[str, Any], existing: dict[str, Any] | None, *, sparse: bool
    ) -> dict[str, Any]:
        self._check_fields("Customer", body, CUSTOMER_FIELDS)
        incoming = {k: v for k, v in body.items() if k in CUSTOMER_FIELDS and k not in CUSTOMER_READ_ONLY}
        if existing is not None and sparse:
            fields = {
                k: v for k, v in existing.items() if k in CUSTOMER_FIELDS and k not in CUSTOMER_READ_ONLY
            }
            fields.update(incoming)
        else:
            fields = incoming
        for key in ("DisplayName", "GivenName", "MiddleName", "FamilyName", "Title", "Suffix", "CompanyName"):
            if isinstance(fields.get(key), str):
                fields[key] = fields[key].strip()
        display = fields.get("DisplayName")
        if not display:
            parts = [
                _text(fields.get(k)) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")
            ]
            display = " ".join(part for part in parts if part)
            if not display:
                raise errors.required_param("DisplayName")
            fields["DisplayName"] = display
        self._check_lengths("Customer", fields)
        if any(char in display for char in ":\t\n"):
            raise errors.invalid_property("DisplayName", "cannot contain a colon, a tab or a new line")
        self._check_email(fields.get("PrimaryEmailAddr"), "PrimaryEmailAddr.Address")
        currency_code = self._currency(fields.get("CurrencyRef"))
        if existing is not None:
            # "Once set, it cannot be changed." (Customer reference)
            fixed = _ref_value(existing.get("CurrencyRef")) or self.company.home_currency
            if _ref_value(fields.get("CurrencyRef")) is not None and currency_code != fixed:
                raise errors.business_error(
                    f"The currency of a customer cannot be changed once it is set (it is {fixed})."
                )
            currency_code = fixed
        own_id = existing["Id"] if existing is not None else None
        folded = display.casefold()
        for other in self.company.table("Customer").values():
            if other["Id"] != own_id and str(other.get("DisplayName", "")).casefold() == folded:
                raise errors.duplicate_name()

        parent = None
        if "ParentRef" in fields and _ref_value(fields["ParentRef"]) is not None:
            parent = self._active("Customer", fields["ParentRef"], "ParentRef")
            if parent["Id"] == own_id:
                raise errors.invalid_property("ParentRef", "cannot refer to the customer itself")
        taxable = fields.get("Taxable", True) is not False
        customer: dict[str, Any] = dict(fields)
        customer["Taxable"] = taxable
        for key in ("BillAddr", "ShipAddr"):
            address = self._address(fields.get(key), existing.get(key) if existing else None)
            if address is None:
                customer.pop(key, None)
            else:
                customer[key] = address
        customer["Job"] = parent is not None
        customer["BillWithParent"] = bool(fields.get("BillWithParent", False)) and parent is not None
        if parent is not None:
            customer["ParentRef"] = {"value": parent["Id"]}
            customer["Level"] = int(parent.get("Level", 0)) + 1
        else:
            customer.pop("ParentRef", None)
            customer.pop("Level", None)
        customer["Balance"] = existing.get("Balance", 0) if existing else 0
        customer["BalanceWithJobs"] = existing.get("BalanceWithJobs", 0) if existing else 0
        customer["CurrencyRef"] = currency.ref(currency_code)
        customer["PreferredDeliveryMethod"] = fields.get("PreferredDeliveryMethod") or "Print"
        customer["IsProject"] = False
        customer["domain"] = "QBO"
        customer["sparse"] = False
        customer["FullyQualifiedName"] = f"{parent['FullyQualifiedName']}:{display}" if parent else display
        if not fields.get("PrintOnCheckName"):
            given = " ".join(_text(fields.get(k)) for k in ("GivenName", "FamilyName") if fields.get(k))
            customer["PrintOnCheckName"] = _text(fields.get("CompanyName")) or given or display
        customer["Active"] = fields.get("Active", True) is not False
        if taxable and "DefaultTaxCodeRef" not in fields and self.company.country == "US":
            customer["DefaultTaxCodeRef"] = {"value": "2"}
        if existing is None:
            customer["Id"] = self.company.next_id("Customer")
            customer["SyncToken"] = "0"
            customer["MetaData"] = self._new_metadata()
            customer["V4IDPseudonym"] = "002098" + secrets.token_hex(16)
            operation = "Create"
        else:
            customer["Id"] = existing["Id"]
            customer["SyncToken"] = existing["SyncToken"]
            customer["MetaData"] = dict(existing["MetaData"])
            if "V4IDPseudonym" in existing:
                customer["V4IDPseudonym"] = existing["V4IDPseudonym"]
            self._bump(customer)
            operation = "Update"
        stored = ordered(customer, ORDER["Customer"])
        self.company.table("Customer")[stored["Id"]] = stored
        self._add_company_currency(currency_code)
        if existing is not None and existing.get("FullyQualifiedName") != stored["FullyQualifiedName"]:
            self._rename_sub_customers(stored)
        self._record("Customer", stored, operation)
        return stored

    def _rename_sub_customers(self, parent: dict[str, Any]) -> None:
        for child in self.company.table("Customer").values():
            if _ref_value(child.get("ParentRef")) == parent["Id"]:
                child["FullyQualifiedName"] = f"{parent['FullyQualifiedName']}:{child['DisplayName']}"
                self._rename_sub_customers(child)

    # --- Item -------------------------------------------------------------------------------------------

    def _save_item(
        self, body: dict[str, Any], existing: dict[str, Any] | None, *, sparse: bool
    ) -> dict[str, Any]:
        self._check_fields("Item", body, ITEM_FIELDS)
        incoming = {k: v for k, v in body.items() if k in ITEM_FIELDS and k != "FullyQualifiedName"}
        if existing is not None and sparse:
            fields = {k: v for k, v in existing.items() if k in ITEM_FIELDS and k != "FullyQualifiedName"}
            fields.update(incoming)
        else:
            fields = incoming
        name = fields.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise errors.required_param("Name")
        name = name.strip()
        fields["Name"] = name
        self._check_lengths("Item", fields)
        if ":" in name:
            raise errors.invalid_property("Name", "cannot contain a colon")
        item_type = fields.get("Type") or "NonInventory"
        if item_type not in ITEM_TYPES:
            raise errors.invalid_property("Type")
        own_id = existing["Id"] if existing is not None else None
        for other in self.company.table("Item").values():
            if other["Id"] != own_id and str(other.get("Name", "")).casefold() == name.casefold():
                raise errors.duplicate_name(
                    "The name supplied already exists. : Another product or service is already using this "
                    "name. Please use a different name."
                )
        checks = incoming.keys() if existing is not None else fields.keys()
        if item_type in ("Service", "Inventory") and _ref_value(fields.get("IncomeAccountRef")) is None:
            raise errors.required_param("IncomeAccountRef")
        if item_type == "Inventory":
            for required in ("AssetAccountRef", "QtyOnHand", "InvStartDate"):
                if fields.get(required) in (None, ""):
                    raise errors.required_param(required)
        for ref_key in ("IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"):
            if ref_key in checks and _ref_value(fields.get(ref_key)) is not None:
                self._active("Account", fields[ref_key], ref_key)
        item: dict[str, Any] = dict(fields)
        item["Type"] = item_type
        item["Active"] = fields.get("Active", True) is not False
        item["FullyQualifiedName"] = name
        item["Taxable"] = bool(fields.get("Taxable", False))
        item["UnitPrice"] = number(_decimal(fields.get("UnitPrice", 0), "UnitPrice"))
        item["PurchaseCost"] = number(_decimal(fields.get("PurchaseCost", 0), "PurchaseCost"))
        item["TrackQtyOnHand"] = item_type == "Inventory" or bool(fields.get("TrackQtyOnHand", False))
        item["DeferredRevenue"] = bool(fields.get("DeferredRevenue", False))
        for ref_key in ("IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"):
            value = _ref_value(fields.get(ref_key))
            if value is None:
                item.pop(ref_key, None)
            else:
                item[ref_key] = {"value": value}
        item["domain"] = "QBO"
        item["sparse"] = False
        if existing is None:
            item["Id"] = self.company.next_id("Item")
            item["SyncToken"] = "0"
            item["MetaData"] = self._new_metadata()
            operation = "Create"
        else:
            item["Id"] = existing["Id"]
            item["SyncToken"] = existing["SyncToken"]
            item["MetaData"] = dict(existing["MetaData"])
            self._bump(item)
            operation = "Update"
        stored = ordered(item, ORDER["Item"])
        self.company.table("Item")[stored["Id"]] = stored
        self._record("Item", stored, operation)
        return stored

    # --- Account ----------------------------------------------------------------------------------------

    def _save_account(
        self, body: dict[str, Any], existing: dict[str, Any] | None, *, sparse: bool
    ) -> dict[str, Any]:
        self._check_fields("Account", body, ACCOUNT_FIELDS)
        computed = {"Classification", "FullyQualifiedName", "CurrentBalance", "CurrentBalanceWithSubAccounts"}
        incoming = {k: v for k, v in body.items() if k in ACCOUNT_FIELDS and k not in computed}
        if existing is not None and sparse:
            fields = {k: v for k, v in existing.items() if k in ACCOUNT_FIELDS and k not in computed}
            fields.update(incoming)
        else:
            fields = incoming
        name = fields.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise errors.required_param("Name")
        name = name.strip()
        fields["Name"] = name
        self._check_lengths("Account", fields)
        if ":" in name:
            raise errors.invalid_property("Name", "cannot contain a colon")
        currency_code = self._currency(fields.get("CurrencyRef"))
        account_type = fields.get("AccountType")
        subtype = fields.get("AccountSubType")
        if not account_type and subtype:
            account_type = next((t for t, s in DEFAULT_SUBTYPES.items() if s == subtype), None)
            if account_type is None:
                raise errors.invalid_property("AccountSubType")
        if not account_type:
            raise errors.required_param("AccountType")
        if account_type not in CLASSIFICATIONS:
            raise errors.invalid_property("AccountType")
        parent = None
        if _ref_value(fields.get("ParentRef")) is not None:
            parent = self._active("Account", fields["ParentRef"], "ParentRef")
        qualified = f"{parent['FullyQualifiedName']}:{name}" if parent else name
        own_id = existing["Id"] if existing is not None else None
        for other in self.company.table("Account").values():
            if (
                other["Id"] != own_id
                and str(other.get("FullyQualifiedName", "")).casefold() == qualified.casefold()
            ):
                raise errors.duplicate_name(
                    "The name supplied already exists. : Another account is already using this name. "
                    "Please use a different name."
                )
        account: dict[str, Any] = dict(fields)
        account["SubAccount"] = parent is not None
        if parent is not None:
            account["ParentRef"] = {"value": parent["Id"]}
        else:
            account.pop("ParentRef", None)
        account["FullyQualifiedName"] = qualified
        account["Active"] = fields.get("Active", True) is not False
        account["Classification"] = CLASSIFICATIONS[account_type]
        account["AccountType"] = account_type
        account["AccountSubType"] = subtype or DEFAULT_SUBTYPES[account_type]
        account["CurrentBalance"] = existing.get("CurrentBalance", 0) if existing else 0
        account["CurrentBalanceWithSubAccounts"] = (
            existing.get("CurrentBalanceWithSubAccounts", 0) if existing else 0
        )
        account["CurrencyRef"] = currency.ref(currency_code)
        account["domain"] = "QBO"
        account["sparse"] = False
        if existing is None:
            account["Id"] = self.company.next_id("Account")
            account["SyncToken"] = "0"
            account["MetaData"] = self._new_metadata()
            operation = "Create"
        else:
            account["Id"] = existing["Id"]
            account["SyncToken"] = existing["SyncToken"]
            account["MetaData"] = dict(existing["MetaData"])
            self._bump(account)
            operation = "Update"
        stored = ordered(account, ORDER["Account"])
        self.company.table("Account")[stored["Id"]] = stored
        self._add_company_currency(currency_code)
        self._record("Account", stored, operation)
        return stored

    # --- Invoice ----------------------------------------------------------------------------------------

    def _applied_by_payments(self, invoice: dict[str, Any]) -> Decimal:
        """Money applied to the invoice by the payments it links to."""
        total = Decimal(0)
        payments = self.company.table("Payment")
        for link in invoice.get("LinkedTxn", []):
            if link.get("TxnType") != "Payment":
                continue
            payment = payments.get(str(link.get("TxnId")))
            if payment is None:
                continue
            for line in payment.get("Line", []):
                if any(_links_invoice(linked, invoice["Id"]) for linked in line.get("LinkedTxn", [])):
                    total += to_decimal(line.get("Amount", 0))
        return total

    def _custom_numbers(self) -> bool:
        return bool(self.company.preferences.get("SalesFormsPrefs", {}).get("CustomTxnNumbers", False))

    def _check_doc_number(self, doc_number: str, own_id: str | None, include: set[str]) -> None:
        if len(doc_number) > MAX_LENGTHS["Invoice"]["DocNumber"]:
            raise errors.string_length("DocNumber", MAX_LENGTHS["Invoice"]["DocNumber"], len(doc_number))
        # Without custom numbers a supplied number "is stored even if it is a duplicate" (Invoice reference).
        if "allowduplicatedocnum" in include or not self._custom_numbers():
            return
        for other in self.company.table("Invoice").values():
            if other["Id"] != own_id and other.get("DocNumber") == doc_number:
                raise errors.duplicate_doc_number(doc_number, other["Id"])

    def _next_doc_number(self) -> str:
        used = {invoice.get("DocNumber") for invoice in self.company.table("Invoice").values()}
        candidate = self.company.last_doc_number + 1
        while str(candidate) in used:
            candidate += 1
        return str(candidate)

    def _note_doc_number(self, doc_number: str) -> None:
        if doc_number.isdigit() and len(doc_number) < 19:
            self.company.last_doc_number = max(self.company.last_doc_number, int(doc_number))

    def _default_item(self) -> dict[str, Any]:
        """QuickBooks puts a line without an ItemRef on the "Services" item."""
        for item in self.company.table("Item").values():
            if item.get("Name") == "Services" and item.get("Active", True):
                return item
        raise errors.required_param("Line.SalesItemLineDetail.ItemRef")

    def _invoice_lines(
        self, raw_lines: Any, previous: list[dict[str, Any]], taxes: InvoiceTax
    ) -> tuple[list[dict[str, Any]], Decimal, Decimal]:
        """Normalised lines plus (subtotal, discount). Lines keep their Id; new ones get the next Id."""
        if not isinstance(raw_lines, list) or not raw_lines:
            raise errors.required_param("Line")
        used_ids = {str(line["Id"]) for line in previous if "Id" in line}
        next_id = max((int(i) for i in used_ids if i.isdigit()), default=0) + 1
        lines: list[dict[str, Any]] = []
        discounts: list[dict[str, Any]] = []
        subtotal = Decimal(0)
        for raw in raw_lines:
            if not isinstance(raw, dict):
                raise errors.invalid_property("Line")
            detail_type = raw.get("DetailType")
            if detail_type is None:
                raise errors.required_param("Line.DetailType")
            if detail_type == "SubTotalLineDetail":
                continue  # QuickBooks computes the subtotal itself.
            line_id = str(raw["Id"]) if raw.get("Id") not in (None, "") else None
            if line_id is None:
                line_id = str(next_id)
                next_id += 1
            description = raw.get("Description")
            if isinstance(description, str) and len(description) > 4000:
                raise errors.string_length("Line.Description", 4000, len(description))
            if detail_type == "SalesItemLineDetail":
                line = self._sales_line(raw, line_id, taxes)
                subtotal += to_decimal(line["Amount"])
                lines.append(line)
            elif detail_type == "DescriptionOnly":
                line = {
                    "Id": line_id,
                    "Description": _text(description),
                    "Amount": 0,
                    "DetailType": "DescriptionOnly",
                    "DescriptionLineDetail": {},
                }
                lines.append(line)
            elif detail_type == "DiscountLineDetail":
                discounts.append({**raw, "Id": line_id})
            else:
                raise errors.invalid_property("Line.DetailType", f"value {detail_type} is not supported")
        if not lines:
            raise errors.required_param("Line")
        discount_total = Decimal(0)
        discount_lines = []
        for raw in discounts:
            detail = raw.get("DiscountLineDetail") or {}
            if detail.get("PercentBased"):
                percent = _decimal(detail.get("DiscountPercent"), "DiscountLineDetail.DiscountPercent")
                amount = cents(subtotal * percent / 100)
            else:
                amount = cents(_decimal(raw.get("Amount"), "Line.Amount"))
            discount_total += amount
            account = next(
                (
                    a
                    for a in self.company.table("Account").values()
                    if a.get("AccountSubType") == "DiscountsRefundsGiven"
                ),
                None,
            )
            out_detail: dict[str, Any] = {"PercentBased": bool(detail.get("PercentBased"))}
            if detail.get("PercentBased"):
                out_detail["DiscountPercent"] = number(to_decimal(detail["DiscountPercent"]))
            if account is not None:
                out_detail["DiscountAccountRef"] = {"value": account["Id"]}
            discount_lines.append(
                {
                    "Id": raw["Id"],
                    "Amount": number(amount),
                    "DetailType": "DiscountLineDetail",
                    "DiscountLineDetail": out_detail,
                }
            )
        if discount_total > subtotal:
            raise errors.business_error("The discount amount can't be greater than the subtotal.")
        for index, line in enumerate(lines, start=1):
            line["LineNum"] = index
        numbered = [ordered(line, LINE_ORDER) for line in lines]
        numbered.append(
            {"Amount": number(cents(subtotal)), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}
        )
        numbered.extend(discount_lines)
        return numbered, cents(subtotal), discount_total

    def _sales_line(self, raw: dict[str, Any], line_id: str, taxes: InvoiceTax) -> dict[str, Any]:
        if raw.get("Amount") is None:
            raise errors.required_param("Line.Amount")
        amount = cents(_decimal(raw["Amount"], "Line.Amount"))
        detail = raw.get("SalesItemLineDetail") or {}
        if not isinstance(detail, dict):
            raise errors.invalid_property("Line.SalesItemLineDetail")
        if _ref_value(detail.get("ItemRef")) is None:
            item = self._default_item()
        else:
            item = self._active("Item", detail["ItemRef"], "Line.SalesItemLineDetail.ItemRef")
        qty = _decimal(detail["Qty"], "Qty") if detail.get("Qty") is not None else None
        unit = _decimal(detail["UnitPrice"], "UnitPrice") if detail.get("UnitPrice") is not None else None
        if qty is not None and unit is not None:
            if cents(qty * unit) != amount:
                raise QBOError(
                    "6070",
                    "Amount calculation incorrect in the request",
                    f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}",
                    element="Line.Amount",
                )
        elif qty is not None and qty != 0:
            unit = amount / qty
        elif unit is not None and unit != 0:
            qty = amount / unit
        tax_code = taxes.line_code(detail)
        gross = amount
        divisor = taxes.gross_divisor(tax_code)
        if divisor != 1:
            # Tax-inclusive: the amount given includes the tax (or, re-sent as printed, TaxInclusiveAmt does).
            if detail.get("TaxInclusiveAmt") is not None:
                gross = cents(_decimal(detail["TaxInclusiveAmt"], "TaxInclusiveAmt"))
            net = cents(gross / divisor)
            if unit is not None and amount != 0:
                unit = unit * net / amount
            amount = net
        taxes.note_line(tax_code, amount, gross)
        out_detail: dict[str, Any] = {"ItemRef": {"value": item["Id"]}}
        if unit is not None:
            out_detail["UnitPrice"] = number(unit.quantize(Decimal("0.0000001")))
        if qty is not None:
            out_detail["Qty"] = number(qty.quantize(Decimal("0.00001")))
        account = _ref_value(item.get("IncomeAccountRef"))
        if account is not None:
            out_detail["ItemAccountRef"] = {"value": account}
        if tax_code is not None:
            out_detail["TaxCodeRef"] = {"value": tax_code}
        if taxes.inclusive:
            out_detail["TaxInclusiveAmt"] = number(gross)
        if detail.get("ServiceDate"):
            out_detail["ServiceDate"] = _date(detail["ServiceDate"], "ServiceDate").isoformat()
        line: dict[str, Any] = {"Id": line_id}
        if raw.get("Description") not in (None, ""):
            line["Description"] = str(raw["Description"])
        line["Amount"] = number(amount)
        line["DetailType"] = "SalesItemLineDetail"
        line["SalesItemLineDetail"] = out_detail
        line["CustomExtensions"] = []
        return line

    def _save_invoice(
        self, body: dict[str, Any], existing: dict[str, Any] | None, *, sparse: bool, include: set[str]
    ) -> dict[str, Any]:
        self._check_fields("Invoice", body, INVOICE_FIELDS)
        incoming = {k: v for k, v in body.items() if k in INVOICE_FIELDS and k not in INVOICE_READ_ONLY}
        # What a sparse update leaves alone is kept as is; a create or full update revalidates everything.
        if existing is not None and sparse:
            fields = {
                k: copy.deepcopy(v)
                for k, v in existing.items()
                if k in INVOICE_FIELDS and k not in INVOICE_READ_ONLY
            }
            fields.update(incoming)
            checks = set(incoming)
        else:
            fields = incoming
            checks = set(INVOICE_FIELDS)
        self._check_lengths("Invoice", fields)
        if "CustomerRef" not in fields or _ref_value(fields.get("CustomerRef")) is None:
            raise errors.required_param("CustomerRef")
        if "CustomerRef" in checks:
            customer = self._active("Customer", fields["CustomerRef"], "CustomerRef")
        else:
            customer = self.get("Customer", _ref_value(fields["CustomerRef"]))
        currency_code = self._transaction_currency(fields.get("CurrencyRef"), customer)
        exchange_rate = self._exchange_rate(currency_code, fields, existing, incoming)
        for key in ("BillEmail", "BillEmailCc", "BillEmailBcc"):
            self._check_email(fields.get(key), f"{key}.Address")
        if fields.get("CustomerMemo") is not None:
            memo = _text(
                (fields["CustomerMemo"] or {}).get("value")
                if isinstance(fields["CustomerMemo"], dict)
                else ""
            )
            if len(memo) > 1000:
                raise errors.string_length("CustomerMemo", 1000, len(memo))
        email_status = fields.get("EmailStatus") or "NotSet"
        if email_status not in EMAIL_STATUSES:
            raise errors.invalid_property("EmailStatus")
        print_status = fields.get("PrintStatus") or "NeedToPrint"
        if print_status not in PRINT_STATUSES:
            raise errors.invalid_property("PrintStatus")
        if email_status == "NeedToSend" and not _email(fields.get("BillEmail")):
            raise errors.business_error("An email address is required when EmailStatus is NeedToSend.")

        txn_date = (
            _date(fields["TxnDate"], "TxnDate")
            if fields.get("TxnDate")
            else self.now.astimezone(COMPANY_TZ).date()
        )
        term = None
        if _ref_value(fields.get("SalesTermRef")) is not None:
            term = self.company.terms.get(str(_ref_value(fields["SalesTermRef"])))
            if term is None:
                raise errors.object_not_found()
        if fields.get("DueDate"):
            due_date = _date(fields["DueDate"], "DueDate")
        else:
            # Without terms, a new company's default is Net 30.
            due_date = txn_date + timedelta(days=int(term["DueDays"]) if term else 30)
        if due_date < txn_date:
            raise errors.business_error("The due date cannot be earlier than the transaction date.")
        self._check_period_open(txn_date, existing.get("TxnDate") if existing else None)

        own_id = existing["Id"] if existing is not None else None
        doc_number = fields.get("DocNumber")
        if doc_number not in (None, ""):
            doc_number = _text(doc_number)
            if existing is None or doc_number != existing.get("DocNumber"):
                self._check_doc_number(doc_number, own_id, include)
        elif existing is not None and existing.get("DocNumber"):
            doc_number = existing["DocNumber"]  # a full update that omits DocNumber keeps it
        elif not self._custom_numbers():
            doc_number = self._next_doc_number()
        else:
            doc_number = None

        previous_lines = existing.get("Line", []) if existing else []
        supplied_tax = body.get("TxnTaxDetail")
        if "TxnTaxDetail" in body:
            txn_code_ref = supplied_tax.get("TxnTaxCodeRef") if isinstance(supplied_tax, dict) else None
        else:
            # A sparse update keeps the sales tax rate; a full update without TxnTaxDetail drops it.
            txn_code_ref = (
                (existing.get("TxnTaxDetail") or {}).get("TxnTaxCodeRef") if existing and sparse else None
            )
        taxes = invoice_tax(self.company, fields.get("GlobalTaxCalculation"), supplied_tax, txn_code_ref)
        lines_given = "Line" in checks or existing is None
        retax = lines_given or "TxnTaxDetail" in body or "GlobalTaxCalculation" in incoming
        if existing is not None and is_voided(existing):
            retax = lines_given  # refused below: a voided invoice keeps its zeroes
        if retax:
            raw_lines = fields.get("Line") if lines_given else copy.deepcopy(previous_lines)
            lines, subtotal, discount = self._invoice_lines(raw_lines, previous_lines, taxes)
            tax_detail = taxes.detail(
                subtotal, discount, discount_first=bool(fields.get("ApplyTaxAfterDiscount", False))
            )
            total = cents(subtotal - discount + total_tax(tax_detail))
            if taxes.taxable() and sum(1 for line in lines if "LineNum" in line) > MAX_TAXABLE_LINES:
                raise errors.business_error(f"A taxable invoice can have at most {MAX_TAXABLE_LINES} lines.")
        else:
            # Lines untouched: so is the tax QuickBooks computed for them.
            lines = copy.deepcopy(previous_lines)
            total = cents(to_decimal(existing["TotalAmt"])) if existing else Decimal(0)
            tax_detail = copy.deepcopy(existing.get("TxnTaxDetail", {"TotalTax": 0})) if existing else {}
        if total < 0:
            raise errors.business_error("The transaction total cannot be negative.")
        applied = self._applied_by_payments(existing) if existing else Decimal(0)
        if existing is not None and is_voided(existing) and "Line" in checks:
            raise errors.business_error("A voided transaction cannot be changed.")
        if total < applied:
            raise errors.business_error(
                "The invoice total cannot be less than the payments applied to it. Remove the payments first."
            )
        if existing is not None and applied > 0 and _ref_value(existing.get("CustomerRef")) != customer["Id"]:
            raise errors.business_error("The customer of an invoice with payments applied cannot be changed.")
        balance = Decimal(0) if existing is not None and is_voided(existing) else cents(total - applied)

        invoice: dict[str, Any] = {
            "AllowIPNPayment": bool(fields.get("AllowIPNPayment", False)),
            "AllowOnlinePayment": bool(fields.get("AllowOnlinePayment", False)),
            "AllowOnlineCreditCardPayment": bool(fields.get("AllowOnlineCreditCardPayment", False)),
            "AllowOnlineACHPayment": bool(fields.get("AllowOnlineACHPayment", False)),
            "domain": "QBO",
            "sparse": False,
        }
        extra = {k: v for k, v in fields.items() if k not in invoice}
        invoice.update(extra)
        invoice["CustomField"] = fields.get("CustomField") or []
        if doc_number:
            invoice["DocNumber"] = doc_number
        else:
            invoice.pop("DocNumber", None)
        invoice["TxnDate"] = txn_date.isoformat()
        invoice["CurrencyRef"] = currency.ref(currency_code)
        invoice.pop("ExchangeRate", None)
        if exchange_rate is not None:
            invoice["ExchangeRate"] = number(exchange_rate)
        invoice["LinkedTxn"] = copy.deepcopy(existing.get("LinkedTxn", [])) if existing else []
        invoice["Line"] = lines
        invoice["TxnTaxDetail"] = tax_detail
        if taxes.calculation is None:
            invoice.pop("GlobalTaxCalculation", None)
        else:
            invoice["GlobalTaxCalculation"] = taxes.calculation
        invoice["CustomerRef"] = {"value": customer["Id"]}
        for key in ("BillAddr", "ShipAddr"):
            if fields.get(key):
                address = self._address(fields[key], existing.get(key) if existing else None)
                if address is not None:
                    invoice[key] = address
            elif existing is None and customer.get(key):
                # QuickBooks copies the customer's addresses onto a new invoice.
                invoice[key] = copy.deepcopy(customer[key])
            else:
                invoice.pop(key, None)
        invoice["FreeFormAddress"] = bool(fields.get("FreeFormAddress", True))
        if existing is not None and "ShipFromAddr" in existing:
            invoice["ShipFromAddr"] = copy.deepcopy(existing["ShipFromAddr"])
        elif existing is None:
            invoice["ShipFromAddr"] = self._ship_from_address()
        if term is not None:
            invoice["SalesTermRef"] = {"value": str(_ref_value(fields["SalesTermRef"]))}
        else:
            invoice.pop("SalesTermRef", None)
        invoice["DueDate"] = due_date.isoformat()
        invoice["TotalAmt"] = number(total)
        if exchange_rate is not None:
            invoice["HomeTotalAmt"] = number(cents(total * exchange_rate))
        invoice["ApplyTaxAfterDiscount"] = bool(fields.get("ApplyTaxAfterDiscount", False))
        invoice["PrintStatus"] = print_status
        invoice["EmailStatus"] = email_status
        invoice["Balance"] = number(balance)
        if existing is not None and "DeliveryInfo" in existing:
            invoice["DeliveryInfo"] = copy.deepcopy(existing["DeliveryInfo"])
        if existing is not None and is_voided(existing):
            invoice["_voided"] = True

        if existing is None:
            invoice["Id"] = self.company.next_id("txn")
            invoice["SyncToken"] = "0"
            invoice["MetaData"] = self._new_metadata(with_user=True)
            operation = "Create"
        else:
            invoice["Id"] = existing["Id"]
            invoice["SyncToken"] = existing["SyncToken"]
            invoice["MetaData"] = dict(existing["MetaData"])
            self._bump(invoice)
            operation = "Update"
        if doc_number:
            self._note_doc_number(doc_number)
        stored = ordered(invoice, ORDER["Invoice"])
        self.company.table("Invoice")[stored["Id"]] = stored
        old_customer = _ref_value(existing.get("CustomerRef")) if existing else None
        old_balance = to_decimal(existing.get("Balance", 0)) if existing else Decimal(0)
        if old_customer is not None:
            self._adjust_customer_balance(old_customer, -old_balance)
        self._adjust_customer_balance(customer["Id"], balance)
        self._record("Invoice", stored, operation)
        return stored

    def _ship_from_address(self) -> dict[str, Any]:
        company_address = self.company.company_info.get("CompanyAddr") or {}
        region = "  ".join(
            part
            for part in (company_address.get("CountrySubDivisionCode"), company_address.get("PostalCode"))
            if part
        )
        city_line = ", ".join(part for part in (company_address.get("City"), region) if part)
        address: dict[str, Any] = {"Id": self.company.next_id("address")}
        if company_address.get("Line1"):
            address["Line1"] = company_address["Line1"]
        if city_line:
            address["Line2"] = city_line
        return address

    def void_invoice(self, body: dict[str, Any]) -> dict[str, Any]:
        """Zeroes the invoice but keeps it; refused while a payment is applied (see the README)."""
        invoice = self._checked_for_update("Invoice", body)
        if is_voided(invoice):
            return invoice  # voiding twice changes nothing
        self._check_period_open(invoice.get("TxnDate"))
        if self._applied_by_payments(invoice) > 0:
            raise errors.business_error(
                "This invoice has payments applied to it and cannot be voided. "
                "Void or delete the payments first, then void the invoice."
            )
        old_balance = to_decimal(invoice.get("Balance", 0))
        for line in invoice["Line"]:
            line["Amount"] = 0
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict):
                detail["Qty"] = 0
                detail.pop("TaxInclusiveAmt", None)
        invoice["TotalAmt"] = 0
        if "HomeTotalAmt" in invoice:
            invoice["HomeTotalAmt"] = 0
        invoice["Balance"] = 0
        invoice["TxnTaxDetail"] = {"TotalTax": 0}
        invoice["PrivateNote"] = voided_note(invoice.get("PrivateNote"))
        invoice["_voided"] = True
        self._bump(invoice)
        stored = ordered(invoice, ORDER["Invoice"])
        self.company.table("Invoice")[stored["Id"]] = stored
        self._adjust_customer_balance(str(_ref_value(invoice.get("CustomerRef"))), -old_balance)
        self._record("Invoice", stored, "Void")
        return stored

    def delete_invoice(self, body: dict[str, Any]) -> dict[str, Any]:
        invoice = self._checked_for_update("Invoice", body)
        self._check_period_open(invoice.get("TxnDate"))
        if self._applied_by_payments(invoice) > 0:
            raise errors.business_error(
                "This transaction is linked to payments. Unlink, void or delete the payments before deleting it."
            )
        del self.company.table("Invoice")[invoice["Id"]]
        self._remember_deleted("Invoice", invoice["Id"])
        self._adjust_customer_balance(
            str(_ref_value(invoice.get("CustomerRef"))), -to_decimal(invoice.get("Balance", 0))
        )
        self._record("Invoice", invoice, "Delete")
        return {"status": "Deleted", "domain": "QBO", "Id": invoice["Id"]}

    def send_invoice(self, invoice_id: str, send_to: str | None) -> dict[str, Any]:
        invoice = self.get("Invoice", invoice_id)
        if send_to is not None:
            if len(send_to) > MAX_EMAIL:
                raise errors.string_length("BillEmail.Address", MAX_EMAIL, len(send_to))
            if "@" not in send_to:
                raise errors.business_error(f"Invalid email address: {send_to}")
            invoice["BillEmail"] = {"Address": send_to}
        if not _email(invoice.get("BillEmail")):
            raise errors.business_error(
                "Email address is missing. Add an email address to BillEmail or use sendTo."
            )
        invoice["EmailStatus"] = "EmailSent"
        invoice["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": meta_time(self.now)}
        self._bump(invoice)
        stored = ordered(invoice, ORDER["Invoice"])
        self.company.table("Invoice")[stored["Id"]] = stored
        self._record("Invoice", stored, "Emailed")
        return stored

    def _remember_deleted(self, entity: str, entity_id: str) -> None:
        self.company.deleted.append({"entity": entity, "Id": entity_id, "at": self.stamp})

    # --- Payment ----------------------------------------------------------------------------------------

    def _payment_applications(self, payment: dict[str, Any]) -> dict[str, Decimal]:
        """Invoice Id -> amount this payment applies to it."""
        applied: dict[str, Decimal] = {}
        for line in payment.get("Line", []):
            for linked in line.get("LinkedTxn", []):
                if linked.get("TxnType") == "Invoice":
                    key = str(linked.get("TxnId"))
                    applied[key] = applied.get(key, Decimal(0)) + to_decimal(line.get("Amount", 0))
        return applied

    def _unapply(self, payment: dict[str, Any]) -> set[str]:
        """Gives the payment's money back to its invoices; returns the invoices touched."""
        touched = set()
        for invoice_id, amount in self._payment_applications(payment).items():
            invoice = self.company.table("Invoice").get(invoice_id)
            if invoice is None:
                continue
            invoice["Balance"] = number(cents(to_decimal(invoice.get("Balance", 0)) + amount))
            invoice["LinkedTxn"] = [
                link
                for link in invoice.get("LinkedTxn", [])
                if not (link.get("TxnType") == "Payment" and str(link.get("TxnId")) == payment["Id"])
            ]
            self._adjust_customer_balance(str(_ref_value(invoice.get("CustomerRef"))), amount)
            touched.add(invoice_id)
        return touched

    def _apply(self, payment: dict[str, Any]) -> set[str]:
        touched = set()
        for invoice_id, amount in self._payment_applications(payment).items():
            invoice = self.company.table("Invoice")[invoice_id]
            invoice["Balance"] = number(cents(to_decimal(invoice.get("Balance", 0)) - amount))
            links = [
                link
                for link in invoice.get("LinkedTxn", [])
                if not (link.get("TxnType") == "Payment" and str(link.get("TxnId")) == payment["Id"])
            ]
            if amount > 0 or not is_voided(payment):
                links.append({"TxnId": payment["Id"], "TxnType": "Payment"})
            invoice["LinkedTxn"] = _sorted_links(links)
            self._adjust_customer_balance(str(_ref_value(invoice.get("CustomerRef"))), -amount)
            touched.add(invoice_id)
        return touched

    def _touch_invoices(self, invoice_ids: Iterable[str]) -> None:
        """An invoice whose balance a payment changed gets a new SyncToken and an Update webhook."""
        for invoice_id in sorted(set(invoice_ids), key=_id_key):
            invoice = self.company.table("Invoice").get(invoice_id)
            if invoice is not None:
                self._bump(invoice)
                self._record("Invoice", invoice, "Update")

    def _payment_lines(
        self, raw_lines: Any, customer_id: str, previous: dict[str, Decimal]
    ) -> tuple[list[dict[str, Any]], Decimal]:
        if raw_lines is None:
            return [], Decimal(0)
        if not isinstance(raw_lines, list):
            raise errors.invalid_property("Line")
        lines: list[dict[str, Any]] = []
        wanted: dict[str, Decimal] = {}
        applied_total = Decimal(0)
        for raw in raw_lines:
            if not isinstance(raw, dict):
                raise errors.invalid_property("Line")
            if raw.get("Amount") is None:
                raise errors.required_param("Line.Amount")
            amount = cents(_decimal(raw["Amount"], "Line.Amount"))
            if amount < 0:
                raise errors.business_error("A payment line amount cannot be negative.")
            links = raw.get("LinkedTxn")
            if not isinstance(links, list) or not links:
                raise errors.required_param("Line.LinkedTxn")
            out_links = []
            for link in links:
                if not isinstance(link, dict) or link.get("TxnId") in (None, ""):
                    raise errors.required_param("Line.LinkedTxn.TxnId")
                txn_type = link.get("TxnType")
                if txn_type != "Invoice":
                    raise errors.invalid_property(
                        "Line.LinkedTxn.TxnType", f"value {txn_type} is not supported by the emulator"
                    )
                invoice = self.company.table("Invoice").get(str(link["TxnId"]))
                if invoice is None:
                    raise errors.object_not_found()
                if _ref_value(invoice.get("CustomerRef")) != customer_id:
                    raise errors.business_error(
                        f"Invoice {invoice['Id']} belongs to a different customer than the payment."
                    )
                wanted[invoice["Id"]] = wanted.get(invoice["Id"], Decimal(0)) + amount
                out_links.append({"TxnId": invoice["Id"], "TxnType": "Invoice"})
            lines.append({"Amount": number(amount), "LinkedTxn": out_links})
            applied_total += amount
        for invoice_id, amount in wanted.items():
            invoice = self.company.table("Invoice")[invoice_id]
            available = to_decimal(invoice.get("Balance", 0)) + previous.get(invoice_id, Decimal(0))
            if amount > available:
                raise errors.business_error(
                    f"The payment amount {two_places(amount)} applied to invoice {invoice.get('DocNumber', invoice_id)} "
                    f"is more than its open balance {two_places(available)}."
                )
        for line in lines:
            for link in line["LinkedTxn"]:
                invoice = self.company.table("Invoice")[link["TxnId"]]
                open_balance = to_decimal(invoice.get("Balance", 0)) + previous.get(link["TxnId"], Decimal(0))
                line["LineEx"] = _line_ex(link["TxnId"], open_balance, invoice.get("DocNumber"))
        return lines, applied_total

    def _save_payment(
        self, body: dict[str, Any], existing: dict[str, Any] | None, *, sparse: bool
    ) -> dict[str, Any]:
        self._check_fields("Payment", body, PAYMENT_FIELDS)
        incoming = {k: v for k, v in body.items() if k in PAYMENT_FIELDS and k not in PAYMENT_READ_ONLY}
        if existing is not None and sparse:
            fields = {
                k: copy.deepcopy(v)
                for k, v in existing.items()
                if k in PAYMENT_FIELDS and k not in PAYMENT_READ_ONLY
            }
            fields.update(incoming)
            checks = set(incoming)
        else:
            fields = incoming
            checks = set(PAYMENT_FIELDS)
        self._check_lengths("Payment", fields)
        if existing is not None and is_voided(existing) and ({"Line", "TotalAmt"} & checks):
            raise errors.business_error("A voided transaction cannot be changed.")
        if _ref_value(fields.get("CustomerRef")) is None:
            raise errors.required_param("CustomerRef")
        if fields.get("TotalAmt") is None:
            raise errors.required_param("TotalAmt")
        if "CustomerRef" in checks:
            customer = self._active("Customer", fields["CustomerRef"], "CustomerRef")
        else:
            customer = self.get("Customer", _ref_value(fields["CustomerRef"]))
        total = cents(_decimal(fields["TotalAmt"], "TotalAmt"))
        if total < 0:
            raise errors.business_error("The payment amount cannot be negative.")
        currency_code = self._transaction_currency(fields.get("CurrencyRef"), customer)
        exchange_rate = self._exchange_rate(currency_code, fields, existing, incoming)
        if (
            existing is not None
            and _ref_value(existing.get("CustomerRef")) != customer["Id"]
            and "Line" not in checks
            and self._payment_applications(existing)
        ):
            raise errors.business_error(
                "Change the lines too when moving an applied payment to another customer."
            )
        deposit = _ref_value(fields.get("DepositToAccountRef"))
        if deposit is not None and "DepositToAccountRef" in checks:
            self._active("Account", fields["DepositToAccountRef"], "DepositToAccountRef")
        deposit = deposit or self._undeposited_funds()
        txn_date = (
            _date(fields["TxnDate"], "TxnDate")
            if fields.get("TxnDate")
            else self.now.astimezone(COMPANY_TZ).date()
        )
        self._check_period_open(txn_date, existing.get("TxnDate") if existing else None)

        previous = self._payment_applications(existing) if existing else {}
        if "Line" in checks or existing is None:
            lines, applied_total = self._payment_lines(fields.get("Line"), customer["Id"], previous)
            replace_lines = True
        else:
            lines = copy.deepcopy(existing.get("Line", []))
            applied_total = sum(previous.values(), Decimal(0))
            replace_lines = False
        if applied_total > total:
            raise errors.business_error(
                f"The amount applied to invoices ({two_places(applied_total)}) is more than the payment's "
                f"total ({two_places(total)})."
            )

        payment: dict[str, Any] = {"CustomerRef": {"value": customer["Id"]}}
        if deposit is not None:
            payment["DepositToAccountRef"] = {"value": deposit}
        extra = {k: v for k, v in fields.items() if k not in ("CustomerRef", "DepositToAccountRef", "Line")}
        payment.update(extra)
        payment["TotalAmt"] = number(total)
        payment["UnappliedAmt"] = number(cents(total - applied_total))
        payment["ProcessPayment"] = bool(fields.get("ProcessPayment", False))
        payment["domain"] = "QBO"
        payment["sparse"] = False
        payment["TxnDate"] = txn_date.isoformat()
        payment["CurrencyRef"] = currency.ref(currency_code)
        payment.pop("ExchangeRate", None)
        if exchange_rate is not None:
            payment["ExchangeRate"] = number(exchange_rate)
        payment["Line"] = lines
        if existing is not None and is_voided(existing):
            payment["_voided"] = True

        touched: set[str] = set()
        if existing is None:
            payment["Id"] = self.company.next_id("txn")
            payment["SyncToken"] = "0"
            payment["MetaData"] = self._new_metadata()
            operation = "Create"
        else:
            payment["Id"] = existing["Id"]
            payment["SyncToken"] = existing["SyncToken"]
            payment["MetaData"] = dict(existing["MetaData"])
            self._bump(payment)
            operation = "Update"
            if replace_lines:
                touched |= self._unapply(existing)
            self._adjust_customer_balance(
                str(_ref_value(existing.get("CustomerRef"))), to_decimal(existing.get("UnappliedAmt", 0))
            )
        stored = ordered(payment, ORDER["Payment"])
        self.company.table("Payment")[stored["Id"]] = stored
        if replace_lines:
            touched |= self._apply(stored)
        # The unapplied remainder is a credit: it lowers what the customer owes.
        self._adjust_customer_balance(customer["Id"], -to_decimal(stored["UnappliedAmt"]))
        self._record("Payment", stored, operation)
        changed = {i for i in touched if previous.get(i) != self._payment_applications(stored).get(i)}
        self._touch_invoices(changed)
        return stored

    def void_payment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Zeroes the payment, gives its money back to the invoices, and keeps it readable."""
        payment = self._checked_for_update("Payment", body)
        if is_voided(payment):
            return payment
        self._check_period_open(payment.get("TxnDate"))
        touched = self._unapply(payment)
        self._adjust_customer_balance(
            str(_ref_value(payment.get("CustomerRef"))), to_decimal(payment.get("UnappliedAmt", 0))
        )
        for line in payment.get("Line", []):
            line["Amount"] = 0
        payment["TotalAmt"] = 0
        payment["UnappliedAmt"] = 0
        payment["PrivateNote"] = voided_note(payment.get("PrivateNote"))
        payment["_voided"] = True
        self._bump(payment)
        stored = ordered(payment, ORDER["Payment"])
        self.company.table("Payment")[stored["Id"]] = stored
        self._record("Payment", stored, "Void")
        self._touch_invoices(touched)
        return stored

    def delete_payment(self, body: dict[str, Any]) -> dict[str, Any]:
        payment = self._checked_for_update("Payment", body)
        self._check_period_open(payment.get("TxnDate"))
        touched = self._unapply(payment)
        self._adjust_customer_balance(
            str(_ref_value(payment.get("CustomerRef"))), to_decimal(payment.get("UnappliedAmt", 0))
        )
        del self.company.table("Payment")[payment["Id"]]
        self._remember_deleted("Payment", payment["Id"])
        self._record("Payment", payment, "Delete")
        self._touch_invoices(touched)
        return {"status": "Deleted", "domain": "QBO", "Id": payment["Id"]}

    # --- CompanyInfo ------------------------------------------------------------------------------------

    def _update_company_info(self, body: dict[str, Any]) -> dict[str, Any]:
        info = self.company.company_info
        if body.get("SyncToken") in (None, ""):
            raise errors.required_param("SyncToken")
        if str(body["SyncToken"]) != info["SyncToken"]:
            raise errors.stale_object()
        self._check_fields("CompanyInfo", body, COMPANY_INFO_FIELDS)
        incoming = {k: v for k, v in body.items() if k in COMPANY_INFO_FIELDS}
        if body.get("sparse") is not True:
            for key in COMPANY_INFO_FIELDS:
                if key not in incoming and key not in (
                    "CompanyName",
                    "Country",
                    "SupportedLanguages",
                    "NameValue",
                ):
                    info.pop(key, None)
        info.update(incoming)
        info["Country"] = self.company.country  # the edition cannot change
        if isinstance(info.get("CompanyName"), str) and info["CompanyName"]:
            self.company.name = info["CompanyName"]
        self._bump(info)
        return info


def _email(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("Address"), str) and value["Address"]:
        return str(value["Address"])
    return None


def _links_invoice(link: dict[str, Any], invoice_id: str) -> bool:
    return link.get("TxnType") == "Invoice" and str(link.get("TxnId")) == invoice_id


def _id_key(value: str) -> tuple[int, str]:
    return (int(value), value) if value.isdigit() else (2**62, value)


def _sorted_links(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Other links keep their order; payments follow, newest (highest Id) first, as recorded."""
    others = [link for link in links if link.get("TxnType") != "Payment"]
    payments = [link for link in links if link.get("TxnType") == "Payment"]
    payments.sort(key=lambda link: _id_key(str(link.get("TxnId"))), reverse=True)
    return others + payments


def _line_ex(invoice_id: str, open_balance: Decimal, doc_number: Any) -> dict[str, Any]:
    """The JAXB NameValue blob QuickBooks attaches to each payment line."""

    def name_value(name: str, value: str) -> dict[str, Any]:
        return {
            "name": "{http://schema.intuit.com/finance/v3}NameValue",
            "declaredType": "com.intuit.schema.finance.v3.NameValue",
            "scope": "javax.xml.bind.JAXBElement$GlobalScope",
            "value": {"Name": name, "Value": value},
            "nil": False,
            "globalScope": True,
            "typeSubstituted": False,
        }

    values = [name_value("txnId", invoice_id), name_value("txnOpenBalance", two_places(open_balance))]
    if doc_number:
        values.append(name_value("txnReferenceNumber", str(doc_number)))
    return {"any": values}


def parse_include(raw: str | None) -> set[str]:
    return {part.strip().lower() for part in (raw or "").split(",") if part.strip()}


def stored_time(body: dict[str, Any]) -> datetime:
    """An entity's precise LastUpdatedTime."""
    return parse_time(body["MetaData"]["LastUpdatedTime"])

"""Company settings (the Preferences entity): each edition's defaults, and the changes a user may make to them."""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emulator import currency
from emulator.clock import precise_time
from emulator.editions import Edition


class PreferencesRefused(ValueError):
    """A settings change QuickBooks does not allow (turning multicurrency off, a new home currency)."""


class _Section(BaseModel):
    """A partial section: only the fields given are changed; null is refused except where it clears a value."""

    model_config = ConfigDict(extra="forbid", strict=True)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in self.nullable:
                raise ValueError(f"{name} cannot be null")
        return self


class Ref(_Section):
    value: str
    name: str | None = None


class CurrencyCode(_Section):
    value: str

    @field_validator("value")
    @classmethod
    def _known(cls, value: str) -> str:
        if not currency.is_known(value):
            raise ValueError(f"unknown currency {value!r}")
        return value


class SalesFormsPrefsPatch(_Section):
    CustomTxnNumbers: bool | None = None
    AllowDeposit: bool | None = None
    AllowDiscount: bool | None = None
    AllowEstimates: bool | None = None
    AllowShipping: bool | None = None
    DefaultTerms: Ref | None = None
    AutoApplyCredit: bool | None = None
    AutoApplyPayments: bool | None = None
    ETransactionEnabledStatus: str | None = None


class AccountingInfoPrefsPatch(_Section):
    nullable: ClassVar[frozenset[str]] = frozenset({"BookCloseDate"})

    TrackDepartments: bool | None = None
    ClassTrackingPerTxn: bool | None = None
    ClassTrackingPerTxnLine: bool | None = None
    CustomerTerminology: str | None = None
    FirstMonthOfFiscalYear: str | None = None
    # An ISO date; null removes it.
    BookCloseDate: date | None = Field(default=None, strict=False)


class TaxPrefsPatch(_Section):
    UsingSalesTax: bool | None = None
    PartnerTaxEnabled: bool | None = None
    TaxGroupCodeRef: Ref | None = None


class CurrencyPrefsPatch(_Section):
    MultiCurrencyEnabled: bool | None = None
    HomeCurrency: CurrencyCode | None = None


class PreferencesPatch(_Section):
    SalesFormsPrefs: SalesFormsPrefsPatch | None = None
    AccountingInfoPrefs: AccountingInfoPrefsPatch | None = None
    TaxPrefs: TaxPrefsPatch | None = None
    CurrencyPrefs: CurrencyPrefsPatch | None = None

    def changes(self) -> dict[str, Any]:
        """The patch as JSON, with only what was given (a null BookCloseDate included)."""
        dumped: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True)
        return dumped


def defaults(edition: Edition, home_currency: str, multicurrency: bool, at: datetime) -> dict[str, Any]:
    """A new company's Preferences."""
    tax_prefs: dict[str, Any] = {"UsingSalesTax": edition.using_sales_tax}
    if edition.country == "US":
        # Sandboxes have no Automated Sales Tax: PartnerTaxEnabled false (absent outside the US).
        tax_prefs["PartnerTaxEnabled"] = False
    stamp = precise_time(at)
    return {
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
        "CurrencyPrefs": {"MultiCurrencyEnabled": multicurrency, "HomeCurrency": {"value": home_currency}},
        "TaxPrefs": tax_prefs,
        "domain": "QBO",
        "sparse": False,
        "Id": "1",
        "SyncToken": "0",
        "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp},
    }


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` deep-merged over `base`; a null removes the key."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def changed_by_user(current: dict[str, Any], changes: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The Preferences after a user changes settings in QuickBooks; refuses what QuickBooks refuses."""
    after = merged(current, changes)
    before_currency = current["CurrencyPrefs"]
    after_currency = after["CurrencyPrefs"]
    if before_currency["MultiCurrencyEnabled"] and not after_currency.get("MultiCurrencyEnabled", False):
        raise PreferencesRefused("Multicurrency cannot be disabled once it's been enabled.")
    if after_currency.get("HomeCurrency", {}).get("value") != before_currency["HomeCurrency"]["value"]:
        raise PreferencesRefused("The home currency cannot be changed.")
    after["SyncToken"] = str(int(current["SyncToken"]) + 1)
    after["MetaData"] = {**current["MetaData"], "LastUpdatedTime": precise_time(at)}
    return after

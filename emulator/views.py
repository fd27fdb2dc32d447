"""How stored entities are printed: reference names, MetaData precision, and per-endpoint quirks."""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Literal

from emulator.clock import meta_time, parse_time
from emulator.store import Company

# "create": the response to a create; "read": reads, updates and CDC; "query": rows of a query;
# "send": the answer to POST /invoice/{id}/send, which Intuit prints with a leaner serializer (recorded 2026-05).
ViewKind = Literal["create", "read", "query", "send"]


def _name_of(company: Company, entity: str, ref: Any, field: str) -> None:
    """Reference names are looked up when printed, so a renamed customer shows its new name everywhere."""
    if not isinstance(ref, dict) or "value" not in ref:
        return
    target = company.table(entity).get(str(ref["value"]))
    if target is not None:
        ref["name"] = target.get(field, ref.get("name"))


def _format_metadata(body: dict[str, Any]) -> None:
    meta = body.get("MetaData")
    if isinstance(meta, dict):
        for key in ("CreateTime", "LastUpdatedTime"):
            if isinstance(meta.get(key), str):
                meta[key] = meta_time(parse_time(meta[key]))


def _insert_after(body: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    if after not in body:
        return {**body, key: value}
    result: dict[str, Any] = {}
    for existing_key, existing_value in body.items():
        result[existing_key] = existing_value
        if existing_key == after:
            result[key] = value
    return result


def invoice_link(realm_id: str, invoice_id: str) -> str:
    digest = hashlib.sha384(f"{realm_id}:{invoice_id}".encode()).hexdigest()
    return f"https://developer.intuit.com/comingSoonview/scs-v1-{digest}?locale=en_US&cta=v3invoicelink"


def view(
    company: Company,
    entity: str,
    stored: dict[str, Any],
    kind: ViewKind,
    include: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    body = {key: copy.deepcopy(value) for key, value in stored.items() if not key.startswith("_")}
    _format_metadata(body)
    if entity == "Customer":
        if kind == "create":
            # QuickBooks assigns the pseudonym after the create answer; later reads carry it.
            body.pop("V4IDPseudonym", None)
        if kind == "query":
            body.pop("DefaultTaxCodeRef", None)
            body = _insert_after(body, "IsProject", "ClientEntityId", "0")
    elif entity == "Item":
        for key in ("IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"):
            _name_of(company, "Account", body.get(key), "FullyQualifiedName")
    elif entity == "Invoice":
        _name_of(company, "Customer", body.get("CustomerRef"), "DisplayName")
        for line in body.get("Line", []):
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict):
                _name_of(company, "Item", detail.get("ItemRef"), "FullyQualifiedName")
                _name_of(company, "Account", detail.get("ItemAccountRef"), "FullyQualifiedName")
        term_ref = body.get("SalesTermRef")
        if isinstance(term_ref, dict) and str(term_ref.get("value")) in company.terms:
            term_ref["name"] = company.terms[str(term_ref["value"])]["Name"]
        if kind == "send":
            body.pop("FreeFormAddress", None)
            body.get("MetaData", {}).pop("LastModifiedByRef", None)
            for line in body.get("Line", []):
                if isinstance(line.get("SalesItemLineDetail"), dict):
                    line["SalesItemLineDetail"].pop("ItemAccountRef", None)
        if "invoicelink" in include and kind not in ("query", "send"):
            body = _insert_after(
                body, "AllowOnlineACHPayment", "InvoiceLink", invoice_link(company.realm_id, str(body["Id"]))
            )
    elif entity == "Payment":
        _name_of(company, "Customer", body.get("CustomerRef"), "DisplayName")
    elif entity == "TaxCode":
        for rate_list in ("SalesTaxRateList", "PurchaseTaxRateList"):
            for detail in body.get(rate_list, {}).get("TaxRateDetail", []):
                _name_of(company, "TaxRate", detail.get("TaxRateRef"), "Name")
    return body


def deleted_stub(entry: dict[str, Any]) -> dict[str, Any]:
    """How CDC reports a deleted object."""
    return {
        "domain": "QBO",
        "status": "Deleted",
        "Id": entry["Id"],
        "MetaData": {"LastUpdatedTime": meta_time(parse_time(entry["at"]))},
    }


def plain(body: dict[str, Any]) -> dict[str, Any]:
    """CompanyInfo and Preferences: only their MetaData needs formatting."""
    result = copy.deepcopy(body)
    _format_metadata(result)
    return result

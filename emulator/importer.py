"""Loads entities exactly as QuickBooks printed them (e.g. recorded sandbox data) into a company."""

from __future__ import annotations

from typing import Any

from emulator.accounting import canonical_entity
from emulator.clock import parse_time, precise_time
from emulator.store import ENTITY_TYPES, TRANSACTIONS, Company

# Keys QuickBooks adds only when printing (a query row, an include=invoiceLink read), never stored.
PRINT_ONLY = {"Customer": {"ClientEntityId"}, "Invoice": {"InvoiceLink"}}
ADDRESS_KEYS = ("BillAddr", "ShipAddr", "ShipFromAddr")


def _bump(company: Company, sequence: str, used: str) -> None:
    if used.isdigit():
        company.sequences[sequence] = max(company.sequences.get(sequence, 1), int(used) + 1)


def import_entities(company: Company, payload: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Stores each object verbatim under its own Id (no business rules run); sequences move past them."""
    counts: dict[str, int] = {}
    for raw_name, objects in payload.items():
        name = canonical_entity(raw_name)
        if name not in ENTITY_TYPES:
            raise ValueError(f"cannot import entity {raw_name!r}; supported: {', '.join(ENTITY_TYPES)}")
        for obj in objects:
            if not isinstance(obj, dict) or obj.get("Id") in (None, ""):
                raise ValueError(f"every {name} needs an Id")
            body = {key: value for key, value in obj.items() if key not in PRINT_ONLY.get(name, set())}
            body.setdefault("domain", "QBO")
            body.setdefault("sparse", False)
            body["Id"] = str(body["Id"])
            body["SyncToken"] = str(body.get("SyncToken", "0"))
            meta = dict(body.get("MetaData") or {})
            for key in ("CreateTime", "LastUpdatedTime"):
                # Objects without times count as old as the company.
                meta[key] = precise_time(parse_time(meta[key]) if key in meta else company.created_at)
            body["MetaData"] = meta
            company.table(name)[body["Id"]] = body
            _bump(company, "txn" if name in TRANSACTIONS else name, body["Id"])
            for key in ADDRESS_KEYS:
                address = body.get(key)
                if isinstance(address, dict) and address.get("Id") is not None:
                    _bump(company, "address", str(address["Id"]))
            doc_number = body.get("DocNumber")
            if (
                name == "Invoice"
                and isinstance(doc_number, str)
                and doc_number.isdigit()
                and len(doc_number) < 19
            ):
                company.last_doc_number = max(company.last_doc_number, int(doc_number))
            counts[name] = counts.get(name, 0) + 1
    return counts

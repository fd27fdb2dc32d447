"""Intuit webhooks: signature verification and parsing of both payload formats (classic and CloudEvents)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

SIGNATURE_HEADER = "intuit-signature"

# CloudEvents `type` is `qbo.<entity lower-case>.<verb>.v<n>` (reference §2.3).
_CLOUDEVENT_TYPE = re.compile(r"^qbo\.([a-z0-9]+)\.([a-z]+)\.v\d+$", re.IGNORECASE)
_VERBS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}
# The API spelling of entity names, which CloudEvents types carry in lower case.
_ENTITY_NAMES = {
    name.lower(): name
    for name in (
        "Account",
        "Attachable",
        "Bill",
        "BillPayment",
        "Budget",
        "Class",
        "CompanyCurrency",
        "CompanyInfo",
        "CreditCardPayment",
        "CreditMemo",
        "Currency",
        "Customer",
        "CustomerType",
        "Department",
        "Deposit",
        "Employee",
        "Estimate",
        "Invoice",
        "Item",
        "JournalCode",
        "JournalEntry",
        "Payment",
        "PaymentMethod",
        "Preferences",
        "Purchase",
        "PurchaseOrder",
        "RecurringTransaction",
        "RefundReceipt",
        "SalesReceipt",
        "TaxAgency",
        "TaxCode",
        "TaxRate",
        "Term",
        "TimeActivity",
        "Transfer",
        "Vendor",
        "VendorCredit",
    )
}
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2}))?(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?$"
)


class WebhookPayloadError(ValueError):
    """The webhook body is not a notification this parser can read completely."""


@dataclass(frozen=True)
class WebhookEvent:
    """One entity change in one company; `operation` is Create, Update, Delete, Merge, Void or Emailed."""

    realm_id: str
    entity: str
    entity_id: str
    operation: str
    occurred_at: datetime | None
    event_id: str | None
    deleted_id: str | None
    # The timestamp exactly as Intuit sent it (classic `lastUpdated`, CloudEvents `time`).
    occurred_at_raw: str | None = None
    format: Literal["classic", "cloudevents"] = "classic"

    @property
    def dedupe_key(self) -> str:
        """Stable across redeliveries: CloudEvents reuse their id; classic events repeat the same fields."""
        if self.event_id:
            return event_dedupe_key("cloudevent", self.event_id)
        return event_dedupe_key(
            "classic", self.realm_id, self.entity, self.entity_id, self.operation, self.occurred_at_raw or ""
        )


def event_dedupe_key(source: str, *parts: str) -> str:
    """A stored event's dedupe key: injective over its parts (JSON keeps ("a:b", "c") and ("a", "b:c") apart),
    and of bounded length whatever Intuit sends (a digest), so it always fits its column."""
    digest = hashlib.sha256(json.dumps([source, *parts], ensure_ascii=False).encode()).hexdigest()
    return f"{source}:{digest}"


def signature_of(body: bytes, verifier_token: str) -> str:
    """base64(HMAC-SHA256(key = verifier token, message = raw body)), as Intuit computes it."""
    digest = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(body: bytes, signature: str | None, verifier_token: str) -> bool:
    """Whether the `intuit-signature` header matches the raw body; False when missing or garbled."""
    if not signature or not verifier_token:
        return False
    try:
        given = signature.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(signature_of(body, verifier_token).encode("ascii"), given)


def parse_timestamp(value: str) -> datetime | None:
    """A timezone-aware datetime from Intuit's timestamps ("-0700", "Z" with nanoseconds, ...), else None.

    A timestamp without an offset is taken as UTC.
    """
    match = _TIMESTAMP.match(value.strip())
    if match is None:
        return None
    day, hour, minute, second, fraction, offset = match.groups()
    # datetime holds microseconds; CloudEvents times carry nanoseconds.
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    zone: timezone = UTC
    if offset and offset not in ("Z", "z"):
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or "0")
        if hours > 23 or minutes > 59:
            return None
        delta = timedelta(hours=hours, minutes=minutes)
        zone = timezone(-delta if offset[0] == "-" else delta)
    try:
        return datetime.fromisoformat(f"{day}T{hour}:{minute}:{second or '00'}").replace(
            microsecond=micro, tzinfo=zone
        )
    except ValueError:
        return None


def parse_webhook(body: bytes) -> list[WebhookEvent]:
    """Every event of a notification, in order; raises WebhookPayloadError rather than drop any."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookPayloadError(f"the webhook body is not JSON: {exc}") from None
    if isinstance(payload, list):
        return [_cloud_event(item, index) for index, item in enumerate(payload)]
    if isinstance(payload, dict):
        if "eventNotifications" in payload:
            return _classic(payload["eventNotifications"])
        if "specversion" in payload:
            # A single CloudEvent in structured mode; Intuit sends arrays, but this is unambiguous.
            return [_cloud_event(payload, 0)]
        raise WebhookPayloadError("the webhook object has no eventNotifications")
    raise WebhookPayloadError(f"the webhook body is a JSON {type(payload).__name__}, not an array or object")


def _identifier(value: Any) -> str | None:
    """An id or realm as a string; JSON numbers are accepted, empty values and other types are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _cloud_event(item: Any, index: int) -> WebhookEvent:
    where = f"CloudEvent #{index}"
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    event_type = item.get("type")
    if not isinstance(event_type, str):
        raise WebhookPayloadError(f"{where} has no type")
    match = _CLOUDEVENT_TYPE.match(event_type)
    if match is None:
        raise WebhookPayloadError(f"{where} has an unknown type {event_type!r}")
    entity_part, verb = match.group(1).lower(), match.group(2).lower()
    realm_id = _identifier(item.get("intuitaccountid"))
    entity_id = _identifier(item.get("intuitentityid"))
    event_id = _identifier(item.get("id"))
    if realm_id is None:
        raise WebhookPayloadError(f"{where} ({event_type}) has no intuitaccountid")
    if entity_id is None:
        raise WebhookPayloadError(f"{where} ({event_type}) has no intuitentityid")
    if event_id is None:
        raise WebhookPayloadError(f"{where} ({event_type}) has no id")
    data = item.get("data")
    deleted_id = None
    if isinstance(data, dict):
        deleted_id = _identifier(data.get("deletedid", data.get("deletedId")))
    elif data is not None:
        raise WebhookPayloadError(f"{where} ({event_type}) has data that is not an object")
    raw_time = _optional_text(item.get("time"))
    return WebhookEvent(
        realm_id=realm_id,
        entity=_ENTITY_NAMES.get(entity_part, entity_part[:1].upper() + entity_part[1:]),
        entity_id=entity_id,
        # A verb Intuit adds later still reaches the engine (as "Restored" for "restored"), never dropped.
        operation=_VERBS.get(verb, verb.capitalize()),
        occurred_at=parse_timestamp(raw_time) if raw_time else None,
        event_id=event_id,
        deleted_id=deleted_id,
        occurred_at_raw=raw_time,
        format="cloudevents",
    )


def _classic(notifications: Any) -> list[WebhookEvent]:
    if not isinstance(notifications, list):
        raise WebhookPayloadError("eventNotifications is not an array")
    events: list[WebhookEvent] = []
    for n_index, notification in enumerate(notifications):
        where = f"eventNotifications[{n_index}]"
        if not isinstance(notification, dict):
            raise WebhookPayloadError(f"{where} is not an object")
        realm_id = _identifier(notification.get("realmId"))
        if realm_id is None:
            raise WebhookPayloadError(f"{where} has no realmId")
        change = notification.get("dataChangeEvent")
        if not isinstance(change, dict):
            raise WebhookPayloadError(f"{where} has no dataChangeEvent object")
        entities = change.get("entities")
        if not isinstance(entities, list):
            raise WebhookPayloadError(f"{where}.dataChangeEvent.entities is not an array")
        for e_index, entity in enumerate(entities):
            spot = f"{where}.dataChangeEvent.entities[{e_index}]"
            if not isinstance(entity, dict):
                raise WebhookPayloadError(f"{spot} is not an object")
            name = _optional_text(entity.get("name"))
            entity_id = _identifier(entity.get("id"))
            operation = _optional_text(entity.get("operation"))
            if name is None:
                raise WebhookPayloadError(f"{spot} has no name")
            if entity_id is None:
                raise WebhookPayloadError(f"{spot} ({name}) has no id")
            if operation is None:
                raise WebhookPayloadError(f"{spot} ({name} {entity_id}) has no operation")
            raw_time = _optional_text(entity.get("lastUpdated"))
            events.append(
                WebhookEvent(
                    realm_id=realm_id,
                    entity=name,
                    entity_id=entity_id,
                    operation=operation,
                    occurred_at=parse_timestamp(raw_time) if raw_time else None,
                    event_id=None,
                    deleted_id=_identifier(entity.get("deletedId", entity.get("deletedid"))),
                    occurred_at_raw=raw_time,
                    format="classic",
                )
            )
    return events

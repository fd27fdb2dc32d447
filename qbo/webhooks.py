"""Intuit webhooks: signature verification and parsing of both payload formats (classic and CloudEvents).

A signed body is still not trusted: every field an event carries is checked against what QuickBooks sends (ids are
digits, names and operations short identifiers, timestamps sane), so whatever is stored fits its column. Each value
is checked whole (`fullmatch`: a `$` would also match before a trailing newline) once surrounding whitespace is
stripped: Intuit's values are identifiers, and " Invoice\n" is the entity Invoice. One event that cannot be read
costs only itself (`read_webhook` returns the others, and says where and why).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

SIGNATURE_HEADER = "intuit-signature"

# QuickBooks ids (companies, entities) are strings of digits; the columns that store them hold 32.
_QUICKBOOKS_ID = re.compile(r"[0-9]{1,32}", re.ASCII)
# Entity names as the API spells them (`Invoice`, `BillPayment`), and operations (`Create`, ..., `Emailed`).
_ENTITY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}", re.ASCII)
_OPERATION = re.compile(r"[A-Za-z]{1,16}", re.ASCII)
# CloudEvents ids are only digested into dedupe keys: any text short of control characters.
_EVENT_ID = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
# CloudEvents `type` is `qbo.<entity lower-case>.<verb>.v<n>` (reference §2.3).
_CLOUDEVENT_TYPE = re.compile(
    r"qbo\.([a-z][a-z0-9]{0,31})\.([a-z]{1,16})\.v[0-9]{1,9}", re.IGNORECASE | re.ASCII
)
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
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2}))?(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
# Sane times for a change in QuickBooks Online; anything outside is kept as unreadable (the event is not).
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# At most this many problems are written out in full for operators; the rest are counted.
MAX_LISTED_PROBLEMS = 20


class WebhookPayloadError(ValueError):
    """The webhook body is not a notification this parser can read completely (its message names the place and
    the reason, never the values found there)."""


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
    # The timestamp as Intuit sent it, surrounding whitespace aside (classic `lastUpdated`, CloudEvents `time`).
    occurred_at_raw: str | None = None
    format: Literal["classic", "cloudevents"] = "classic"
    # The delivery this event came in, as far as its dedupe key needs it (see `dedupe_key`): one token for all
    # the events `read_webhook` reads from one body, a token of its own otherwise.
    delivery_token: str = field(default_factory=lambda: secrets.token_hex(16), compare=False, repr=False)

    @property
    def dedupe_key(self) -> str:
        """Stable across redeliveries of one change: a CloudEvent's id within its company (Intuit's ids are not
        known to be unique across companies, and one company's event must never hide another's); a classic event's
        fields with its `lastUpdated`.

        A classic event without a readable `lastUpdated` looks the same for every later change of that entity, so
        it is deduplicated within its own delivery only, never against another: processing it again costs
        nothing, while a later change dropped as a duplicate would cost a payment.
        """
        if self.event_id:
            return event_dedupe_key("cloudevent", self.realm_id, self.event_id)
        fields = (self.realm_id, self.entity, self.entity_id, self.operation)
        if self.occurred_at is None:
            return event_dedupe_key("classic-undated", *fields, self.delivery_token)
        return event_dedupe_key("classic", *fields, self.occurred_at_raw or "")


def event_dedupe_key(source: str, *parts: str) -> str:
    """A stored event's dedupe key: injective over its parts (JSON keeps ("a:b", "c") and ("a", "b:c") apart),
    and of bounded length whatever Intuit sends (a digest), so it always fits its column."""
    # surrogatepass: a lone surrogate Intuit (or anyone) put in a timestamp still gives a key, and a distinct one.
    text = json.dumps([source, *parts], ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
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
        expected = signature_of(body, verifier_token).encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, given)


def parse_timestamp(value: str) -> datetime | None:
    """A timezone-aware datetime from Intuit's timestamps ("-0700", "Z" with nanoseconds, ...), else None.

    A timestamp without an offset is taken as UTC. One outside 2000-2099 (in UTC) is not a QuickBooks Online
    change time, and would not even convert to UTC near year 1 or 9999: None too.
    """
    match = _TIMESTAMP.fullmatch(value.strip())
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
        parsed = datetime.fromisoformat(f"{day}T{hour}:{minute}:{second or '00'}").replace(
            microsecond=micro, tzinfo=zone
        )
        in_utc = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if _EARLIEST <= in_utc < _LATEST else None


@dataclass(frozen=True)
class WebhookBatch:
    """What a notification holds: the events that could be read, in order, and where and why the rest could not."""

    events: list[WebhookEvent]
    problems: list[str]

    def problem_summary(self) -> str | None:
        """The problems for operators, bounded however many there are."""
        if not self.problems:
            return None
        listed = "; ".join(self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        return f"{listed}; and {more} more" if more > 0 else listed


class _Unreadable(Exception):
    """One event (or notification) that cannot be read; the others still are."""


def read_webhook(body: bytes) -> WebhookBatch:
    """Every readable event of a notification, and a problem for each event that is not.

    Raises WebhookPayloadError only when the body as a whole is not a notification of either format.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookPayloadError(f"the webhook body is not JSON: {exc}") from None
    except RecursionError:
        raise WebhookPayloadError(
            "the webhook body is not JSON this parser reads: nested too deeply"
        ) from None
    batch = WebhookBatch(events=[], problems=[])
    if isinstance(payload, list):
        for index, item in enumerate(payload):
            _collect(batch, functools.partial(_cloud_event, item), f"CloudEvent #{index}")
        return batch
    if isinstance(payload, dict):
        if "eventNotifications" in payload:
            _classic(payload["eventNotifications"], batch, delivery_token=secrets.token_hex(16))
            return batch
        if "specversion" in payload:
            # A single CloudEvent in structured mode; Intuit sends arrays, but this is unambiguous.
            _collect(batch, functools.partial(_cloud_event, payload), "CloudEvent #0")
            return batch
        raise WebhookPayloadError("the webhook object has no eventNotifications")
    raise WebhookPayloadError(f"the webhook body is a JSON {type(payload).__name__}, not an array or object")


def parse_webhook(body: bytes) -> list[WebhookEvent]:
    """Every event of a notification, in order; raises WebhookPayloadError rather than drop any."""
    batch = read_webhook(body)
    if batch.problems:
        raise WebhookPayloadError(batch.problem_summary())
    return batch.events


def _collect(batch: WebhookBatch, read: Callable[[], WebhookEvent], where: str) -> None:
    try:
        batch.events.append(read())
    except _Unreadable as exc:
        batch.problems.append(f"{where} {exc}")


def _identifier(value: Any) -> str | None:
    """An id or realm as a string; JSON numbers are accepted, empty values and other types are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _quickbooks_id(value: Any, field: str) -> str:
    identifier = _identifier(value)
    if identifier is None:
        raise _Unreadable(f"has no {field}")
    if not _QUICKBOOKS_ID.fullmatch(identifier):
        raise _Unreadable(f"has a {field} that is not a QuickBooks id (digits, at most 32)")
    return identifier


def _optional_quickbooks_id(value: Any, field: str) -> str | None:
    return None if value is None else _quickbooks_id(value, field)


def _optional_text(value: Any) -> str | None:
    """A string field without its surrounding whitespace; None when absent, not a string, or blank."""
    return (value.strip() or None) if isinstance(value, str) else None


def _cloud_event(item: Any) -> WebhookEvent:
    if not isinstance(item, dict):
        raise _Unreadable("is not an object")
    event_type = _optional_text(item.get("type"))
    if event_type is None:
        raise _Unreadable("has no type")
    match = _CLOUDEVENT_TYPE.fullmatch(event_type)
    if match is None:
        raise _Unreadable("has an unknown type (not qbo.<entity>.<verb>.v<n>)")
    entity_part, verb = match.group(1).lower(), match.group(2).lower()
    realm_id = _quickbooks_id(item.get("intuitaccountid"), "intuitaccountid")
    entity_id = _quickbooks_id(item.get("intuitentityid"), "intuitentityid")
    event_id = _identifier(item.get("id"))
    if event_id is None:
        raise _Unreadable("has no id")
    if not _EVENT_ID.fullmatch(event_id) or not _encodable(event_id):
        raise _Unreadable("has an id that is not an event id (1 to 255 characters of text)")
    data = item.get("data")
    deleted_id = None
    if isinstance(data, dict):
        deleted_id = _optional_quickbooks_id(data.get("deletedid", data.get("deletedId")), "deletedid")
    elif data is not None:
        raise _Unreadable("has data that is not an object")
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


def _classic(notifications: Any, batch: WebhookBatch, *, delivery_token: str) -> None:
    if not isinstance(notifications, list):
        raise WebhookPayloadError("eventNotifications is not an array")
    for n_index, notification in enumerate(notifications):
        where = f"eventNotifications[{n_index}]"
        try:
            realm_id, entities = _classic_notification(notification)
        except _Unreadable as exc:
            batch.problems.append(f"{where} {exc}")
            continue
        for e_index, entity in enumerate(entities):
            _collect(
                batch,
                functools.partial(_classic_entity, realm_id, entity, delivery_token),
                f"{where}.dataChangeEvent.entities[{e_index}]",
            )


def _classic_notification(notification: Any) -> tuple[str, list[Any]]:
    if not isinstance(notification, dict):
        raise _Unreadable("is not an object")
    realm_id = _quickbooks_id(notification.get("realmId"), "realmId")
    change = notification.get("dataChangeEvent")
    if not isinstance(change, dict):
        raise _Unreadable("has no dataChangeEvent object")
    entities = change.get("entities")
    if not isinstance(entities, list):
        raise _Unreadable("has no dataChangeEvent.entities array")
    return realm_id, entities


def _classic_entity(realm_id: str, entity: Any, delivery_token: str) -> WebhookEvent:
    if not isinstance(entity, dict):
        raise _Unreadable("is not an object")
    name = _optional_text(entity.get("name"))
    if name is None:
        raise _Unreadable("has no name")
    if not _ENTITY_NAME.fullmatch(name):
        raise _Unreadable(
            "has a name that is not an entity name (a letter, then letters or digits, at most 32)"
        )
    entity_id = _quickbooks_id(entity.get("id"), "id")
    operation = _optional_text(entity.get("operation"))
    if operation is None:
        raise _Unreadable("has no operation")
    if not _OPERATION.fullmatch(operation):
        raise _Unreadable("has an operation that is not an operation name (letters, at most 16)")
    raw_time = _optional_text(entity.get("lastUpdated"))
    return WebhookEvent(
        realm_id=realm_id,
        entity=name,
        entity_id=entity_id,
        operation=operation,
        occurred_at=parse_timestamp(raw_time) if raw_time else None,
        event_id=None,
        deleted_id=_optional_quickbooks_id(entity.get("deletedId", entity.get("deletedid")), "deletedId"),
        occurred_at_raw=raw_time,
        format="classic",
        delivery_token=delivery_token,
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

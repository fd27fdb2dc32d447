"""The one writer of each table the API reads besides the invoices themselves (of those, only the mark that an
invoice's workflow was started): timeline entries, notifications, webhook deliveries and the QuickBooks events they
bring, and payment links. The API and the activities both call these, so each table's dedupe
key and invariants live here.

Every insert is idempotent (its dedupe key or primary key), because activities may run more than once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, tuple_
from sqlmodel import col, update
from sqlmodel.ext.asyncio.session import AsyncSession

from models.domain import EventStatus, followed_change
from models.queries import insert_ignoring_conflicts, inserted_ignoring_conflicts
from models.tables import (
    InvoiceSync,
    Notification,
    PaymentLink,
    QuickBooksEvent,
    TimelineEntry,
    WebhookDelivery,
)

if TYPE_CHECKING:
    from qbo.webhooks import WebhookEvent


async def add_timeline_entry(
    session: AsyncSession, *, account_id: str, invoice_id: str, kind: str, message: str, dedupe_key: str,
    at: datetime,
) -> None:  # fmt: skip
    """One line of an invoice's timeline, once per dedupe key."""
    await insert_ignoring_conflicts(
        session,
        TimelineEntry,
        [
            {
                "account_id": account_id,
                "invoice_id": invoice_id,
                "at": at,
                "kind": kind,
                "message": message,
                "dedupe_key": dedupe_key,
            }
        ],
    )


async def add_notification(
    session: AsyncSession, *, account_id: str, invoice_id: str | None, kind: str, message: str,
    dedupe_key: str, at: datetime, action: str | None = None,
) -> None:  # fmt: skip
    """Something the user must see or act on, once per dedupe key; `invoice_id` None for the account's own."""
    await insert_ignoring_conflicts(
        session,
        Notification,
        [
            {
                "account_id": account_id,
                "invoice_id": invoice_id,
                "kind": kind,
                "message": message,
                "action": action,
                "created_at": at,
                "dedupe_key": dedupe_key,
            }
        ],
    )


async def resolve_notifications(
    session: AsyncSession,
    *,
    account_id: str,
    invoice_id: str | None,
    at: datetime,
    kinds: list[str] | None = None,
) -> None:
    """Mark the open notifications of an invoice (or, with `invoice_id` None, of the account itself) resolved:
    those of the given kinds, or all of them."""
    statement = update(Notification).where(
        col(Notification.account_id) == account_id,
        col(Notification.invoice_id).is_(None)
        if invoice_id is None
        else col(Notification.invoice_id) == invoice_id,
        col(Notification.resolved_at).is_(None),
    )
    if kinds is not None:
        statement = statement.where(col(Notification.kind).in_(kinds))
    await session.exec(statement.values(resolved_at=at))


def new_event(
    *, dedupe_key: str, realm_id: str, entity: str, entity_id: str, operation: str, occurred_at: datetime | None,
    received_at: datetime, source: str, delivery_id: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A QuickBooks event as `store_events` takes it: waiting to be processed, or ignored at once when it changes
    nothing the engine follows (`followed_change`)."""
    followed = followed_change(entity, operation)
    return {
        "dedupe_key": dedupe_key,
        "realm_id": realm_id,
        "entity": entity,
        "entity_id": entity_id,
        "operation": operation,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "source": source,
        "delivery_id": delivery_id,
        "status": (EventStatus.PENDING if followed else EventStatus.IGNORED).value,
        "attempts": 0,
        "processed_at": None if followed else received_at,
    }


def awaiting_processing(events: Iterable[dict[str, Any]]) -> bool:
    """Whether any of these events (from `new_event`) is for the events workflow to process."""
    return any(event["status"] == EventStatus.PENDING.value for event in events)


def delivered_events(
    events: Iterable[WebhookEvent], *, received_at: datetime, delivery_id: int | None
) -> list[dict[str, Any]]:
    """The events a webhook delivery brought, as `store_events` takes them (the route, and an operator's
    reprocessing of a kept delivery)."""
    return [
        new_event(
            dedupe_key=event.dedupe_key,
            realm_id=event.realm_id,
            entity=event.entity,
            entity_id=event.entity_id,
            operation=event.operation,
            occurred_at=event.occurred_at,
            received_at=received_at,
            source="webhook",
            delivery_id=delivery_id,
        )
        for event in events
    ]


async def store_events(session: AsyncSession, events: list[dict[str, Any]]) -> int:
    """Store events (from `new_event`) that are not stored yet; returns how many were new."""
    return await insert_ignoring_conflicts(session, QuickBooksEvent, events)


@dataclass(frozen=True)
class ReceivedDelivery:
    """A verified webhook delivery as the API read it: the body Intuit signed, the events read from it, and what
    could not be read (how many, and where and why)."""

    body: bytes
    events: Sequence[WebhookEvent]
    unreadable: int = 0
    parse_error: str | None = None


@dataclass(frozen=True)
class StoredDelivery:
    """A delivery once stored: its id, its events that were new, and whether any is for the events workflow."""

    delivery_id: int
    accepted: int
    to_tell: bool


async def store_deliveries(
    session: AsyncSession, deliveries: Sequence[ReceivedDelivery], *, received_at: datetime
) -> list[StoredDelivery]:
    """Webhook deliveries and the events they brought, in the session's transaction: one multi-row statement for
    the deliveries and one for their events, however many (split only past the drivers' parameter limits). An event stored before (a redelivery), or brought
    twice by these deliveries, counts for the first only. A delivery with nothing new to tell (duplicates, or
    changes the engine does not follow) is marked told at once, in the same transaction."""
    if not deliveries:
        return []
    inserted = await session.scalars(
        insert(WebhookDelivery).returning(col(WebhookDelivery.id), sort_by_parameter_order=True),
        [
            {
                "received_at": received_at,
                "body": delivery.body,
                "event_count": len(delivery.events),
                "unreadable_count": delivery.unreadable,
                "parse_error": delivery.parse_error,
            }
            for delivery in deliveries
        ],
    )
    delivery_ids: list[int] = []
    for delivery_id in inserted:
        assert delivery_id is not None  # a primary key, just assigned
        delivery_ids.append(delivery_id)
    rows_of = {
        delivery_id: delivered_events(delivery.events, received_at=received_at, delivery_id=delivery_id)
        for delivery_id, delivery in zip(delivery_ids, deliveries, strict=True)
    }
    accepted = Counter(
        delivery_id
        for (delivery_id,) in await inserted_ignoring_conflicts(
            session,
            QuickBooksEvent,
            # In the order Intuit sent them, which is the order they are processed in (by id).
            [row for rows in rows_of.values() for row in rows],
            col(QuickBooksEvent.delivery_id),
        )
    )
    stored = [
        StoredDelivery(
            delivery_id=delivery_id,
            accepted=accepted[delivery_id],
            to_tell=accepted[delivery_id] > 0 and awaiting_processing(rows),
        )
        for delivery_id, rows in rows_of.items()
    ]
    told = [delivery.delivery_id for delivery in stored if not delivery.to_tell]
    if told:
        await session.exec(
            update(WebhookDelivery).where(col(WebhookDelivery.id).in_(told)).values(signalled_at=received_at)
        )
    return stored


async def mark_workflows_started(
    session: AsyncSession, invoices: Sequence[tuple[str, str]], *, at: datetime
) -> None:
    """Mark these invoices (account id, invoice id) as having their workflow started, where not marked yet (the API's
    starter, its relay, and a connection change that started one may all get there)."""
    if invoices:
        await session.exec(
            update(InvoiceSync)
            .where(
                tuple_(col(InvoiceSync.account_id), col(InvoiceSync.invoice_id)).in_(list(invoices)),
                col(InvoiceSync.workflow_started_at).is_(None),
            )
            .values(workflow_started_at=at)
        )


async def remember_payment_links(
    session: AsyncSession, *, realm_id: str, payment_id: str, qbo_invoice_ids: set[str]
) -> None:
    """Which invoices a payment was applied to, kept for when it is deleted or voided (it then names none)."""
    await insert_ignoring_conflicts(
        session,
        PaymentLink,
        [
            {"realm_id": realm_id, "payment_id": payment_id, "qbo_invoice_id": invoice_id}
            for invoice_id in sorted(qbo_invoice_ids)
        ],
    )

"""The one writer of the kept outbound events (`platform_event`): recording an event once, with its sequence and
the exact body sent, and recording how each delivery attempt went. The delivery activities and the API call these.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.domain import PLATFORM_EVENT_VERSIONS, EventSubject, PlatformEventStatus, PlatformEventType
from models.tables import PlatformEventRecord, utcnow
from workflows.messages import PlatformEvent

# Temporal retries a delivery this long (workflows/common.py keeps the same window for the first delivery).
DELIVERY_WINDOW = timedelta(days=3)
EVENT_ID_PREFIX = "evt_"


def platform_event_id(source_key: str) -> str:
    """The event's public id (`webhook-id`, the body's `id`, the API's): one per workflow event id, stable across
    retries and redeliveries, and made of characters a URL path takes as they are."""
    return EVENT_ID_PREFIX + hashlib.sha256(source_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def subject_of(event: PlatformEvent) -> tuple[EventSubject, str]:
    if event.invoice_id is not None:
        return EventSubject.INVOICE, event.invoice_id
    return EventSubject.CONNECTION, event.account_id


def event_body(event_id: str, event: PlatformEvent, sequence: int) -> str:
    """The JSON body POSTed to the platform, exactly as kept (a redelivery sends these same bytes)."""
    return json.dumps(
        {
            "id": event_id,
            "type": event.type,
            "version": PLATFORM_EVENT_VERSIONS[PlatformEventType(event.type)],
            "sequence": sequence,
            "account_id": event.account_id,
            "invoice_id": event.invoice_id,
            "occurred_at": event.occurred_at.isoformat(),
            "data": event.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


async def _subject_sequence(session: AsyncSession, event: PlatformEvent) -> int:
    """The event's place among its subject's events: its chain's count on top of what the subject had before."""
    kind, subject_id = subject_of(event)
    of_subject = (
        col(PlatformEventRecord.account_id) == event.account_id,
        col(PlatformEventRecord.subject_kind) == kind.value,
        col(PlatformEventRecord.subject_id) == subject_id,
    )
    highest = select(func.coalesce(func.max(PlatformEventRecord.sequence), 0)).where(*of_subject)
    if not event.chain or event.sequence <= 0:
        # Sent by a release that did not count: after whatever the subject has.
        return int((await session.exec(highest)).one()) + 1
    offset = (
        await session.exec(
            select(PlatformEventRecord.sequence - PlatformEventRecord.chain_sequence)
            .where(*of_subject, col(PlatformEventRecord.chain) == event.chain)
            .limit(1)
        )
    ).first()
    if offset is None:
        # The chain's first record (not necessarily its first event): the chains before it have delivered
        # everything (a workflow drains its deliveries before it completes), so the subject's highest is their end.
        offset = int((await session.exec(highest)).one())
    return int(offset) + event.sequence


async def record_platform_event(
    session: AsyncSession, event: PlatformEvent, *, unsent_because: str | None = None
) -> PlatformEventRecord:
    """The event's record, written once: a retried or repeated delivery finds the first one (and its body).
    `unsent_because`: it will not be sent now (no URL is set); it is written `not_sent` with that reason in the same
    transaction, so nobody reading the table ever sees it `pending` with nothing on the way."""
    event_id = platform_event_id(event.event_id)
    for _ in range(3):
        existing = await session.get(PlatformEventRecord, event_id, populate_existing=True)
        if existing is not None:
            return existing
        kind, subject_id = subject_of(event)
        sequence = await _subject_sequence(session, event)
        record = PlatformEventRecord(
            id=event_id,
            source_key=event.event_id,
            type=event.type,
            version=PLATFORM_EVENT_VERSIONS[PlatformEventType(event.type)],
            account_id=event.account_id,
            invoice_id=event.invoice_id,
            subject_kind=kind.value,
            subject_id=subject_id,
            chain=event.chain,
            chain_sequence=event.sequence,
            sequence=sequence,
            occurred_at=event.occurred_at,
            body=event_body(event_id, event, sequence),
            status=(
                PlatformEventStatus.PENDING if unsent_because is None else PlatformEventStatus.NOT_SENT
            ).value,
            last_error=unsent_because,
            retry_until=event.occurred_at + DELIVERY_WINDOW,
        )
        session.add(record)
        try:
            await session.commit()
        except IntegrityError:
            # Another delivery of this event recorded it first, or another chain's event took the number: read again.
            await session.rollback()
            continue
        return record
    raise RuntimeError(f"platform event {event_id} could not be given a sequence")


async def record_attempt(
    session: AsyncSession, event_id: str, *, status: PlatformEventStatus, status_code: int | None = None,
    error: str | None = None, at: datetime | None = None,
) -> None:  # fmt: skip
    """How one delivery attempt went (`error`: codes and numbers only, never the platform's answer)."""
    record = await session.get(PlatformEventRecord, event_id, populate_existing=True)
    if record is None:
        return
    now = at or utcnow()
    if status != PlatformEventStatus.NOT_SENT:
        record.attempts += 1
        record.last_attempt_at = now
    record.last_status_code = status_code
    record.last_error = error
    if status == PlatformEventStatus.DELIVERED:
        record.delivered_at = now
    # A late failure of one delivery never hides that another (a redelivery) got through.
    if not (record.delivered_at is not None and status == PlatformEventStatus.FAILING):
        record.status = status.value
    session.add(record)
    await session.commit()


async def mark_redelivery(session: AsyncSession, record: PlatformEventRecord) -> None:
    """A redelivery was asked for: Temporal retries it for a new window."""
    record.redeliveries += 1
    record.retry_until = utcnow() + DELIVERY_WINDOW
    session.add(record)
    await session.commit()

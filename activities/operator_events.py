"""Operators' actions on a company's stored QuickBooks events (the connection workflow's updates run these):
replay the events parked as `failed`, and read a kept webhook delivery again with this release's parser.

Both only store and reset rows, then tell the company's events workflow (signal-with-start: it may have completed
after 10 idle minutes), which processes them as it processes any event. Nothing QuickBooks sent is deleted."""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client

from models.crud import awaiting_processing, delivered_events, store_events
from models.db import SessionFactory
from models.domain import EventStatus
from models.tables import QuickBooksEvent, WebhookDelivery, utcnow
from qbo.webhooks import WebhookPayloadError, read_webhook
from workflows.handles import start_realm_events
from workflows.messages import (
    ReplayParkedEventsInput,
    ReplayParkedEventsResult,
    ReprocessDeliveryInput,
    ReprocessDeliveryResult,
)

logger = logging.getLogger(__name__)


class OperatorEventActivities:
    def __init__(self, *, sessions: SessionFactory, temporal: Client, task_queue: str) -> None:
        self._sessions = sessions
        self._temporal = temporal
        self._task_queue = task_queue

    @activity.defn
    async def replay_parked_events(self, request: ReplayParkedEventsInput) -> ReplayParkedEventsResult:
        """Put the company's parked events (all, or those named) back to `pending`, with their attempts reset."""
        parked = (
            col(QuickBooksEvent.realm_id) == request.realm_id,
            col(QuickBooksEvent.status) == EventStatus.FAILED.value,
        )
        async with self._sessions() as session:
            statement = select(QuickBooksEvent.id).where(*parked)
            if request.event_ids:
                statement = statement.where(col(QuickBooksEvent.id).in_(request.event_ids))
            ids = sorted(int(event_id) for event_id in (await session.exec(statement)).all() if event_id)
            if ids:
                await session.exec(
                    update(QuickBooksEvent)
                    .where(*parked, col(QuickBooksEvent.id).in_(ids))
                    .values(status=EventStatus.PENDING.value, attempts=0, processed_at=None)
                )
                await session.commit()
        if ids:
            await start_realm_events(self._temporal, request.realm_id, self._task_queue)
        not_parked = sorted(set(request.event_ids) - set(ids))
        logger.info("company %s: %d parked event(s) replayed", request.realm_id, len(ids))
        return ReplayParkedEventsResult(replayed=len(ids), event_ids=ids, not_parked=not_parked)

    @activity.defn
    async def reprocess_webhook_delivery(self, request: ReprocessDeliveryInput) -> ReprocessDeliveryResult:
        """Read a kept delivery again and store the events of this company it now yields (those stored already
        are not stored twice); the delivery's counts and parse error then say what this release read."""
        async with self._sessions() as session:
            delivery = await session.get(WebhookDelivery, request.delivery_id)
            if delivery is None:
                return ReprocessDeliveryResult(found=False)
            try:
                batch = read_webhook(delivery.body)
            except WebhookPayloadError as exc:
                delivery.parse_error = str(exc)
                session.add(delivery)
                await session.commit()
                return ReprocessDeliveryResult(
                    found=True, unreadable=max(delivery.unreadable_count, 1), error=str(exc)
                )
            ours = [event for event in batch.events if event.realm_id == request.realm_id]
            rows = delivered_events(ours, received_at=utcnow(), delivery_id=delivery.id)
            stored = await store_events(session, rows)
            delivery.event_count = max(delivery.event_count, len(batch.events))
            delivery.unreadable_count = len(batch.problems)
            delivery.parse_error = batch.problem_summary()
            session.add(delivery)
            await session.commit()
            other_companies = len({event.realm_id for event in batch.events} - {request.realm_id})
            error = batch.problem_summary()
        if stored and awaiting_processing(rows):
            await start_realm_events(self._temporal, request.realm_id, self._task_queue)
        return ReprocessDeliveryResult(
            found=True,
            read=len(ours),
            stored=stored,
            duplicates=len(ours) - stored,
            unreadable=len(batch.problems),
            other_companies=other_companies,
            error=error,
        )

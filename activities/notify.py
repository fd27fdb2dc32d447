"""Outbound events to the platform: kept, then POSTed to PLATFORM_EVENTS_URL signed the Standard Webhooks way
(models/signing.py), retried by Temporal; each attempt's outcome is recorded with the event."""

from __future__ import annotations

import logging

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.db import SessionFactory
from models.domain import PlatformEventStatus
from models.platform_events import record_attempt, record_platform_event
from models.signing import webhook_headers
from models.tables import PlatformEventRecord
from workflows.messages import PlatformEvent, RedeliverPlatformEvent

logger = logging.getLogger(__name__)

PLATFORM_REQUEST_TIMEOUT_SECONDS = 10
NO_URL = "PLATFORM_EVENTS_URL is not set"


class PlatformEventActivities:
    """Delivers events to the platform. No URL configured: the event is kept (`not_sent`) for a redelivery."""

    def __init__(
        self, *, http: httpx.AsyncClient, sessions: SessionFactory, url: str | None, secrets: str
    ) -> None:
        self._http = http
        self._sessions = sessions
        self._url = url
        self._secrets = secrets

    @activity.defn
    async def deliver_platform_event(self, event: PlatformEvent) -> None:
        async with self._sessions() as session:
            record = await record_platform_event(session, event, unsent_because=None if self._url else NO_URL)
        if self._url or record.status != PlatformEventStatus.NOT_SENT:
            await self._deliver(record)

    @activity.defn
    async def redeliver_platform_event(self, request: RedeliverPlatformEvent) -> None:
        async with self._sessions() as session:
            record = await session.get(PlatformEventRecord, request.event_id)
        if record is None:
            raise ApplicationError(
                f"platform event {request.event_id} is not kept",
                type="PlatformEventUnknown",
                non_retryable=True,
            )
        await self._deliver(record)

    async def _deliver(self, record: PlatformEventRecord) -> None:
        if not self._url:
            logger.debug("no PLATFORM_EVENTS_URL; %s %s kept, not sent", record.type, record.id)
            await self._record(record.id, PlatformEventStatus.NOT_SENT, error=NO_URL)
            return
        body = record.body.encode()
        headers = {"Content-Type": "application/json", **webhook_headers(self._secrets, record.id, body)}
        try:
            response = await self._http.post(
                self._url, content=body, headers=headers, timeout=PLATFORM_REQUEST_TIMEOUT_SECONDS
            )
        except httpx.HTTPError as exc:
            error = f"platform unreachable: {type(exc).__name__}"
            await self._record(record.id, PlatformEventStatus.FAILING, error=error)
            raise ApplicationError(error, type="PlatformUnavailable") from exc
        if response.status_code >= 300:
            # Retried with backoff by Temporal; the event id lets the platform drop duplicates.
            error = f"platform answered {response.status_code}"
            await self._record(
                record.id, PlatformEventStatus.FAILING, status_code=response.status_code, error=error
            )
            raise ApplicationError(error, type="PlatformRejected")
        await self._record(record.id, PlatformEventStatus.DELIVERED, status_code=response.status_code)

    async def _record(
        self, event_id: str, status: PlatformEventStatus, *, status_code: int | None = None, error: str | None = None
    ) -> None:  # fmt: skip
        async with self._sessions() as session:
            await record_attempt(session, event_id, status=status, status_code=status_code, error=error)

"""Outbound events to the platform: signed JSON POSTs to PLATFORM_EVENTS_URL, retried by Temporal."""

from __future__ import annotations

import json
import logging
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.signing import sign
from workflows.messages import PlatformEvent

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-QBO-Sync-Signature"
EVENT_ID_HEADER = "X-QBO-Sync-Event-Id"


def event_body(event: PlatformEvent) -> bytes:
    return json.dumps(
        {
            "id": event.event_id,
            "type": event.type,
            "account_id": event.account_id,
            "invoice_id": event.invoice_id,
            "occurred_at": event.occurred_at.isoformat(),
            "data": event.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


class PlatformEventActivities:
    """Delivers events to the platform. No URL configured means the platform does not want them."""

    def __init__(self, *, http: httpx.AsyncClient, url: str | None, secret: str) -> None:
        self._http = http
        self._url = url
        self._secret = secret

    @activity.defn
    async def deliver_platform_event(self, event: PlatformEvent) -> None:
        if not self._url:
            logger.debug("no PLATFORM_EVENTS_URL; %s not delivered", event.type)
            return
        body = event_body(event)
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event.event_id,
            SIGNATURE_HEADER: sign(self._secret, int(time.time()), body),
        }
        try:
            response = await self._http.post(self._url, content=body, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"platform unreachable: {type(exc).__name__}", type="PlatformUnavailable"
            ) from exc
        if response.status_code >= 300:
            # Retried with backoff by Temporal; the event id lets the platform drop duplicates.
            raise ApplicationError(f"platform answered {response.status_code}", type="PlatformRejected")

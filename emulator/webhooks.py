"""Webhook delivery as Intuit does it: signed, batched per company, retried in order, at least once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from emulator.accounting import Change
from emulator.clock import Clock, utc_micros, utc_millis
from emulator.config import EmulatorConfig
from emulator.errors import dump
from emulator.faults import FaultInjector

logger = logging.getLogger("emulator.webhooks")

# Intuit's documented retry schedule (seconds), then every 6 hours; scaled by --webhook-retry-scale.
RETRY_SCHEDULE = (10, 20, 30, 300, 1200, 7200, 14400, 21600)
RETRY_FOREVER = 21600
MAX_LOG = 10_000

VERBS = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Void": "voided",
    "Merge": "merged",
    "Emailed": "emailed",
}


def sign(verifier_token: str, body: bytes) -> str:
    """intuit-signature: base64 of HMAC-SHA256 over the exact body bytes, keyed with the verifier token."""
    digest = hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the given number of failed attempts."""
    index = attempts - 1
    return float(RETRY_SCHEDULE[index] if index < len(RETRY_SCHEDULE) else RETRY_FOREVER)


@dataclass
class Event:
    realm_id: str
    entity: str
    entity_id: str
    operation: str
    at: datetime
    # CloudEvents id, `<uuid>-<Entity>-<id>`; the same on every redelivery.
    event_id: str = ""
    deleted_id: str | None = None

    def __post_init__(self) -> None:
        if not self.event_id:
            self.event_id = f"{uuid.uuid4()}-{self.entity}-{self.entity_id}"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.entity,
            "id": self.entity_id,
            "operation": self.operation,
            "event_id": self.event_id,
        }


@dataclass
class Delivery:
    id: int
    realm_id: str
    events: list[Event]
    body: bytes
    created_at: datetime
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def classic_body(realm_id: str, events: list[Event]) -> bytes:
    entities = []
    for event in events:
        entity: dict[str, Any] = {
            "name": event.entity,
            "id": event.entity_id,
            "operation": event.operation,
            "lastUpdated": utc_millis(event.at),
        }
        if event.deleted_id is not None:
            entity["deletedId"] = event.deleted_id
        entities.append(entity)
    return dump({"eventNotifications": [{"realmId": realm_id, "dataChangeEvent": {"entities": entities}}]})


def cloudevents_body(client_id: str, events: list[Event]) -> bytes:
    source = "intuit." + base64.b64encode(hashlib.sha256(client_id.encode()).digest()).decode()
    items = []
    for event in events:
        data: dict[str, Any] = {}
        if event.deleted_id is not None:
            data["deletedid"] = event.deleted_id
        items.append(
            {
                "specversion": "1.0",
                "id": event.event_id,
                "source": source,
                "type": f"qbo.{event.entity.lower()}.{VERBS.get(event.operation, event.operation.lower())}.v1",
                "datacontenttype": "application/json",
                "time": utc_micros(event.at),
                "intuitentityid": event.entity_id,
                "intuitaccountid": event.realm_id,
                "data": data,
            }
        )
    return dump(items)


class WebhookDispatcher:
    """One in-order queue for the app: while the head delivery is being retried, later ones wait."""

    def __init__(
        self,
        config: EmulatorConfig,
        clock: Clock,
        faults: FaultInjector,
        authorized: Callable[[str], bool],
    ) -> None:
        self.config = config
        self.clock = clock
        self.faults = faults
        self.authorized = authorized
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG)
        self._log_seq = itertools.count(1)
        self._delivery_ids = itertools.count(1)
        self._pending: dict[str, list[Event]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._queue: deque[Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._reorder_buffer: list[Event] = []
        self._reorder_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient()
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def reset(self) -> int:
        """Forgets every pending event, queued delivery and log entry (tests reuse one emulator this way)."""
        discarded = (
            len(self._queue)
            + sum(len(events) for events in self._pending.values())
            + len(self._reorder_buffer)
        )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for timer in self._timers.values():
            timer.cancel()
        if self._reorder_timer is not None:
            self._reorder_timer.cancel()
            self._reorder_timer = None
        self._timers.clear()
        self._pending.clear()
        self._queue.clear()
        self._reorder_buffer.clear()
        self.log.clear()
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")
        return discarded

    def status(self) -> dict[str, Any]:
        return {
            "queued_deliveries": len(self._queue),
            "batching_events": sum(len(events) for events in self._pending.values()),
            "held_for_reorder": len(self._reorder_buffer),
        }

    # --- intake ---------------------------------------------------------------------------------------

    def publish(self, realm_id: str, changes: list[Change]) -> None:
        """Announces changes; nothing goes out without an endpoint or for a company never connected."""
        if not changes or not self.config.webhook_url or not self.authorized(realm_id):
            return
        for change in changes:
            event = Event(realm_id, change.entity, change.id, change.operation, change.at)
            if self.faults.take_webhook("webhook_drop") is not None:
                self._log(
                    {
                        "realm_id": realm_id,
                        "events": [event.summary()],
                        "dropped": True,
                        "event_ids": [event.event_id],
                        "attempt": 0,
                        "status": None,
                        "error": "dropped by an injected webhook_drop fault",
                    }
                )
                continue
            if self.faults.take_webhook("webhook_reorder") is not None:
                self._hold_for_reorder(event)
                continue
            self._pending.setdefault(realm_id, []).append(event)
            if realm_id not in self._timers:
                loop = asyncio.get_running_loop()
                self._timers[realm_id] = loop.call_later(
                    max(self.config.webhook_batch_seconds, 0.0), self._flush, realm_id
                )

    def _flush(self, realm_id: str) -> None:
        self._timers.pop(realm_id, None)
        events = self._pending.pop(realm_id, [])
        if events:
            self._enqueue(realm_id, events)

    def _hold_for_reorder(self, event: Event) -> None:
        """Reordering holds the next N events and releases them newest first, one POST each."""
        self._reorder_buffer.append(event)
        if self.faults.webhook_armed("webhook_reorder") == 0:
            self._release_reordered()
        elif self._reorder_timer is None:
            hold = max(1.0, 5 * self.config.webhook_batch_seconds)
            self._reorder_timer = asyncio.get_running_loop().call_later(hold, self._release_reordered)

    def _release_reordered(self) -> None:
        if self._reorder_timer is not None:
            self._reorder_timer.cancel()
            self._reorder_timer = None
        held, self._reorder_buffer = self._reorder_buffer, []
        for event in reversed(held):
            self._enqueue(event.realm_id, [event])

    def _enqueue(self, realm_id: str, events: list[Event]) -> None:
        if self.config.webhook_format == "cloudevents":
            body = cloudevents_body(self.config.client_id, events)
        else:
            body = classic_body(realm_id, events)
        delivery = Delivery(next(self._delivery_ids), realm_id, events, body, self.clock.now())
        self._queue.append(delivery)
        self._wakeup.set()

    # --- delivery -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delivery = self._queue[0]
            if await self._attempt(delivery):
                if self.faults.take_webhook("webhook_duplicate") is not None:
                    await self._attempt(delivery, duplicate=True)
                self._queue.popleft()
                continue
            delay = retry_delay(delivery.attempts) * self.config.webhook_retry_scale
            await asyncio.sleep(delay)

    async def _attempt(self, delivery: Delivery, duplicate: bool = False) -> bool:
        url = self.config.webhook_url
        delivery.attempts += 1
        entry: dict[str, Any] = {
            "delivery_id": delivery.id,
            "realm_id": delivery.realm_id,
            "url": url,
            "attempt": delivery.attempts,
            "duplicate": duplicate,
            "format": self.config.webhook_format,
            "events": [event.summary() for event in delivery.events],
            "event_ids": [event.event_id for event in delivery.events],
            "status": None,
            "error": None,
        }
        if not url:
            entry["error"] = "no webhook_url configured; delivery discarded"
            self._log(entry)
            return True
        assert self._client is not None
        headers = {
            "intuit-signature": sign(self.config.verifier_token, delivery.body),
            "intuit-created-time": utc_millis(delivery.created_at),
            "intuit-t-id": str(uuid.uuid4()),
            "intuit-notification-schema-version": "0.1",
            "User-Agent": "intuit_notification_server/0.1",
            "Content-Type": "application/json",
        }
        try:
            response = await self._client.post(
                url, content=delivery.body, headers=headers, timeout=self.config.webhook_timeout_seconds
            )
        except httpx.TimeoutException:
            entry["error"] = f"no answer within {self.config.webhook_timeout_seconds:g} s"
            self._log(entry)
            return False
        except httpx.HTTPError as error:
            entry["error"] = f"{type(error).__name__}: {error}"
            self._log(entry)
            return False
        entry["status"] = response.status_code
        self._log(entry)
        return 200 <= response.status_code < 300

    def _log(self, entry: dict[str, Any]) -> None:
        self.log.append({"seq": next(self._log_seq), "time": self.clock.now().isoformat(), **entry})

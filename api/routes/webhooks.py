"""Intuit's webhook: verify, store durably, acknowledge fast; the events workflow does the rest."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Sequence
from datetime import timedelta

from fastapi import APIRouter, Request
from prometheus_client import Counter
from sqlmodel import col, select, update
from temporalio.service import RPCError

from api.deps import Services, ServicesDep, SessionDep
from api.errors import (
    DATABASE_UNAVAILABLE,
    UNAVAILABLE_MESSAGE,
    ApiError,
    error_responses,
)
from api.handoff import HandOff
from models.crud import ReceivedDelivery, StoredDelivery, store_deliveries
from models.db import release_connection
from models.schemas import WebhookAccepted
from models.tables import QuickBooksEvent, WebhookDelivery, utcnow
from qbo.webhooks import SIGNATURE_HEADER, WebhookPayloadError, read_webhook, verify_signature
from workflows.handles import start_realm_events

logger = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

# Companies told at once by one round (a burst may bring many).
TELL_CONCURRENCY = 10
# Deliveries one transaction stores at most (the rest wait for the next).
DELIVERIES_PER_TRANSACTION = 200

WEBHOOK_DELIVERIES = Counter("qbo_sync_webhook_deliveries_total", "Webhook POSTs by outcome", ["outcome"])
WEBHOOK_EVENTS = Counter("qbo_sync_webhook_events_total", "Webhook events by outcome", ["outcome"])


async def _body_within_limit(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/webhooks/quickbooks",
    responses=error_responses(400, 401, 413, 503),
    openapi_extra={
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "base64(HMAC-SHA256(key = the app's verifier token, message = the raw body))",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "description": 'Classic (`{"eventNotifications": [...]}`) or CloudEvents (an array of events).',
            "content": {"application/json": {"schema": {"anyOf": [{"type": "object"}, {"type": "array"}]}}},
        },
    },
)
async def quickbooks_webhook(request: Request, session: SessionDep, services: ServicesDep) -> WebhookAccepted:
    """Intuit's change notifications (classic or CloudEvents). 200 means stored: nothing accepted is ever lost.

    An event that cannot be read costs only itself: the others are stored and acknowledged, and the delivery is kept
    verbatim with what could not be read (`unreadable` counts them). A delivery with nothing readable is a 400."""
    settings = services.settings
    body = await _body_within_limit(request, settings.webhook_max_body_bytes)
    if not verify_signature(
        body, request.headers.get(SIGNATURE_HEADER), settings.qbo_webhook_verifier_token.get_secret_value()
    ):
        WEBHOOK_DELIVERIES.labels("bad_signature").inc()
        raise ApiError(401, "invalid_signature", "The intuit-signature header does not match the body.")

    try:
        batch = read_webhook(body)
    except WebhookPayloadError as exc:
        await _keep_unreadable(session, body, str(exc), unreadable=1)
        raise ApiError(400, "malformed_payload", f"The webhook payload could not be read: {exc}") from exc
    events = batch.events
    summary = batch.problem_summary()
    if summary is not None and not events:
        await _keep_unreadable(session, body, summary, unreadable=len(batch.problems))
        raise ApiError(400, "malformed_payload", f"No event of the webhook payload could be read: {summary}")

    writer: DeliveryWriter = request.app.state.delivery_writer
    stored = await writer.store(
        ReceivedDelivery(body=body, events=events, unreadable=len(batch.problems), parse_error=summary)
    )
    accepted = stored.accepted
    WEBHOOK_DELIVERIES.labels("accepted" if not batch.problems else "partly_unreadable").inc()
    WEBHOOK_EVENTS.labels("stored").inc(accepted)
    WEBHOOK_EVENTS.labels("duplicate").inc(len(events) - accepted)
    if batch.problems:
        # Acknowledged (Intuit would otherwise redeliver the readable events forever), and kept for operators.
        WEBHOOK_EVENTS.labels("unreadable").inc(len(batch.problems))
        logger.warning(
            "webhook delivery %s: %d event(s) could not be read (kept verbatim with the delivery), %d read",
            stored.delivery_id,
            len(batch.problems),
            len(events),
        )

    if stored.to_tell:
        # After the answer (Intuit waits at most 3 s): the delivery is stored, and what its companies' events
        # workflows are not told now, the relay tells them once Temporal answers.
        teller: HandOff[int] = request.app.state.events_teller
        teller.give(stored.delivery_id)
    return WebhookAccepted(
        accepted=accepted, duplicates=len(events) - accepted, unreadable=len(batch.problems)
    )


async def _keep_unreadable(session: SessionDep, body: bytes, problem: str, *, unreadable: int) -> None:
    """Signed by Intuit but with nothing readable: keep it for operators, and say why (a 400 follows)."""
    session.add(
        WebhookDelivery(
            body=body, event_count=0, unreadable_count=unreadable, parse_error=problem, signalled_at=utcnow()
        )
    )
    await session.commit()
    WEBHOOK_DELIVERIES.labels("malformed").inc()
    WEBHOOK_EVENTS.labels("unreadable").inc(unreadable)


async def tell_events_workflows(services: Services, delivery_ids: Sequence[int]) -> int:
    """Tell the events workflow of each company these deliveries brought events for, once per company, and mark
    told the deliveries whose companies all were; returns how many were marked. A company Temporal does not answer
    for costs only its own deliveries: they stay untold, and the relay tries them again.

    Used after the answers to Intuit (`events_teller`: a round tells each company once, however many deliveries of
    a burst brought its events), and by the relay for deliveries an outage left untold."""
    if not delivery_ids:
        return 0
    async with services.sessions() as session:
        pairs = (
            await session.exec(
                select(QuickBooksEvent.delivery_id, QuickBooksEvent.realm_id)
                .join(WebhookDelivery, col(WebhookDelivery.id) == col(QuickBooksEvent.delivery_id))
                .where(
                    col(QuickBooksEvent.delivery_id).in_(list(delivery_ids)),
                    col(WebhookDelivery.signalled_at).is_(None),
                )
                .distinct()
            )
        ).all()
        await release_connection(session)
        realms_of: dict[int, set[str]] = {delivery_id: set() for delivery_id in delivery_ids}
        for delivery_id, realm_id in pairs:
            if delivery_id is not None:
                realms_of.setdefault(delivery_id, set()).add(realm_id)
        timeout = timedelta(seconds=services.settings.temporal_rpc_timeout_seconds)
        gate = asyncio.Semaphore(TELL_CONCURRENCY)
        unreached: set[str] = set()

        async def tell(realm_id: str) -> None:
            async with gate:
                try:
                    await start_realm_events(
                        services.temporal,
                        realm_id,
                        services.settings.temporal_task_queue,
                        rpc_timeout=timeout,
                    )
                except RPCError as exc:
                    unreached.add(realm_id)
                    logger.warning(
                        "events workflow of a company not told yet (%s): the relay will", exc.status.name
                    )

        await asyncio.gather(*(tell(realm_id) for realm_id in sorted(set().union(*realms_of.values()))))
        told = sorted(delivery_id for delivery_id, realms in realms_of.items() if not realms & unreached)
        if told:
            await session.exec(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id).in_(told), col(WebhookDelivery.signalled_at).is_(None))
                .values(signalled_at=utcnow())
            )
            await session.commit()
        return len(told)


def events_teller(services: Services) -> HandOff[int]:
    """Tells the events workflows of new deliveries' companies after the answers to Intuit, in rounds: a burst of
    200 deliveries for one company is a signal-with-start or two, not 200."""

    async def tell(given: dict[int, contextvars.Context]) -> None:
        # For companies, not requests: a round's telling belongs to no one request's context.
        await tell_events_workflows(services, list(given))

    return HandOff(
        "webhook deliveries",
        tell,
        stop_within=2 * services.settings.temporal_rpc_timeout_seconds,
    )


class DeliveryWriter:
    """Stores the deliveries of concurrent webhook requests together (a group commit): while one transaction is
    being written, the deliveries that arrive wait, and the next transaction stores them all, in one statement for
    the deliveries and one for their events. Each request still answers only once its own delivery is committed;
    a burst of 200 costs a few transactions instead of 200.

    A transaction the database refuses for what it holds (not for being away) is written again one delivery at a
    time, so one delivery the database cannot take costs only its own request."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._waiting: list[tuple[ReceivedDelivery, asyncio.Future[StoredDelivery]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def store(self, delivery: ReceivedDelivery) -> StoredDelivery:
        stored: asyncio.Future[StoredDelivery] = asyncio.get_running_loop().create_future()
        self._waiting.append((delivery, stored))
        if self._writing is None or self._writing.done():
            # In a context of its own: not the request's that happened to start it (its log fields, its trace).
            self._writing = asyncio.create_task(self._write(), context=contextvars.Context())
        return await stored

    async def _write(self) -> None:
        while self._waiting:
            batch = self._waiting[:DELIVERIES_PER_TRANSACTION]
            del self._waiting[:DELIVERIES_PER_TRANSACTION]
            try:
                await self._store(batch)
            except Exception:
                # A bug: the batch's requests fail (below), and the deliveries queued behind it are still written.
                logger.exception("a batch of webhook deliveries could not be written")
            finally:
                # No request waits forever: a write cut short (the app stopping) fails what it had not answered
                # (Intuit delivers those again).
                for _, stored in batch:
                    _settle(stored, exc=_not_stored())

    async def _store(self, batch: list[tuple[ReceivedDelivery, asyncio.Future[StoredDelivery]]]) -> None:
        try:
            results = await self._transaction([delivery for delivery, _ in batch])
        except DATABASE_UNAVAILABLE as exc:
            # Away or busy: every request of the batch answers 503 (Intuit delivers again), each with its own error.
            logger.warning(
                "webhook deliveries not stored, the database did not answer: %s", type(exc).__name__
            )
            for _, stored in batch:
                _settle(stored, exc=_not_stored())
            return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            logger.warning("a batch of %d webhook deliveries was refused: storing each alone", len(batch))
            for delivery, stored in batch:
                try:
                    [result] = await self._transaction([delivery])
                except Exception as alone:
                    _settle(stored, exc=alone)
                else:
                    _settle(stored, result=result)
            return
        for (_, stored), result in zip(batch, results, strict=True):
            _settle(stored, result=result)

    async def _transaction(self, deliveries: list[ReceivedDelivery]) -> list[StoredDelivery]:
        async with self._services.sessions() as session:
            results = await store_deliveries(session, deliveries, received_at=utcnow())
            await session.commit()
        return results


def _not_stored() -> ApiError:
    return ApiError(503, "temporarily_unavailable", UNAVAILABLE_MESSAGE)


def _settle(
    stored: asyncio.Future[StoredDelivery],
    *,
    result: StoredDelivery | None = None,
    exc: BaseException | None = None,
) -> None:
    """Answer one request's wait, unless it has gone (the client hung up: the delivery is stored all the same)."""
    if stored.done():
        return
    if exc is not None:
        stored.set_exception(exc)
    else:
        assert result is not None
        stored.set_result(result)

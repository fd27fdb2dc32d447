"""Intuit's webhook: verify, store durably, acknowledge fast; the events workflow does the rest."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, Request
from prometheus_client import Counter
from sqlmodel import select
from temporalio.service import RPCError

from api.deps import Services, ServicesDep, SessionDep
from api.errors import ApiError, error_responses
from models.crud import awaiting_processing, delivered_events, store_events
from models.db import release_connection
from models.schemas import WebhookAccepted
from models.tables import QuickBooksEvent, WebhookDelivery, utcnow
from qbo.webhooks import SIGNATURE_HEADER, WebhookPayloadError, read_webhook, verify_signature
from workflows.handles import start_realm_events

logger = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

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
async def quickbooks_webhook(
    request: Request, background: BackgroundTasks, session: SessionDep, services: ServicesDep
) -> WebhookAccepted:
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

    delivery = WebhookDelivery(
        body=body, event_count=len(events), unreadable_count=len(batch.problems), parse_error=summary
    )
    session.add(delivery)
    await session.flush()
    now = utcnow()
    rows = delivered_events(events, received_at=now, delivery_id=delivery.id)
    accepted = await store_events(session, rows)
    await session.commit()
    WEBHOOK_DELIVERIES.labels("accepted" if not batch.problems else "partly_unreadable").inc()
    WEBHOOK_EVENTS.labels("stored").inc(accepted)
    WEBHOOK_EVENTS.labels("duplicate").inc(len(events) - accepted)
    if batch.problems:
        # Acknowledged (Intuit would otherwise redeliver the readable events forever), and kept for operators.
        WEBHOOK_EVENTS.labels("unreadable").inc(len(batch.problems))
        logger.warning(
            "webhook delivery %s: %d event(s) could not be read (kept verbatim with the delivery), %d read",
            delivery.id,
            len(batch.problems),
            len(events),
        )

    if accepted and awaiting_processing(rows):
        # After the answer (Intuit waits at most 3 s): the delivery is stored, and what its companies' events
        # workflows are not told now, the relay tells them once Temporal answers.
        background.add_task(tell_events_workflows, services, delivery.id)
    else:
        delivery.signalled_at = now  # nothing new to tell (duplicates, or changes the engine does not follow)
        session.add(delivery)
        await session.commit()
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


async def tell_events_workflows(services: Services, delivery_id: int | None) -> bool:
    """Tell the events workflow of each company a delivery brought events for, and mark the delivery told; False
    when Temporal did not answer (the relay tries again).

    Used after the answer to Intuit, and by the relay for deliveries an outage left untold."""
    async with services.sessions() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.signalled_at is not None:
            return True
        realms = (
            await session.exec(
                select(QuickBooksEvent.realm_id).where(QuickBooksEvent.delivery_id == delivery_id).distinct()
            )
        ).all()
        timeout = timedelta(seconds=services.settings.temporal_rpc_timeout_seconds)
        await release_connection(session)
        for realm_id in sorted(realms):
            try:
                await start_realm_events(
                    services.temporal, realm_id, services.settings.temporal_task_queue, rpc_timeout=timeout
                )
            except RPCError as exc:
                logger.warning(
                    "events workflow of a company not told yet (%s): the relay will", exc.status.name
                )
                return False
        delivery.signalled_at = utcnow()
        session.add(delivery)
        await session.commit()
        return True

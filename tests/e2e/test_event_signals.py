"""A QuickBooks event whose invoice workflow cannot be told (Temporal unreachable for a moment) stays pending: it
is not marked processed while the invoice never heard of the change."""

from __future__ import annotations

import uuid

from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import temporal_support
from activities.events import EVENTS_NOT_READ, EventActivities
from activities.quickbooks_access import QuickBooksAccess
from models.domain import EventStatus
from models.tables import QuickBooksEvent
from qbo.client import endpoints_for
from tests.engine import Engine
from tests.support import free_port
from workflows.messages import ProcessEventsInput


async def pending_events(engine: Engine, realm: str) -> list[QuickBooksEvent]:
    async with engine.sessions() as session:
        rows = await session.exec(
            select(QuickBooksEvent).where(
                QuickBooksEvent.realm_id == realm, QuickBooksEvent.status == EventStatus.PENDING.value
            )
        )
        return list(rows.all())


async def test_an_event_whose_invoice_workflow_cannot_be_told_stays_pending(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-1", number="SIG-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    # Intuit's webhook for our own create is processed; then no worker runs, so only this test processes events.
    await engine.wait_for(lambda: pending_events(engine, realm), lambda rows: rows == [])
    await engine.stop_workers()
    dedupe_key = f"test-{uuid.uuid4().hex}"
    async with engine.sessions() as session:
        session.add(
            QuickBooksEvent(
                dedupe_key=dedupe_key,
                realm_id=realm,
                entity="Invoice",
                entity_id=synced["quickbooks"]["invoice_id"],
                operation="Update",
            )
        )
        await session.commit()
    # The worker's Temporal client, as it is while Temporal is away: every signal fails UNAVAILABLE.
    unreachable = await temporal_support.connect(
        engine.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"}), lazy=True
    )
    resources = engine.resources
    access = QuickBooksAccess(
        sessions=resources.sessions,
        cipher=resources.cipher,
        temporal=unreachable,
        http=resources.http,
        limiter=resources.limiter,
        api_base_url=endpoints_for(
            engine.settings.qbo_environment, engine.settings.qbo_base_url
        ).api_base_url,
    )
    activities = EventActivities(access=access, sessions=resources.sessions, temporal=unreachable)

    # A late webhook of Intuit's may have stored another event meanwhile: only ours is looked at. When no event of
    # the batch could be finished, the activity says so (its retry policy comes back).
    refused: str | None = None
    try:
        await ActivityEnvironment().run(activities.process_pending_events, ProcessEventsInput(realm_id=realm))
    except ApplicationError as exc:
        refused = exc.type
    assert refused in (None, EVENTS_NOT_READ)

    [event] = [row for row in await pending_events(engine, realm) if row.dedupe_key == dedupe_key]
    assert (event.operation, event.attempts) == ("Update", 1)
    assert event.last_error is not None and "not told" in event.last_error

"""Operators' actions through the whole engine: the updates the Temporal Web UI and CLI send, and the API's manual
retry that goes through the same update."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import pytest
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from models.crud import new_event, store_events
from models.domain import EventStatus, InvoiceStatus
from models.tables import QuickBooksConnection, QuickBooksEvent, WebhookDelivery, utcnow
from qbo.webhooks import event_dedupe_key
from tests.e2e.test_payments_and_webhooks import fault, pay, synced_invoice
from tests.engine import Engine
from workflows.ids import connection_workflow_id, invoice_workflow_id
from workflows.messages import (
    OperatorRequest,
    ReplayParkedEventsRequest,
    ReplayParkedEventsResult,
    ReprocessDeliveryRequest,
    ReprocessDeliveryResult,
    RereadRequest,
    RereadResult,
    SweepNowResult,
)


async def update_names(engine: Engine, workflow_id: str) -> list[str]:
    """The updates the workflow accepted, from its history."""
    names = []
    async for event in engine.temporal.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            names.append(
                event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            )
    return names


async def swept_at(engine: Engine, account_id: str) -> datetime | None:
    async with engine.sessions() as session:
        row = await session.get(QuickBooksConnection, account_id)
        return row.cdc_last_sweep_at if row is not None else None


async def test_the_api_retry_goes_through_the_update_and_a_refusal_is_a_409_in_the_validators_words(
    engine: Engine,
) -> None:
    account, _realm, _qbo_id = await synced_invoice(engine)
    refused = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/quickbooks/retry")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "not_retryable"
    assert "already in QuickBooks (status synced)" in error["message"]
    assert "reread_from_quickbooks" in error["message"]


async def test_the_api_retry_of_a_failed_sync_is_the_retry_sync_update(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    await fault(engine, count=1, method="POST", path_contains="/invoice", status=400, fault_code="6000",
                fault_type="ValidationFault", message="A business validation error has occurred")  # fmt: skip
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for_invoice(account, "inv-1", "failed")
    retried = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/quickbooks/retry")
    assert retried.status_code == 202 and retried.json()["invoice_id"] == "inv-1"
    await engine.wait_for_invoice(account, "inv-1", "synced")
    assert await update_names(engine, invoice_workflow_id(account, "inv-1")) == ["retry_sync"]


async def synced_after_the_first_sweep(engine: Engine) -> tuple[str, str, str]:
    """An account whose connect-time sweep has run (it would read an invoice recorded after it: the next one is 15
    minutes away), with a synced invoice whose webhooks from now on are lost."""
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.wait_for(lambda: swept_at(engine, account), lambda at: at is not None)
    await engine.send_invoice(account, "inv-1")
    qbo_id = (await engine.wait_for_invoice(account, "inv-1", "synced"))["quickbooks"]["invoice_id"]
    await fault(engine, kind="webhook_drop", count=10)
    return account, realm, qbo_id


async def test_a_reread_from_quickbooks_finds_a_payment_whose_webhook_was_lost(engine: Engine) -> None:
    account, realm, qbo_id = await synced_after_the_first_sweep(engine)
    await pay(engine, realm, qbo_id, "225.50")
    await asyncio.sleep(2)
    assert (await engine.invoice(account, "inv-1"))["status"] == "synced"

    handle = engine.temporal.get_workflow_handle(invoice_workflow_id(account, "inv-1"))
    result = await handle.execute_update("reread_from_quickbooks", RereadRequest(), result_type=RereadResult)
    assert result.status == InvoiceStatus.PAID and result.previous_status == InvoiceStatus.SYNCED
    assert result.changed and result.balance_cents == 0
    paid = await engine.invoice(account, "inv-1")
    assert paid["status"] == "paid" and paid["balance_cents"] == 0
    assert "Payment confirmed via QuickBooks." in await engine.timeline(account, "inv-1")


async def test_sweep_now_catches_a_payment_whose_webhook_was_lost(engine: Engine) -> None:
    account, realm, qbo_id = await synced_after_the_first_sweep(engine)
    await pay(engine, realm, qbo_id, "100.00")
    # The sweep leaves QuickBooks' last two minutes to webhooks still on their way: QuickBooks' clock moves on.
    (await engine.emulator.admin.post("/__admin/clock", json={"advance_seconds": 180})).raise_for_status()
    assert (await engine.invoice(account, "inv-1"))["status"] == "synced"

    handle = engine.temporal.get_workflow_handle(connection_workflow_id(account))
    result = await handle.execute_update("sweep_now", OperatorRequest(), result_type=SweepNowResult)
    assert result.caught >= 1, result
    partial = await engine.wait_for_invoice(account, "inv-1", "partially_paid")
    assert partial["balance_cents"] == 12550


async def park(engine: Engine, realm: str, payment_id: str) -> int:
    """A payment's event as it is after 10 failed reads: parked `failed` with its reason (the webhook was lost)."""
    now = utcnow()
    async with engine.sessions() as session:
        await store_events(
            session,
            [
                new_event(
                    dedupe_key=event_dedupe_key("parked", realm, "Payment", payment_id), realm_id=realm,
                    entity="Payment", entity_id=payment_id, operation="Create", occurred_at=now, received_at=now,
                    source="webhook",
                )
            ],
        )  # fmt: skip
        event = (
            await session.exec(
                select(QuickBooksEvent).where(
                    QuickBooksEvent.realm_id == realm, QuickBooksEvent.entity_id == payment_id
                )
            )
        ).one()
        event.status, event.attempts = EventStatus.FAILED.value, 10
        event.last_error = "QuickBooks could not be read: 503 (Service Unavailable)"
        session.add(event)
        await session.commit()
        assert event.id is not None
        return event.id


async def event_status(engine: Engine, event_id: int) -> str | None:
    async with engine.sessions() as session:
        event = await session.get(QuickBooksEvent, event_id, populate_existing=True)
        return event.status if event is not None else None


async def test_replay_parked_events_processes_a_parked_payment_and_says_what_it_replayed(
    engine: Engine,
) -> None:
    account, realm, qbo_id = await synced_after_the_first_sweep(engine)
    payment_id = await pay(engine, realm, qbo_id, "225.50")
    event_id = await park(engine, realm, payment_id)
    await asyncio.sleep(1)
    assert (await engine.invoice(account, "inv-1"))["status"] == "synced"

    handle = engine.temporal.get_workflow_handle(connection_workflow_id(account))
    none = await handle.execute_update(
        "replay_parked_events", ReplayParkedEventsRequest(event_ids=[event_id + 1000]),
        result_type=ReplayParkedEventsResult,
    )  # fmt: skip
    assert none.replayed == 0 and none.not_parked == [event_id + 1000]
    assert f"Company {realm} has no parked event among those asked for." in none.message
    assert await event_status(engine, event_id) == EventStatus.FAILED

    # As the Web UI sends it: `{}`.
    result = await handle.execute_update(
        "replay_parked_events", ReplayParkedEventsRequest(), result_type=ReplayParkedEventsResult
    )
    assert (result.replayed, result.event_ids) == (1, [event_id])
    assert f"1 parked event(s) of company {realm} are pending again" in result.message
    await engine.wait_for_invoice(account, "inv-1", "paid")
    assert await engine.wait_for(
        lambda: event_status(engine, event_id), lambda status: status == EventStatus.PROCESSED
    )
    assert "replay_parked_events" in await update_names(engine, connection_workflow_id(account))


async def test_reprocess_webhook_delivery_stores_the_events_an_earlier_release_could_not_read(
    engine: Engine,
) -> None:
    account, realm, qbo_id = await synced_after_the_first_sweep(engine)
    payment_id = await pay(engine, realm, qbo_id, "225.50")
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = json.dumps(
        {"eventNotifications": [
            {"realmId": realm, "dataChangeEvent": {"entities": [
                {"name": "Payment", "id": payment_id, "operation": "Create", "lastUpdated": stamp}
            ]}},
            {"realmId": "9341453000000001", "dataChangeEvent": {"entities": [
                {"name": "Payment", "id": "77", "operation": "Create", "lastUpdated": stamp}
            ]}},
        ]}
    ).encode()  # fmt: skip
    # Kept verbatim by a release whose parser could not read it: no event was stored from it.
    async with engine.sessions() as session:
        delivery = WebhookDelivery(
            body=body,
            event_count=0,
            unreadable_count=2,
            parse_error="event #0: unknown shape",
            signalled_at=utcnow(),
        )
        session.add(delivery)
        await session.commit()
        delivery_id = delivery.id
    assert delivery_id is not None

    handle = engine.temporal.get_workflow_handle(connection_workflow_id(account))
    result = await handle.execute_update(
        "reprocess_webhook_delivery", ReprocessDeliveryRequest(delivery_id=delivery_id),
        result_type=ReprocessDeliveryResult,
    )  # fmt: skip
    assert (result.read, result.stored, result.duplicates, result.unreadable) == (1, 1, 0, 0)
    assert result.other_companies == 1 and "send this update to their connections" in result.message
    await engine.wait_for_invoice(account, "inv-1", "paid")
    async with engine.sessions() as session:
        kept = await session.get(WebhookDelivery, delivery_id, populate_existing=True)
        assert kept is not None and kept.parse_error is None and kept.unreadable_count == 0
        assert kept.body == body  # what Intuit sent stays as it was
        # Only this company's event: another company's are its own connection's business.
        stored = (
            await session.exec(select(QuickBooksEvent).where(QuickBooksEvent.delivery_id == delivery_id))
        ).all()
        assert [(event.realm_id, event.entity_id) for event in stored] == [(realm, payment_id)]

    again = await handle.execute_update(
        "reprocess_webhook_delivery", {"delivery_id": delivery_id}, result_type=ReprocessDeliveryResult
    )
    assert (again.read, again.stored, again.duplicates) == (1, 0, 1)
    with pytest.raises(WorkflowUpdateFailedError) as unknown:
        await handle.execute_update("reprocess_webhook_delivery", {"delivery_id": delivery_id + 10_000})
    assert isinstance(unknown.value.cause, ApplicationError)
    assert f"No webhook delivery {delivery_id + 10_000} is kept." in unknown.value.cause.message

"""Payments recorded in QuickBooks reach the platform through Intuit's webhooks, whatever the delivery does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from sqlmodel import func, select
from standardwebhooks import Webhook, WebhookVerificationError
from temporalio.testing import WorkflowEnvironment

from models.crud import new_event, store_events
from models.domain import EventStatus
from models.tables import QuickBooksEvent, WebhookDelivery, utcnow
from qbo.webhooks import event_dedupe_key
from tests.engine import Engine, running_engine
from tests.support import TEST_VERIFIER_TOKEN, Emulator, recording_server
from workflows.handles import start_realm_events

PAID_MESSAGE = "Payment confirmed via QuickBooks."
PLATFORM_SECRET = "whsec_" + base64.b64encode(b"the platform's secret, 32 bytes!").decode()
ANOTHER_SECRET = "whsec_" + base64.b64encode(b"someone else's secret, 32 bytes").decode()


async def synced_invoice(engine: Engine, invoice_id: str = "inv-1") -> tuple[str, str, str]:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, invoice_id, number=f"N-{invoice_id}")
    synced = await engine.wait_for_invoice(account, invoice_id, "synced")
    return account, realm, synced["quickbooks"]["invoice_id"]


async def pay(engine: Engine, realm: str, qbo_invoice_id: str, amount: str) -> str:
    response = await engine.emulator.admin.post(
        f"/__admin/companies/{realm}/payments", json={"invoice_id": qbo_invoice_id, "amount": amount}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["payment_id"])


async def fault(engine: Engine, **spec: Any) -> None:
    (await engine.emulator.admin.post("/__admin/faults", json=spec)).raise_for_status()


def signed(body: bytes, token: str = TEST_VERIFIER_TOKEN) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()
    return {"intuit-signature": signature, "Content-Type": "application/json"}


async def test_partial_then_full_payment(engine: Engine) -> None:
    account, realm, qbo_id = await synced_invoice(engine)

    await pay(engine, realm, qbo_id, "100.00")
    partial = await engine.wait_for_invoice(account, "inv-1", "partially_paid")
    assert partial["balance_cents"] == 12550
    assert "Partial payment recorded in QuickBooks: 100.00 of 225.50 USD paid." in await engine.timeline(
        account, "inv-1"
    )

    await pay(engine, realm, qbo_id, "125.50")
    paid = await engine.wait_for_invoice(account, "inv-1", "paid")
    assert paid["balance_cents"] == 0 and paid["paid_at"] is not None
    timeline = await engine.timeline(account, "inv-1")
    assert timeline.count(PAID_MESSAGE) == 1
    assert timeline[-1] == PAID_MESSAGE


async def test_a_deleted_payment_reopens_the_invoice(engine: Engine) -> None:
    account, realm, qbo_id = await synced_invoice(engine)
    payment = await pay(engine, realm, qbo_id, "225.50")
    await engine.wait_for_invoice(account, "inv-1", "paid")

    (
        await engine.emulator.admin.post(f"/__admin/companies/{realm}/payments/{payment}/delete")
    ).raise_for_status()
    reopened = await engine.wait_for_invoice(account, "inv-1", "synced")
    assert reopened["balance_cents"] == 22550
    assert "Payment removed in QuickBooks: the invoice is open again." in await engine.timeline(
        account, "inv-1"
    )


async def test_a_voided_payment_reopens_the_invoice_and_a_new_one_pays_it_again(engine: Engine) -> None:
    account, realm, qbo_id = await synced_invoice(engine)
    payment = await pay(engine, realm, qbo_id, "225.50")
    await engine.wait_for_invoice(account, "inv-1", "paid")
    (
        await engine.emulator.admin.post(f"/__admin/companies/{realm}/payments/{payment}/void")
    ).raise_for_status()
    await engine.wait_for_invoice(account, "inv-1", "synced")
    await pay(engine, realm, qbo_id, "225.50")
    await engine.wait_for_invoice(account, "inv-1", "paid")
    assert (await engine.timeline(account, "inv-1")).count(PAID_MESSAGE) == 2


async def test_duplicate_deliveries_change_nothing(engine: Engine) -> None:
    account, realm, qbo_id = await synced_invoice(engine)
    await fault(engine, kind="webhook_duplicate", count=5)
    await pay(engine, realm, qbo_id, "225.50")
    await engine.wait_for_invoice(account, "inv-1", "paid")
    deliveries = (await engine.emulator.admin.get("/__admin/webhooks")).json()
    assert deliveries  # Intuit really did send things twice
    assert (await engine.timeline(account, "inv-1")).count(PAID_MESSAGE) == 1


async def test_reordered_deliveries_end_in_the_true_state(engine: Engine) -> None:
    account, realm, qbo_id = await synced_invoice(engine)
    await fault(engine, kind="webhook_reorder", count=4)
    await pay(engine, realm, qbo_id, "100.00")
    await pay(engine, realm, qbo_id, "125.50")
    paid = await engine.wait_for_invoice(account, "inv-1", "paid")
    assert paid["balance_cents"] == 0
    assert (await engine.timeline(account, "inv-1")).count(PAID_MESSAGE) == 1


async def test_forged_webhooks_are_refused_and_not_stored(engine: Engine, http: httpx.AsyncClient) -> None:
    body = json.dumps(
        {"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": []}}]}
    ).encode()
    async with engine.sessions() as session:
        before = (await session.exec(select(func.count()).select_from(WebhookDelivery))).one()
    for headers in (signed(body, token="wrong-token"), {"Content-Type": "application/json"}):
        response = await http.post(f"{engine.api_url}/webhooks/quickbooks", content=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_signature"
    async with engine.sessions() as session:
        assert (await session.exec(select(func.count()).select_from(WebhookDelivery))).one() == before


async def test_malformed_but_signed_webhooks_are_kept_and_reported(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    for body in (b"{not json", b'{"eventNotifications": [{"dataChangeEvent": {}}]}', b'"just a string"'):
        response = await http.post(
            f"{engine.api_url}/webhooks/quickbooks", content=body, headers=signed(body)
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_payload"
        async with engine.sessions() as session:
            kept = (await session.exec(select(WebhookDelivery).where(WebhookDelivery.body == body))).first()
            assert kept is not None and kept.parse_error


async def test_an_accepted_event_is_stored_once_with_its_dedupe_key(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    body = json.dumps(
        [
            {
                "specversion": "1.0",
                "id": "evt-123-Payment-999",
                "source": "intuit.test",
                "type": "qbo.payment.created.v1",
                "time": "2026-11-24T10:00:00Z",
                "intuitentityid": "999",
                "intuitaccountid": "4620816365000000001",
            }
        ]
    ).encode()
    for expected in ({"accepted": 1, "duplicates": 0}, {"accepted": 0, "duplicates": 1}):
        response = await http.post(
            f"{engine.api_url}/webhooks/quickbooks", content=body, headers=signed(body)
        )
        assert response.status_code == 200
        assert response.json() == {**expected, "unreadable": 0}
    async with engine.sessions() as session:
        rows = (
            await session.exec(
                select(QuickBooksEvent).where(
                    QuickBooksEvent.dedupe_key
                    == event_dedupe_key("cloudevent", "4620816365000000001", "evt-123-Payment-999")
                )
            )
        ).all()
        assert [(row.entity, row.entity_id, row.operation) for row in rows] == [("Payment", "999", "Create")]


@pytest.mark.parametrize("webhook_format", ["classic", "cloudevents"])
async def test_both_webhook_formats_mark_invoices_paid_and_tell_the_platform(
    dev_env: WorkflowEnvironment,
    migrated_database: str,
    emulator: Emulator,
    task_queue: str,
    webhook_format: str,
) -> None:
    async with (
        recording_server() as platform,
        running_engine(
            env=dev_env,
            database_url=migrated_database,
            emulator=emulator,
            task_queue=task_queue,
            webhook_format=webhook_format,
            platform_events_url=platform.url,
            platform_events_secret=PLATFORM_SECRET,
        ) as engine,
    ):
        account, realm, qbo_id = await synced_invoice(engine)
        await pay(engine, realm, qbo_id, "225.50")
        await engine.wait_for_invoice(account, "inv-1", "paid")

        def paid_events() -> list[Any]:
            return [r for r in platform.requests if json.loads(r.body)["type"] == "invoice.paid"]

        async def delivered() -> list[Any]:
            return paid_events()

        [event] = await engine.wait_for(delivered, lambda events: len(events) == 1)
        payload = Webhook(PLATFORM_SECRET).verify(event.body, event.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(ANOTHER_SECRET).verify(event.body, event.headers)
        assert payload["account_id"] == account and payload["invoice_id"] == "inv-1"
        assert payload["data"]["status"] == "paid" and payload["data"]["qbo_invoice_id"] == qbo_id
        assert event.headers["webhook-id"] == payload["id"]
        # Nothing in the event is a token or the client's email address.
        assert "ada@example.com" not in event.body.decode()


async def test_an_event_that_can_never_be_read_is_parked_and_the_others_go_on(engine: Engine) -> None:
    # Stored before ids were checked at the door (or by any other writer): an id the client refuses must not stop
    # the company's whole queue behind it.
    account, realm, qbo_id = await synced_invoice(engine)
    await fault(engine, kind="webhook_drop", count=10)
    payment_id = await pay(engine, realm, qbo_id, "225.50")
    now = utcnow()
    async with engine.sessions() as session:
        await store_events(
            session,
            [
                new_event(
                    dedupe_key=event_dedupe_key("test", realm, name, entity_id), realm_id=realm, entity="Payment",
                    entity_id=entity_id, operation="Create", occurred_at=now, received_at=now, source="webhook",
                )
                for name, entity_id in (("bad", "12/../34"), ("good", payment_id))
            ],
        )  # fmt: skip
        await session.commit()
    await start_realm_events(engine.temporal, realm, engine.settings.temporal_task_queue)

    await engine.wait_for_invoice(account, "inv-1", "paid")
    async with engine.sessions() as session:
        bad = (
            await session.exec(
                select(QuickBooksEvent).where(
                    QuickBooksEvent.realm_id == realm, QuickBooksEvent.entity_id == "12/../34"
                )
            )
        ).one()
    assert bad.status == EventStatus.FAILED
    assert bad.last_error and "unreadable event" in bad.last_error


async def pending_events_of(engine: Engine, realm: str) -> set[tuple[str, str]]:
    async with engine.sessions() as session:
        rows = await session.exec(
            select(QuickBooksEvent).where(
                QuickBooksEvent.realm_id == realm, QuickBooksEvent.status == EventStatus.PENDING.value
            )
        )
        return {(row.entity, row.entity_id) for row in rows.all()}


async def test_an_invoice_quickbooks_keeps_failing_to_read_does_not_hold_up_the_companys_other_events(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    qbo_ids = {}
    for invoice_id in ("inv-a", "inv-b"):
        await engine.send_invoice(account, invoice_id, number=f"N-{invoice_id}")
        synced = await engine.wait_for_invoice(account, invoice_id, "synced")
        qbo_ids[invoice_id] = synced["quickbooks"]["invoice_id"]
    stuck, fine = qbo_ids["inv-b"], qbo_ids["inv-a"]
    assert not fine.startswith(stuck)  # the fault's path matches the stuck one only
    # QuickBooks answers every read of one invoice with a 503 (Intuit having trouble with one object).
    await fault(engine, method="GET", path_contains=f"/invoice/{stuck}", realm_id=realm, status=503, rate=1.0)
    try:
        stuck_payment = await pay(engine, realm, stuck, "225.50")
        await pay(engine, realm, fine, "225.50")
        await engine.wait_for_invoice(account, "inv-a", "paid", timeout=30)
        # Every other event of the company is done with (the invoices' creates, the other payment), so nothing
        # waits behind the one QuickBooks cannot read: only its own events are kept, to be tried again.
        await engine.wait_for(
            lambda: pending_events_of(engine, realm),
            lambda pending: pending == {("Payment", stuck_payment), ("Invoice", stuck)},
            timeout=30,
        )
        assert (await engine.invoice(account, "inv-b"))["status"] == "synced"
    finally:
        (await engine.emulator.admin.delete("/__admin/faults")).raise_for_status()
    # Once QuickBooks answers again, they are: the invoice reads paid (from its payment's event), and its own event
    # is done with too, moments later (the invoice's record no longer waits for an activity task: it may come first).
    await engine.wait_for_invoice(account, "inv-b", "paid", timeout=60)
    await engine.wait_for(
        lambda: pending_events_of(engine, realm), lambda pending: pending == set(), timeout=60
    )

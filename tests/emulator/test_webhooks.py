"""Webhooks: signed, batched per company, both payload formats, Intuit's retry schedule, injected mischief."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import pytest

from tests.emulator.helpers import (
    REDIRECT_URI,
    VERIFIER_TOKEN,
    EmulatorHandle,
    Received,
    StartEmulator,
    WebhookReceiver,
    admin_ok,
    connect,
    eventually,
    webhook_receiver,
)

# Intuit's published test vectors (reference §2.4): Java SDK WebhooksServiceTest and python-quickbooks.
JAVA_SDK_VECTOR = (
    "b5771f19b12ddb4bcdb9f08bdc50bc63878a",
    b'{"eventNotifications":[{"realmId":"1185883450","dataChangeEvent":{"entities":[{"name":"Customer","id":"1",'
    b'"operation":"Create","lastUpdated":"2015-10-05T14:42:19-0700"}]}}]}',
    "JC2GUwciPmRBwEO7WvrRmKqu9tGOKL8FFallocTFi8Q=",
)
PYTHON_QUICKBOOKS_VECTOR = ("verify_me", b'{"stuff":"5"}', "nfPLN16u3vMvv08ghDs+dOkLuirEVDy5wAeG/lmM2OA=")
CLOUDEVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-(\w+)-(\d+)")


def signature(token: str, body: bytes) -> str:
    """Computed here independently of the emulator, the way a receiver verifies it."""
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()


def entities(received: Received) -> list[tuple[str, str, str]]:
    """(name, id, operation) of a classic notification."""
    payload = json.loads(received.body)
    return [
        (entity["name"], entity["id"], entity["operation"])
        for notification in payload["eventNotifications"]
        for entity in notification["dataChangeEvent"]["entities"]
    ]


@pytest.fixture(scope="module")
async def hooks(emulator_factory: StartEmulator) -> EmulatorHandle:
    """One emulator for this module; `point` resets its webhook state before each test."""
    return await emulator_factory("--redirect-uri", REDIRECT_URI, "--webhook-retry-scale", "0.01")


async def point(emulator: EmulatorHandle, receiver: WebhookReceiver | None, **config: Any) -> EmulatorHandle:
    """Clears faults and queued deliveries, then sends webhooks to `receiver` with these settings."""
    await admin_ok(emulator, "DELETE", "/__admin/faults")
    await admin_ok(emulator, "DELETE", "/__admin/webhooks")
    settings = {
        "webhook_url": receiver.url if receiver else None,
        "webhook_format": "classic",
        "webhook_batch_seconds": 0.1,
        "webhook_timeout_seconds": 3.0,
        "webhook_retry_scale": 0.01,
        "verifier_token": VERIFIER_TOKEN,
        **config,
    }
    await admin_ok(emulator, "PUT", "/__admin/config", settings)
    return emulator


async def deliveries(emulator: EmulatorHandle) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await admin_ok(emulator, "GET", "/__admin/webhooks"))["deliveries"]
    return result


def test_signature_scheme_matches_intuits_published_vectors() -> None:
    for token, body, expected in (JAVA_SDK_VECTOR, PYTHON_QUICKBOOKS_VECTOR):
        assert signature(token, body) == expected


async def test_classic_notification_is_signed_and_carries_intuits_headers(hooks: EmulatorHandle) -> None:
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver)
        conn = await connect(emulator)

        customer = await conn.customer("Hooked Customer")
        (received,) = await receiver.wait_for(1)

    headers = received.headers
    assert headers["intuit-signature"] == signature(VERIFIER_TOKEN, received.body)
    assert headers["intuit-notification-schema-version"] == "0.1"
    assert headers["user-agent"] == "intuit_notification_server/0.1"
    assert headers["content-type"] == "application/json"
    assert headers["intuit-t-id"] and headers["intuit-created-time"].endswith("Z")
    payload = json.loads(received.body)
    (notification,) = payload["eventNotifications"]
    assert notification["realmId"] == conn.realm_id
    (entity,) = notification["dataChangeEvent"]["entities"]
    assert set(entity) == {"name", "id", "operation", "lastUpdated"}
    assert (entity["name"], entity["id"], entity["operation"]) == ("Customer", customer["Id"], "Create")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entity["lastUpdated"])


async def test_signature_uses_the_configured_verifier_token(hooks: EmulatorHandle) -> None:
    token = JAVA_SDK_VECTOR[0]
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver)
        config = await admin_ok(emulator, "PUT", "/__admin/config", {"verifier_token": token})
        conn = await connect(emulator)

        await conn.customer()
        (received,) = await receiver.wait_for(1)

    assert "verifier_token" not in config and "client_secret" not in config
    assert received.headers["intuit-signature"] == signature(token, received.body)


async def test_changes_in_one_window_are_batched_and_payments_also_update_their_invoice(
    hooks: EmulatorHandle,
) -> None:
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver, webhook_batch_seconds=1.0)
        conn = await connect(emulator)

        customer = await conn.customer()
        invoice = await conn.invoice(customer["Id"], 100)
        payment = await conn.payment(customer["Id"], invoice["Id"], 100)
        (received,) = await receiver.wait_for(1)

    assert entities(received) == [
        ("Customer", customer["Id"], "Create"),
        ("Invoice", invoice["Id"], "Create"),
        ("Payment", payment["Id"], "Create"),
        ("Invoice", invoice["Id"], "Update"),
    ]


async def test_every_kind_of_change_is_announced(hooks: EmulatorHandle) -> None:
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver)
        conn = await connect(emulator)
        customer = await conn.customer()
        kept = await conn.invoice(customer["Id"], 100, BillEmail={"Address": "a@b.com"})
        dropped = await conn.invoice(customer["Id"], 10)
        await conn.post(f"invoice/{kept['Id']}/send")
        await conn.post("invoice", {"Id": dropped["Id"], "SyncToken": "0"}, {"operation": "delete"})
        paid = await admin_ok(emulator, "POST", f"/__admin/companies/{conn.realm_id}/payments",
                              {"invoice_id": kept["Id"], "amount": "40.00"}, status=201)  # fmt: skip
        await admin_ok(
            emulator, "POST", f"/__admin/companies/{conn.realm_id}/payments/{paid['payment_id']}/void"
        )
        again = await conn.payment(customer["Id"], kept["Id"], 10)
        await admin_ok(emulator, "POST", f"/__admin/companies/{conn.realm_id}/payments/{again['Id']}/delete")
        await admin_ok(emulator, "POST", f"/__admin/companies/{conn.realm_id}/invoices/{kept['Id']}/void")

        async def all_seen() -> list[tuple[str, str, str]] | None:
            seen = [entity for received in receiver.received for entity in entities(received)]
            return seen if ("Invoice", kept["Id"], "Void") in seen else None

        seen = await eventually(all_seen)

    assert ("Invoice", kept["Id"], "Emailed") in seen
    assert ("Invoice", dropped["Id"], "Delete") in seen
    assert ("Payment", paid["payment_id"], "Create") in seen
    assert ("Payment", paid["payment_id"], "Void") in seen
    assert ("Payment", again["Id"], "Delete") in seen
    assert seen.count(("Invoice", kept["Id"], "Update")) == 4  # two payments applied, one voided, one deleted


async def test_cloudevents_format(hooks: EmulatorHandle) -> None:
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver, webhook_format="cloudevents")
        conn = await connect(emulator)
        customer = await conn.customer()
        invoice = await conn.invoice(customer["Id"], 100)
        await receiver.wait_for(1)
        await conn.ok("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, {"operation": "void"})
        first, second = await receiver.wait_for(2)

    events = json.loads(first.body) + json.loads(second.body)
    assert [event["type"] for event in events] == ["qbo.customer.created.v1", "qbo.invoice.created.v1",
                                                  "qbo.invoice.voided.v1"]  # fmt: skip
    for event in events:
        assert set(event) == {"specversion", "id", "source", "type", "datacontenttype", "time", "intuitentityid",
                              "intuitaccountid", "data"}  # fmt: skip
        assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
        assert event["intuitaccountid"] == conn.realm_id and event["data"] == {}
        assert event["source"].startswith("intuit.")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", event["time"])
        match = CLOUDEVENT_ID.fullmatch(event["id"])
        assert match is not None and match.group(2) == event["intuitentityid"]
    assert second.headers["intuit-signature"] == signature(VERIFIER_TOKEN, second.body)


async def test_failed_deliveries_are_retried_on_the_scaled_schedule_with_the_same_body(
    hooks: EmulatorHandle,
) -> None:
    async with webhook_receiver(plan=[500, 503]) as receiver:
        emulator = await point(hooks, receiver, webhook_format="cloudevents")
        conn = await connect(emulator)
        await conn.customer()
        attempts = await receiver.wait_for(3)

    assert attempts[0].body == attempts[1].body == attempts[2].body  # the CloudEvents id is reused
    # 10 s and 20 s scaled by 0.01; lower bounds only, since delivery can only be later.
    assert attempts[1].at - attempts[0].at >= 0.09
    assert attempts[2].at - attempts[1].at >= 0.19
    log = await deliveries(emulator)
    assert [(entry["attempt"], entry["status"]) for entry in log] == [(1, 500), (2, 503), (3, 200)]
    assert log[0]["event_ids"] == log[2]["event_ids"]


async def test_no_answer_within_the_timeout_counts_as_a_failure(hooks: EmulatorHandle) -> None:
    async with webhook_receiver(plan=["hang"]) as receiver:
        receiver.hang_seconds = 1.0
        emulator = await point(hooks, receiver, webhook_timeout_seconds=0.3)
        conn = await connect(emulator)
        await conn.customer()
        await receiver.wait_for(2)
        log = await eventually(lambda: _two_entries(emulator))

    assert "no answer within 0.3 s" in log[0]["error"]
    assert log[1]["status"] == 200


async def _two_entries(emulator: EmulatorHandle) -> list[dict[str, Any]] | None:
    log = await deliveries(emulator)
    return log if len(log) >= 2 else None


async def test_later_events_wait_while_an_earlier_delivery_is_retried(hooks: EmulatorHandle) -> None:
    async with webhook_receiver(plan=[500, 500]) as receiver:
        emulator = await point(hooks, receiver, webhook_batch_seconds=0.05)
        conn = await connect(emulator)
        first = await conn.customer()
        await receiver.wait_for(1)
        second = await conn.customer()
        received = await receiver.wait_for(4)

    order = [entities(item)[0][1] for item in received]
    assert order == [first["Id"], first["Id"], first["Id"], second["Id"]]


async def test_only_companies_that_authorized_the_app_at_least_once_get_notifications(
    hooks: EmulatorHandle,
) -> None:
    invoice = {
        "Id": "5",
        "CustomerRef": {"value": "1"},
        "TotalAmt": 10,
        "Balance": 10,
        "Line": [],
        "LinkedTxn": [],
    }
    data = {"Customer": [{"Id": "1", "DisplayName": "C", "Active": True}], "Invoice": [invoice]}
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver)
        stranger = await emulator.create_company("Never Connected")
        await admin_ok(emulator, "POST", f"/__admin/companies/{stranger}/import", data)
        await admin_ok(
            emulator, "POST", f"/__admin/companies/{stranger}/payments", {"invoice_id": "5"}, status=201
        )
        conn = await connect(emulator)
        await admin_ok(emulator, "POST", f"/__admin/companies/{conn.realm_id}/import", data)
        await admin_ok(emulator, "POST", f"/__admin/companies/{conn.realm_id}/revoke")
        await admin_ok(
            emulator, "POST", f"/__admin/companies/{conn.realm_id}/payments", {"invoice_id": "5"}, status=201
        )
        (received,) = await receiver.wait_for(1)

    assert json.loads(received.body)["eventNotifications"][0]["realmId"] == conn.realm_id
    assert [name for name, _, _ in entities(received)] == ["Payment", "Invoice"]
    assert all(entry["realm_id"] != stranger for entry in await deliveries(emulator))


async def test_webhook_url_can_be_set_after_start(hooks: EmulatorHandle) -> None:
    emulator = await point(hooks, None, webhook_batch_seconds=0.05)
    conn = await connect(emulator)
    await conn.customer("Before The Endpoint")
    async with webhook_receiver() as receiver:
        config = await admin_ok(emulator, "PUT", "/__admin/config", {"webhook_url": receiver.url})
        later = await conn.customer("After The Endpoint")
        (received,) = await receiver.wait_for(1)

    assert config["webhook_url"] == receiver.url
    assert entities(received) == [("Customer", later["Id"], "Create")]


async def test_dropped_events_are_never_delivered_but_cdc_still_sees_them(hooks: EmulatorHandle) -> None:
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver, webhook_batch_seconds=0.05)
        conn = await connect(emulator)
        since = (await admin_ok(emulator, "GET", "/__admin/clock"))["now"]
        await admin_ok(emulator, "POST", "/__admin/faults", {"kind": "webhook_drop", "count": 1}, status=201)
        lost = await conn.customer("Lost Event")
        seen = await conn.customer("Seen Event")
        (received,) = await receiver.wait_for(1)
        cdc = (await conn.get("cdc", {"entities": "Customer", "changedSince": since})).json()

    assert entities(received) == [("Customer", seen["Id"], "Create")]
    assert [c["Id"] for c in cdc["CDCResponse"][0]["QueryResponse"][0]["Customer"]] == [
        lost["Id"],
        seen["Id"],
    ]
    assert any(entry.get("dropped") for entry in await deliveries(emulator))


async def test_duplicate_fault_delivers_the_same_post_twice(hooks: EmulatorHandle) -> None:
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver, webhook_format="cloudevents")
        await admin_ok(
            emulator, "POST", "/__admin/faults", {"kind": "webhook_duplicate", "count": 1}, status=201
        )
        conn = await connect(emulator)
        await conn.customer()
        first, second = await receiver.wait_for(2)

    assert first.body == second.body
    assert [entry["duplicate"] for entry in await deliveries(emulator)] == [False, True]


async def test_reorder_fault_delivers_the_next_events_newest_first(hooks: EmulatorHandle) -> None:
    async with webhook_receiver() as receiver:
        emulator = await point(hooks, receiver)
        conn = await connect(emulator)
        await admin_ok(
            emulator, "POST", "/__admin/faults", {"kind": "webhook_reorder", "count": 2}, status=201
        )
        older = await conn.customer()
        newer = await conn.customer()
        first, second = await receiver.wait_for(2)

    assert entities(first) == [("Customer", newer["Id"], "Create")]
    assert entities(second) == [("Customer", older["Id"], "Create")]

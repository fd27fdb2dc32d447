"""Outbound events are kept, signed the Standard Webhooks way, numbered per subject, listed and redelivered
through the API."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from models.platform_events import record_platform_event
from models.tables import utcnow
from tests.conftest import EngineFactory
from tests.engine import SERVICE_TOKEN, Engine
from tests.support import Recorder, recording_server
from workflows.messages import PlatformEvent

OLD_SECRET = "whsec_" + base64.b64encode(b"the platform's old secret, 32 b.").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"the platform's new secret, 32 b.").decode()
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


async def paid_in_two_payments(engine: Engine) -> str:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-1", number="N-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    for amount, status in (("100.00", "partially_paid"), ("125.50", "paid")):
        paid = await engine.emulator.admin.post(
            f"/__admin/companies/{realm}/payments",
            json={"invoice_id": synced["quickbooks"]["invoice_id"], "amount": amount},
        )
        paid.raise_for_status()
        await engine.wait_for_invoice(account, "inv-1", status)
    return account


def delivered(platform: Recorder, event_type: str) -> list[Any]:
    return [r for r in platform.requests if json.loads(r.body)["type"] == event_type]


async def kept_events(engine: Engine, account: str, **params: str) -> list[dict[str, Any]]:
    listed = await engine.api.get(f"/v1/accounts/{account}/events", params=params)
    assert listed.status_code == 200, listed.text
    events: list[dict[str, Any]] = listed.json()["events"]
    return events


async def test_events_are_signed_numbered_kept_and_redelivered(engine_with: EngineFactory) -> None:
    async with recording_server() as platform:
        # A rotation under way: both secrets sign, so the platform may verify with either.
        engine = await engine_with(
            platform_events_url=platform.url, platform_events_secret=f"{OLD_SECRET},{NEW_SECRET}"
        )
        account = await paid_in_two_payments(engine)
        await engine.wait_for(
            lambda: _async(delivered(platform, "invoice.paid")), lambda events: len(events) == 1
        )
        [partial] = delivered(platform, "invoice.partially_paid")
        [paid] = delivered(platform, "invoice.paid")
        for request in (partial, paid):
            for secret in (OLD_SECRET, NEW_SECRET):
                Webhook(secret).verify(request.body, request.headers)
        partial_body, paid_body = json.loads(partial.body), json.loads(paid.body)
        assert paid.headers["webhook-id"] == paid_body["id"] and paid_body["id"].startswith("evt_")
        assert paid_body["version"] == 1 and partial_body["version"] == 1
        # Each event of the invoice takes the next number: a platform that got `paid` first knows one is missing.
        assert paid_body["sequence"] == partial_body["sequence"] + 1

        def all_delivered(events: list[dict[str, Any]]) -> bool:
            return {"invoice.paid", "invoice.partially_paid"} <= {
                event["type"] for event in events if event["status"] == "delivered"
            }

        events = await engine.wait_for(
            lambda: kept_events(engine, account, invoice_id="inv-1"), all_delivered
        )
        kept = next(event for event in events if event["type"] == "invoice.paid")
        assert kept["id"] == paid_body["id"] and kept["payload"] == paid_body
        assert kept["attempts"] == 1 and kept["last_status_code"] == 200 and kept["subject"] == "invoice"
        # The connection's own events are numbered on their own.
        connected = await kept_events(engine, account, type="connection.connected")
        assert [(event["subject"], event["sequence"]) for event in connected] == [("connection", 1)]

        # The service token sees every account's; an account's own token only its own.
        across = await engine.api.get("/v1/events", params={"account_id": account}, headers=SERVICE)
        assert {event["id"] for event in across.json()["events"]} == {
            event["id"] for event in events + connected
        }
        other = await engine.create_account()
        token = (await engine.api.put(f"/v1/accounts/{other}", json={"plan": "premium"})).json()["api_token"]
        foreign = await engine.api.get(
            f"/v1/accounts/{account}/events", headers={"Authorization": f"Bearer {token}"}
        )
        assert foreign.status_code == 403
        assert (
            await engine.api.get("/v1/events", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 403
        missing = await engine.api.post(
            f"/v1/accounts/{other}/events/{kept['id']}/redeliver", headers=SERVICE
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "event_not_found"

        # A redelivery: the same id and body, a fresh signature.
        before = len(platform.requests)
        again = await engine.api.post(f"/v1/accounts/{account}/events/{kept['id']}/redeliver")
        assert again.status_code == 202, again.text
        [redelivered] = await engine.wait_for(
            lambda: _async(platform.requests[before:]), lambda requests: len(requests) == 1
        )
        assert redelivered.body == paid.body and redelivered.headers["webhook-id"] == kept["id"]
        Webhook(NEW_SECRET).verify(redelivered.body, redelivered.headers)
        after = await engine.wait_for(
            lambda: kept_events(engine, account, type="invoice.paid"),
            lambda events: events[0]["attempts"] == 2,
        )
        assert after[0]["redeliveries"] == 1 and after[0]["status"] == "delivered"


async def test_a_failing_platform_is_recorded(
    engine_with: EngineFactory,
) -> None:
    async with recording_server() as platform:
        platform.status = 503
        engine = await engine_with(platform_events_url=platform.url)
        account = await engine.create_account()
        await engine.connect(account)
        events = await engine.wait_for(
            lambda: kept_events(engine, account, type="connection.connected"),
            lambda events: bool(events) and events[0]["status"] == "failing",
        )
        assert events[0]["last_status_code"] == 503 and events[0]["last_error"] == "platform answered 503"
        assert events[0]["delivered_at"] is None


async def test_without_a_url_events_are_kept_unsent(engine_with: EngineFactory) -> None:
    quiet = await engine_with(platform_events_url=None)
    account = await quiet.create_account()
    await quiet.connect(account)
    [unsent] = await quiet.wait_for(
        lambda: kept_events(quiet, account, type="connection.connected"), lambda events: bool(events)
    )
    assert unsent["status"] == "not_sent" and unsent["attempts"] == 0
    refused = await quiet.api.post(f"/v1/accounts/{account}/events/{unsent['id']}/redeliver")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "events_not_configured"


@pytest.mark.parametrize("order", [[1, 2], [2, 1]], ids=["in order", "recorded out of order"])
async def test_a_later_chain_of_a_subject_goes_on_counting(engine: Engine, order: list[int]) -> None:
    # A connection workflow that completed (disconnected) and a new one started on reconnecting: the second
    # chain's events follow the first's, whichever of them is recorded first.
    account = await engine.create_account()
    now = utcnow()

    def event(chain: str, sequence: int) -> PlatformEvent:
        return PlatformEvent(
            event_id=f"connection:{account}/test/{chain}/{sequence}", type="connection.connected",
            account_id=account, occurred_at=now + timedelta(seconds=sequence), sequence=sequence, chain=chain,
        )  # fmt: skip

    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    async with engine.sessions() as session:
        recorded = [await record_platform_event(session, event(first, n)) for n in (1, 2)]
        recorded += [await record_platform_event(session, event(second, n)) for n in order]
        again = await record_platform_event(session, event(second, order[0]))
    by_chain = {(row.chain, row.chain_sequence): row.sequence for row in recorded}
    assert by_chain == {(first, 1): 1, (first, 2): 2, (second, 1): 3, (second, 2): 4}
    assert again.id == recorded[2].id and again.sequence == recorded[2].sequence
    assert json.loads(recorded[-1].body)["sequence"] == recorded[-1].sequence


async def _async(value: Any) -> Any:
    return value

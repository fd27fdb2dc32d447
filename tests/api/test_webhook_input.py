"""Intuit's webhook route under hostile but signed bodies: only documented answers, nothing lost, nothing echoed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from typing import Any

import httpx
import pytest
import temporalio.client
from hypothesis import HealthCheck, given, settings
from sqlmodel import col, select
from temporalio.service import RPCError, RPCStatusCode

from api.routes.webhooks import tell_events_workflows
from models.crud import ReceivedDelivery, StoredDelivery, new_event, store_deliveries, store_events
from models.domain import EventStatus
from models.tables import QuickBooksEvent, WebhookDelivery, utcnow
from qbo.webhooks import WebhookEvent
from tests.e2e.test_payments_and_webhooks import signed
from tests.engine import SERVICE_TOKEN, Engine
from tests.qbo.hypothesis_webhooks import webhook_bodies
from workflows.ids import realm_events_workflow_id

DOCUMENTED = {200, 400, 401, 413}


async def post(engine: Engine, http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post(f"{engine.api_url}/webhooks/quickbooks", content=body, headers=signed(body))


async def deliveries_of(engine: Engine, body: bytes) -> list[WebhookDelivery]:
    async with engine.sessions() as session:
        return list((await session.exec(select(WebhookDelivery).where(WebhookDelivery.body == body))).all())


async def events_of(engine: Engine, delivery: WebhookDelivery) -> list[tuple[str, str, str, str]]:
    async with engine.sessions() as session:
        rows = (
            await session.exec(
                select(QuickBooksEvent)
                .where(QuickBooksEvent.delivery_id == delivery.id)
                .order_by(col(QuickBooksEvent.id))
            )
        ).all()
    return [(row.realm_id, row.entity, row.entity_id, row.operation) for row in rows]


async def metric(engine: Engine, http: httpx.AsyncClient, sample: str) -> float:
    text = (
        await http.get(f"{engine.api_url}/metrics", headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    ).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def test_one_unreadable_event_does_not_cost_the_valid_events_beside_it(
    engine: Engine, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.stop_workers()  # what is stored is the point here, not what the events workflow does with it
    unreadable_metric = 'qbo_sync_webhook_events_total{outcome="unreadable"}'
    before = await metric(engine, http, unreadable_metric)
    classic = {
        "eventNotifications": [
            {
                "realmId": "4620816365000000101",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Payment",
                            "id": "901",
                            "operation": "Create",
                            "lastUpdated": "2025-01-16T12:00:00Z",
                        },
                        {"name": "Invoice", "id": "ada@example.com", "operation": "Update"},
                        {
                            "name": "Invoice",
                            "id": "902",
                            "operation": "Void",
                            "lastUpdated": "2025-01-16T12:00:01Z",
                        },
                    ]
                },
            }
        ]
    }
    cloud = [
        {"specversion": "1.0", "id": "u-1", "type": "qbo.payment.created.v1", "intuitaccountid": "4620816365000000101", "intuitentityid": "903"},
        {"specversion": "1.0", "id": "u-2", "type": "qbo.payment.created.v1", "intuitaccountid": "Ada Lovelace", "intuitentityid": "904"},
    ]  # fmt: skip
    for payload, readable in [
        (classic, [("Payment", "901", "Create"), ("Invoice", "902", "Void")]),
        (cloud, [("Payment", "903", "Create")]),
    ]:
        body = json.dumps(payload).encode()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="api.routes.webhooks"):
            response = await post(engine, http, body)
        # 200: Intuit must not retry the valid events forever because of the one beside them.
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": len(readable), "duplicates": 0, "unreadable": 1}
        [delivery] = await deliveries_of(engine, body)
        assert (delivery.event_count, delivery.unreadable_count) == (len(readable), 1)
        assert delivery.parse_error and (
            "entities[1]" in delivery.parse_error or "#1" in delivery.parse_error
        )
        stored = await events_of(engine, delivery)
        assert [(entity, entity_id, op) for _, entity, entity_id, op in stored] == readable
        # Operators see it: a log line, without what the event carried.
        [line] = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
        assert "ada@example.com" not in line and "Ada Lovelace" not in line
        # A redelivery stores no event twice, and is kept as Intuit sent it.
        again = await post(engine, http, body)
        assert again.json() == {"accepted": 0, "duplicates": len(readable), "unreadable": 1}
    # Each POST counts what it could not read (the redeliveries too).
    assert await metric(engine, http, unreadable_metric) == before + 4


async def test_signed_hostile_fields_are_refused_per_event_and_never_a_500(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    await engine.stop_workers()

    ids = iter(range(1_000))

    def cloud_event(**fields: Any) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": f"hostile-{uuid.uuid4().hex[:8]}-{next(ids)}",
            "type": "qbo.invoice.updated.v1",
            "intuitaccountid": "1185883450",
            "intuitentityid": "77",
            **fields,
        }

    hostile = [
        cloud_event(intuitaccountid="9" * 40),  # past the realm_id column (Postgres: a 500)
        cloud_event(intuitaccountid="118\x005883450"),  # NUL (Postgres: a 500)
        cloud_event(intuitentityid="7" * 33),
        cloud_event(type="qbo." + "invoice" * 6 + ".updated.v1"),  # an entity name past its column
        cloud_event(type="qbo.invoice." + "updated" * 4 + ".v1"),  # an operation past its column
        cloud_event(id="\ud800"),  # a lone surrogate in the dedupe key (a 500 everywhere)
        cloud_event(data={"deletedid": "x"}),
    ]
    # Kept, with the time left unread: year 1 with a positive offset is before datetime's range in UTC.
    kept = [cloud_event(time="0001-01-01T00:00:00+2359"), cloud_event(time="9999-12-31T23:59:59-2300")]
    for event in hostile:
        response = await post(engine, http, json.dumps([event]).encode())
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "malformed_payload"
    body = json.dumps(kept + hostile).encode()
    response = await post(engine, http, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "unreadable": len(hostile)}
    [delivery] = await deliveries_of(engine, body)
    async with engine.sessions() as session:
        rows = (
            await session.exec(select(QuickBooksEvent).where(QuickBooksEvent.delivery_id == delivery.id))
        ).all()
    assert [row.occurred_at for row in rows] == [None, None]


async def test_identifiers_at_their_limits_with_surrounding_whitespace_are_read_as_the_identifiers(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    # `$` matched before a trailing newline: 16 letters + "\n" passed as an operation, then overflowed its
    # VARCHAR(16) on PostgreSQL (a 500, and the valid events beside it lost), and "Invoice\n" was stored as an
    # entity nothing looks for. Intuit's values are identifiers: surrounding whitespace is not part of them.
    await engine.stop_workers()
    realm = "4620816365000000777"
    longest_name, longest_operation = "E" * 32, "O" * 16
    entities = [
        {"name": "Invoice\n", "id": "801", "operation": "Update\n"},
        {"name": f"{longest_name}\n", "id": "802", "operation": " Update"},
        {"name": "Payment", "id": "803\n", "operation": f"{longest_operation}\n"},
        {
            "name": "\tInvoice ",
            "id": " 804",
            "operation": "\r\nVoid\r\n",
            "lastUpdated": "2025-01-16T12:00:00Z\n",
        },
        # Past the limits once stripped, or whitespace inside: unreadable, and they cost only themselves.
        {"name": f"{longest_name}E\n", "id": "805", "operation": "Update"},
        {"name": "Invoice", "id": "806", "operation": f"{longest_operation}O\n"},
        {"name": "In voice", "id": "807", "operation": "Update"},
        {"name": "Invoice", "id": "8\n08", "operation": "Update"},
    ]
    classic = {"eventNotifications": [{"realmId": f"{realm}\n", "dataChangeEvent": {"entities": entities}}]}
    cloud = [
        {"specversion": "1.0", "id": "ws-1\n", "type": "qbo.invoice.updated.v1\n", "intuitaccountid": f" {realm}", "intuitentityid": "809\n"},
        {"specversion": "1.0", "id": "ws-2", "type": f"qbo.{'e' * 32}.{'o' * 16}.v1\n", "intuitaccountid": realm, "intuitentityid": "810"},
        {"specversion": "1.0", "id": "ws-3", "type": f"qbo.{'e' * 33}.updated.v1", "intuitaccountid": realm, "intuitentityid": "811"},
    ]  # fmt: skip
    for payload, readable, unreadable in [
        (
            classic,
            [
                ("Invoice", "801", "Update"),
                (longest_name, "802", "Update"),
                ("Payment", "803", longest_operation),
                ("Invoice", "804", "Void"),
            ],
            4,
        ),
        (cloud, [("Invoice", "809", "Update"), ("E" + "e" * 31, "810", "O" + "o" * 15)], 1),
    ]:
        body = json.dumps(payload).encode()
        response = await post(engine, http, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": len(readable), "duplicates": 0, "unreadable": unreadable}
        [delivery] = await deliveries_of(engine, body)
        stored = await events_of(engine, delivery)
        assert stored == [(realm, *event) for event in readable]


async def test_classic_events_without_a_time_are_taken_again_from_every_delivery(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    # Two changes of one payment, each announced without lastUpdated: the same bytes twice. The second is not a
    # duplicate of the first (it may be the change that pays the invoice); processing either again costs nothing.
    await engine.stop_workers()
    entities = [{"name": "Payment", "id": "955", "operation": "Update"}]
    body = json.dumps(
        {
            "eventNotifications": [
                {"realmId": "4620816365000000955", "dataChangeEvent": {"entities": entities * 2}}
            ]
        }
    ).encode()
    for _ in range(2):
        response = await post(engine, http, body)
        assert response.status_code == 200, response.text
        # The same line twice in one delivery is still one event.
        assert response.json() == {"accepted": 1, "duplicates": 1, "unreadable": 0}
    deliveries = await deliveries_of(engine, body)
    assert [await events_of(engine, delivery) for delivery in deliveries] == [
        [("4620816365000000955", "Payment", "955", "Update")]
    ] * 2


async def test_changes_the_engine_does_not_follow_are_kept_as_ignored_and_wake_no_workflow(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    # Every invoice the engine creates comes back as Intuit's Invoice Create (and a new client's Customer Create):
    # kept, as everything Intuit sends is, but they need no events workflow, activity or database round trip more.
    realm = "4620816365000000971"
    entities = [
        {"name": "Invoice", "id": "971", "operation": "Create", "lastUpdated": "2025-01-16T12:00:00Z"},
        {"name": "Invoice", "id": "971", "operation": "Emailed", "lastUpdated": "2025-01-16T12:00:01Z"},
        {"name": "Customer", "id": "58", "operation": "Create", "lastUpdated": "2025-01-16T12:00:00Z"},
        {"name": "Item", "id": "3", "operation": "Update", "lastUpdated": "2025-01-16T12:00:02Z"},
    ]
    body = json.dumps(
        {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}]}
    ).encode()
    response = await post(engine, http, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 4, "duplicates": 0, "unreadable": 0}
    [delivery] = await deliveries_of(engine, body)
    assert delivery.signalled_at is not None  # nothing is left to tell
    async with engine.sessions() as session:
        rows = (
            await session.exec(select(QuickBooksEvent).where(QuickBooksEvent.delivery_id == delivery.id))
        ).all()
    assert [(row.entity, row.operation, row.status) for row in rows] == [
        ("Invoice", "Create", EventStatus.IGNORED.value),
        ("Invoice", "Emailed", EventStatus.IGNORED.value),
        ("Customer", "Create", EventStatus.IGNORED.value),
        ("Item", "Update", EventStatus.IGNORED.value),
    ]
    assert all(row.processed_at is not None for row in rows)
    events_workflow = engine.temporal.get_workflow_handle(realm_events_workflow_id(realm))
    with pytest.raises(RPCError) as raised:
        await events_workflow.describe()
    assert raised.value.status == RPCStatusCode.NOT_FOUND

    # A change it follows, in the same company, is pending and wakes the company's events workflow as before.
    update = json.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": realm,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "971",
                                "operation": "Update",
                                "lastUpdated": "2025-01-16T12:01:00Z",
                            }
                        ]
                    },
                }
            ]
        }
    ).encode()
    assert (await post(engine, http, update)).json() == {"accepted": 1, "duplicates": 0, "unreadable": 0}

    async def told() -> bool:
        try:
            await events_workflow.describe()
        except RPCError:
            return False
        return True

    await engine.wait_for(told, bool)


async def test_a_burst_of_deliveries_for_one_company_tells_its_events_workflow_a_few_times_not_once_each(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    await engine.stop_workers()  # the events workflow stays open: its history shows every time it was told
    realm = "4620816365000000981"

    def delivery(payment_id: int) -> bytes:
        entity = {
            "name": "Payment",
            "id": str(payment_id),
            "operation": "Update",
            "lastUpdated": "2025-01-16T12:00:00Z",
        }
        return json.dumps(
            {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [entity]}}]}
        ).encode()

    bodies = [delivery(9810 + index) for index in range(40)]
    responses = await asyncio.gather(*(post(engine, http, body) for body in bodies))
    assert [response.json()["accepted"] for response in responses] == [1] * 40

    async def untold() -> int:
        async with engine.sessions() as session:
            rows = (
                await session.exec(
                    select(WebhookDelivery).where(
                        col(WebhookDelivery.body).in_(bodies), col(WebhookDelivery.signalled_at).is_(None)
                    )
                )
            ).all()
        return len(rows)

    await engine.wait_for(untold, lambda left: left == 0)
    history = await engine.temporal.get_workflow_handle(realm_events_workflow_id(realm)).fetch_history()
    signals = [
        event for event in history.events if event.HasField("workflow_execution_signaled_event_attributes")
    ]
    # Told in rounds: while one round calls Temporal, the deliveries arriving wait for the next.
    # (40 before: one per delivery; a loaded machine spreads the 40 requests over more rounds.)
    assert 1 <= len(signals) <= 20, len(signals)


class _CompanyUnreachable(temporalio.client.Interceptor):
    """Temporal refusing one workflow id (a company's events workflow it cannot take now): a fault, as the
    emulator injects QuickBooks' faults; the client and the server are real."""

    def __init__(self, workflow_id: str) -> None:
        self._workflow_id = workflow_id

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        workflow_id = self._workflow_id

        class Refusing(temporalio.client.OutboundInterceptor):
            async def start_workflow(self, input: temporalio.client.StartWorkflowInput) -> Any:
                if input.id == workflow_id:
                    raise RPCError("resource exhausted", RPCStatusCode.RESOURCE_EXHAUSTED, b"")
                return await super().start_workflow(input)

        return Refusing(next)


async def test_a_company_temporal_does_not_take_holds_up_only_its_own_deliveries(engine: Engine) -> None:
    await engine.stop_workers()
    refused, other = "4620816365000000991", "4620816365000000992"
    delivery_of: dict[str, int] = {}
    async with engine.sessions() as session:
        for realm in (refused, other):
            delivery = WebhookDelivery(
                body=f"a delivery for {realm}".encode(), event_count=1, unreadable_count=0
            )
            session.add(delivery)
            await session.flush()
            assert delivery.id is not None
            await store_events(
                session,
                [
                    new_event(
                        dedupe_key=f"isolation:{realm}", realm_id=realm, entity="Payment", entity_id="991",
                        operation="Update", occurred_at=None, received_at=utcnow(), source="webhook",
                        delivery_id=delivery.id,
                    )
                ],
            )  # fmt: skip
            delivery_of[realm] = delivery.id
        await session.commit()
    assert engine.app is not None
    services = engine.app.state.services
    refusing = temporalio.client.Client(
        engine.temporal.service_client,
        namespace=engine.temporal.namespace,
        data_converter=engine.temporal.data_converter,
        interceptors=[_CompanyUnreachable(realm_events_workflow_id(refused))],
    )
    told = await tell_events_workflows(
        dataclasses.replace(services, temporal=refusing), sorted(delivery_of.values())
    )
    assert told == 1
    async with engine.sessions() as session:
        untold = {
            delivery.id
            for delivery in (
                await session.exec(
                    select(WebhookDelivery).where(
                        col(WebhookDelivery.id).in_(list(delivery_of.values())),
                        col(WebhookDelivery.signalled_at).is_(None),
                    )
                )
            ).all()
        }
    # The other company's delivery is told (its events workflow runs); the refused one is left for the relay.
    assert untold == {delivery_of[refused]}
    await engine.temporal.get_workflow_handle(realm_events_workflow_id(other)).describe()
    # Once Temporal takes it again, the relay's way tells it.
    assert await tell_events_workflows(services, [delivery_of[refused]]) == 1


async def test_one_event_id_in_two_companies_is_two_events(engine: Engine, http: httpx.AsyncClient) -> None:
    await engine.stop_workers()

    def event(realm: str) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": "shared-event-id-1",
            "type": "qbo.payment.created.v1",
            "intuitaccountid": realm,
            "intuitentityid": "961",
        }

    first = json.dumps([event("4620816365000000961")]).encode()
    assert (await post(engine, http, first)).json() == {"accepted": 1, "duplicates": 0, "unreadable": 0}
    both = json.dumps([event("4620816365000000961"), event("4620816365000000962")]).encode()
    # The first company's is a redelivery; the second company's is its own event, not the first's duplicate.
    assert (await post(engine, http, both)).json() == {"accepted": 1, "duplicates": 1, "unreadable": 0}
    [delivery] = await deliveries_of(engine, both)
    assert await events_of(engine, delivery) == [("4620816365000000962", "Payment", "961", "Create")]


async def test_any_bytes_intuit_signs_are_kept_verbatim(engine: Engine, http: httpx.AsyncClient) -> None:
    for body in (b"\x00\xff\xfe{", b'{"eventNotifications": "\x00"}', b"[" * 100_000, "\ufeff[]".encode()):
        response = await post(engine, http, body)
        assert response.status_code in (200, 400), response.text
        [delivery] = await deliveries_of(engine, body)
        assert delivery.body == body


async def test_a_delivery_of_thousands_of_events_is_stored_whole(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    await engine.stop_workers()
    entities = [{"name": "Invoice", "id": str(n), "operation": "Update"} for n in range(7000)]
    body = json.dumps(
        {"eventNotifications": [{"realmId": "5550001", "dataChangeEvent": {"entities": entities}}]}
    ).encode()
    assert len(body) < engine.settings.webhook_max_body_bytes
    response = await post(engine, http, body)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 7000
    [delivery] = await deliveries_of(engine, body)
    assert len(await events_of(engine, delivery)) == 7000


async def test_signed_bodies_of_any_shape_get_only_documented_answers(engine: Engine) -> None:
    await engine.stop_workers()
    url = f"{engine.api_url}/webhooks/quickbooks"

    def fuzz() -> list[str]:
        problems: list[str] = []
        with httpx.Client(timeout=30) as client:

            @settings(
                max_examples=300,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(body=webhook_bodies)
            def check(body: bytes) -> None:
                response = client.post(url, content=body, headers=signed(body))
                if response.status_code not in DOCUMENTED or response.status_code == 401:
                    problems.append(f"{response.status_code} for {body[:200]!r}: {response.text[:300]}")
                    return
                if response.status_code == 200:
                    answer = response.json()
                    assert set(answer) == {"accepted", "duplicates", "unreadable"}, answer
                else:
                    assert response.json()["error"]["code"] in ("malformed_payload", "payload_too_large")

            check()
        return problems

    problems = await asyncio.to_thread(fuzz)
    assert problems == [], "\n".join(problems[:10])


def _payment_event(realm: str, payment_id: str, *, event_id: str) -> WebhookEvent:
    return WebhookEvent(
        realm_id=realm, entity="Payment", entity_id=payment_id, operation="Update", occurred_at=utcnow(),
        event_id=event_id, deleted_id=None, format="cloudevents",
    )  # fmt: skip


async def test_deliveries_stored_together_count_an_event_they_share_for_the_first_only(
    engine: Engine,
) -> None:
    await engine.stop_workers()
    realm = f"46208163650{uuid.uuid4().int % 10**8:08d}"
    shared = _payment_event(realm, "501", event_id=f"ev-{uuid.uuid4().hex}")
    first = ReceivedDelivery(
        body=b"first", events=[shared, _payment_event(realm, "502", event_id="ev-own-1")]
    )
    again = ReceivedDelivery(body=b"again", events=[shared])
    async with engine.sessions() as session:
        stored = await store_deliveries(session, [first, again], received_at=utcnow())
        await session.commit()
    assert [(one.accepted, one.to_tell) for one in stored] == [(2, True), (0, False)]
    async with engine.sessions() as session:
        kept = {
            delivery.id: delivery
            for delivery in (
                await session.exec(
                    select(WebhookDelivery).where(
                        col(WebhookDelivery.id).in_([one.delivery_id for one in stored])
                    )
                )
            ).all()
        }
    # Each delivery is kept verbatim; the one with nothing new is told already, the other waits for its round.
    assert [kept[one.delivery_id].body for one in stored] == [b"first", b"again"]
    assert kept[stored[0].delivery_id].signalled_at is None
    assert kept[stored[1].delivery_id].signalled_at is not None


async def test_a_delivery_the_database_refuses_costs_only_its_own_request(engine: Engine) -> None:
    if not engine.settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite keeps a NUL in text; PostgreSQL refuses it")
    await engine.stop_workers()
    assert engine.app is not None
    writer = engine.app.state.delivery_writer
    realm = f"46208163651{uuid.uuid4().int % 10**8:08d}"
    fine = [
        ReceivedDelivery(
            body=f"fine {n}".encode(), events=[_payment_event(realm, str(n), event_id=f"ok-{n}")]
        )
        for n in range(2)
    ]
    refused = ReceivedDelivery(body=b"refused", events=[_payment_event(realm, "9\x00", event_id="nul")])
    # Stored together (one transaction), which the database refuses for the NUL; then each alone.
    results = await asyncio.gather(
        writer.store(fine[0]), writer.store(refused), writer.store(fine[1]), return_exceptions=True
    )
    assert isinstance(results[1], Exception), results
    assert [
        result.accepted if isinstance(result, StoredDelivery) else result
        for result in (results[0], results[2])
    ] == [1, 1], results
    async with engine.sessions() as session:
        events = (await session.exec(select(QuickBooksEvent).where(QuickBooksEvent.realm_id == realm))).all()
    assert sorted(event.entity_id for event in events) == ["0", "1"]

"""Webhook signatures (the reference's vectors) and both payload formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from qbo.webhooks import (
    WebhookPayloadError,
    event_dedupe_key,
    parse_timestamp,
    parse_webhook,
    signature_of,
    verify_signature,
)

# Reference §2.4: Java SDK WebhooksServiceTest and python-quickbooks test_client.
JAVA_SDK_TOKEN = "b5771f19b12ddb4bcdb9f08bdc50bc63878a"
JAVA_SDK_BODY = (
    b'{"eventNotifications":[{"realmId":"1185883450","dataChangeEvent":{"entities":[{"name":"Customer","id":"1",'
    b'"operation":"Create","lastUpdated":"2015-10-05T14:42:19-0700"}]}}]}'
)
JAVA_SDK_SIGNATURE = "JC2GUwciPmRBwEO7WvrRmKqu9tGOKL8FFallocTFi8Q="
PYTHON_QB_SIGNATURE = "nfPLN16u3vMvv08ghDs+dOkLuirEVDy5wAeG/lmM2OA="

# Reference §2.2, with the Merge line that shows deletedId.
CLASSIC = {
    "eventNotifications": [
        {
            "realmId": "1185883450",
            "dataChangeEvent": {
                "entities": [
                    {
                        "name": "Customer",
                        "id": "1",
                        "operation": "Create",
                        "lastUpdated": "2015-10-05T14:42:19-0700",
                    },
                    {
                        "name": "Customer",
                        "id": "27",
                        "operation": "Merge",
                        "lastUpdated": "2015-10-05T14:42:19-0700",
                        "deletedId": "26",
                    },
                ]
            },
        }
    ]
}
# Reference §2.3 (the blog sample), plus the documented merge and no-data forms.
CLOUDEVENTS: list[dict[str, Any]] = [
    {
        "specversion": "1.0",
        "id": "88cd52aa-33b6-4351-9aa4-47572edbd068",
        "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
        "type": "qbo.account.created.v1",
        "datacontenttype": "application/json",
        "time": "2025-09-10T21:31:25.179851517Z",
        "intuitentityid": "1234",
        "intuitaccountid": "310687",
        "data": {},
    },
    {
        "specversion": "1.0",
        "id": "2d6f7a9c-0c4e-4c89-9a55-0e3f0f6f7e11-Customer-28",
        "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
        "type": "qbo.customer.merged.v1",
        "datacontenttype": "application/json",
        "time": "2025-09-10T21:32:00.000Z",
        "intuitentityid": "28",
        "intuitaccountid": "310687",
        "data": {"deletedid": "27"},
    },
    {
        "specversion": "1.0",
        "id": "5b1c0a6e-7f41-4a8e-b1e2-3c4d5e6f7a8b-SalesReceipt-9",
        "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
        "type": "qbo.salesreceipt.updated.v1",
        "time": "2025-09-10T21:33:00Z",
        "intuitentityid": "9",
        "intuitaccountid": "9341452732952867",
    },
]


def test_java_sdk_vector() -> None:
    assert signature_of(JAVA_SDK_BODY, JAVA_SDK_TOKEN) == JAVA_SDK_SIGNATURE
    assert verify_signature(JAVA_SDK_BODY, JAVA_SDK_SIGNATURE, JAVA_SDK_TOKEN)


def test_python_quickbooks_vector() -> None:
    assert verify_signature(b'{"stuff":"5"}', PYTHON_QB_SIGNATURE, "verify_me")


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "not base64 at all",
        "nfPLN16u3vMvv08ghDs+dOkLuirEVDy5wAeG/lmM2OB=",
        "ñ",
        PYTHON_QB_SIGNATURE[:-1],
    ],
)
def test_missing_or_wrong_signatures_fail(signature: str | None) -> None:
    assert not verify_signature(b'{"stuff":"5"}', signature, "verify_me")


def test_any_change_to_the_body_or_token_fails() -> None:
    assert not verify_signature(b'{"stuff": "5"}', PYTHON_QB_SIGNATURE, "verify_me")
    assert not verify_signature(b'{"stuff":"5"}', PYTHON_QB_SIGNATURE, "verify_you")
    assert not verify_signature(b'{"stuff":"5"}', PYTHON_QB_SIGNATURE, "")


def test_classic_payload() -> None:
    created, merged = parse_webhook(json.dumps(CLASSIC).encode())
    assert (created.realm_id, created.entity, created.entity_id, created.operation) == (
        "1185883450",
        "Customer",
        "1",
        "Create",
    )
    assert created.occurred_at == datetime(2015, 10, 5, 14, 42, 19, tzinfo=timezone(timedelta(hours=-7)))
    assert created.event_id is None
    assert created.deleted_id is None
    assert created.format == "classic"
    assert created.dedupe_key == event_dedupe_key(
        "classic", "1185883450", "Customer", "1", "Create", "2015-10-05T14:42:19-0700"
    )
    assert (merged.operation, merged.entity_id, merged.deleted_id) == ("Merge", "27", "26")


def test_dedupe_keys_are_injective_and_bounded() -> None:
    # Joined with ":" these two were one key.
    assert event_dedupe_key("classic", "1:Invoice", "2") != event_dedupe_key("classic", "1", "Invoice:2")
    assert event_dedupe_key("cloudevent", "x") != event_dedupe_key("classic", "x")
    assert len(event_dedupe_key("cloudevent", "e" * 10_000)) <= 255


def test_a_cloudevent_id_is_deduplicated_within_its_company_only() -> None:
    # Two companies' events with one id: the second company's must not be dropped as the first's duplicate.
    events = [{**CLOUDEVENTS[2], "intuitaccountid": realm} for realm in ("310687", "3106870", "310687")]
    first, other_company, redelivered = parse_webhook(json.dumps(events).encode())
    assert first.dedupe_key != other_company.dedupe_key
    assert first.dedupe_key == redelivered.dedupe_key
    # And a redelivery is still a duplicate.
    [again] = parse_webhook(json.dumps(events[:1]).encode())
    assert again.dedupe_key == first.dedupe_key


def test_classic_dedupe_key_is_stable_across_redeliveries() -> None:
    body = json.dumps(CLASSIC).encode()
    assert [e.dedupe_key for e in parse_webhook(body)] == [e.dedupe_key for e in parse_webhook(body)]


def test_a_classic_event_without_a_time_is_never_a_duplicate_of_another_delivery() -> None:
    # Every later change of the entity arrives looking the same: deduplicating it across deliveries dropped
    # them (a payment never seen). Within one delivery, the same line twice is one event.
    undated = {"name": "Payment", "id": "7", "operation": "Update"}
    unreadable_time = {"name": "Payment", "id": "8", "operation": "Update", "lastUpdated": "sometime"}
    body = json.dumps(
        {
            "eventNotifications": [
                {"realmId": "1", "dataChangeEvent": {"entities": [undated, undated, unreadable_time]}}
            ]
        }
    ).encode()
    first, again, other = parse_webhook(body)
    later_first, _, later_other = parse_webhook(body)
    assert first.dedupe_key == again.dedupe_key
    assert first.dedupe_key != later_first.dedupe_key
    assert other.dedupe_key != later_other.dedupe_key
    assert len({first.dedupe_key, other.dedupe_key}) == 2
    # Dated events keep their stable key (see the redelivery test above), distinct from any undated one.
    dated = parse_webhook(json.dumps(CLASSIC).encode())[0]
    assert dated.dedupe_key.startswith("classic:") and first.dedupe_key.startswith("classic-undated:")


def test_classic_payload_with_several_realms_and_entity_types() -> None:
    body = {
        "eventNotifications": [
            {
                "realmId": "111",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Payment",
                            "id": "170",
                            "operation": "Create",
                            "lastUpdated": "2025-01-16T12:00:00.123Z",
                        },
                        {
                            "name": "Invoice",
                            "id": "67",
                            "operation": "Update",
                            "lastUpdated": "2025-01-16T12:00:00.456Z",
                        },
                    ]
                },
            },
            {
                "realmId": "222",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Invoice",
                            "id": "5",
                            "operation": "Void",
                            "lastUpdated": "2025-01-16T12:01:00Z",
                        }
                    ]
                },
            },
            {"realmId": "333", "dataChangeEvent": {"entities": []}},
        ]
    }
    events = parse_webhook(json.dumps(body).encode())
    assert [(e.realm_id, e.entity, e.entity_id, e.operation) for e in events] == [
        ("111", "Payment", "170", "Create"),
        ("111", "Invoice", "67", "Update"),
        ("222", "Invoice", "5", "Void"),
    ]
    assert events[0].occurred_at == datetime(2025, 1, 16, 12, 0, 0, 123000, tzinfo=UTC)


def test_cloudevents_payload() -> None:
    account, merged, receipt = parse_webhook(json.dumps(CLOUDEVENTS).encode())
    assert (account.realm_id, account.entity, account.entity_id, account.operation) == (
        "310687",
        "Account",
        "1234",
        "Create",
    )
    assert account.event_id == "88cd52aa-33b6-4351-9aa4-47572edbd068"
    assert account.dedupe_key == event_dedupe_key(
        "cloudevent", "310687", "88cd52aa-33b6-4351-9aa4-47572edbd068"
    )
    # Nanoseconds are cut to microseconds.
    assert account.occurred_at == datetime(2025, 9, 10, 21, 31, 25, 179851, tzinfo=UTC)
    assert account.format == "cloudevents"
    assert (merged.entity, merged.operation, merged.entity_id, merged.deleted_id) == (
        "Customer",
        "Merge",
        "28",
        "27",
    )
    assert (receipt.entity, receipt.operation, receipt.realm_id) == (
        "SalesReceipt",
        "Update",
        "9341452732952867",
    )
    assert receipt.deleted_id is None


@pytest.mark.parametrize(
    ("event_type", "entity", "operation"),
    [
        ("qbo.payment.created.v1", "Payment", "Create"),
        ("qbo.invoice.updated.v1", "Invoice", "Update"),
        ("qbo.invoice.deleted.v1", "Invoice", "Delete"),
        ("qbo.invoice.voided.v1", "Invoice", "Void"),
        ("qbo.invoice.emailed.v1", "Invoice", "Emailed"),
        ("qbo.payment.voided.v1", "Payment", "Void"),
        ("qbo.creditmemo.created.v1", "CreditMemo", "Create"),
        ("qbo.billpayment.updated.v2", "BillPayment", "Update"),
        ("QBO.Customer.Merged.v1", "Customer", "Merge"),
        # Entities and verbs Intuit adds later reach the engine rather than vanish.
        ("qbo.newthing.created.v1", "Newthing", "Create"),
        ("qbo.invoice.restored.v1", "Invoice", "Restored"),
    ],
)
def test_cloudevent_types(event_type: str, entity: str, operation: str) -> None:
    item = {
        "specversion": "1.0",
        "id": "e1",
        "type": event_type,
        "intuitentityid": 42,
        "intuitaccountid": 310687,
    }
    (event,) = parse_webhook(json.dumps([item]).encode())
    assert (event.entity, event.operation, event.entity_id, event.realm_id) == (
        entity,
        operation,
        "42",
        "310687",
    )
    assert event.occurred_at is None


def test_cloudevents_deleted_id_in_either_spelling() -> None:
    item = {
        "specversion": "1.0",
        "id": "e1",
        "type": "qbo.customer.merged.v1",
        "intuitentityid": "28",
        "intuitaccountid": "1",
        "data": {"deletedId": "27"},
    }
    (event,) = parse_webhook(json.dumps([item]).encode())
    assert event.deleted_id == "27"


def test_an_empty_cloudevents_array_has_no_events() -> None:
    assert parse_webhook(b"[]") == []


def test_a_single_structured_cloudevent_object() -> None:
    (event,) = parse_webhook(json.dumps(CLOUDEVENTS[0]).encode())
    assert event.entity == "Account"


def _without(item: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != key}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'"text"', "JSON str"),
        (b"42", "JSON int"),
        (b"{}", "no eventNotifications"),
        (b'{"eventNotifications": {}}', "not an array"),
        (b'{"eventNotifications": [1]}', "not an object"),
        (b'{"eventNotifications": [{"dataChangeEvent": {"entities": []}}]}', "no realmId"),
        (b'{"eventNotifications": [{"realmId": "1"}]}', "no dataChangeEvent"),
        (
            b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {}}]}',
            "no dataChangeEvent.entities array",
        ),
        (
            b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"id": "1", "operation": "Create"}]}}]}',
            "no name",
        ),
        (
            b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Invoice", "operation": "Create"}]}}]}',
            "no id",
        ),
        (
            b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Invoice", "id": ""}]}}]}',
            "no id",
        ),
        (
            b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Invoice", "id": "3"}]}}]}',
            "no operation",
        ),
        (b"[1]", "not an object"),
        (json.dumps([_without(CLOUDEVENTS[0], "type")]).encode(), "no type"),
        (json.dumps([{**CLOUDEVENTS[0], "type": "com.example.thing"}]).encode(), "unknown type"),
        (json.dumps([_without(CLOUDEVENTS[0], "intuitaccountid")]).encode(), "no intuitaccountid"),
        (json.dumps([_without(CLOUDEVENTS[0], "intuitentityid")]).encode(), "no intuitentityid"),
        (json.dumps([_without(CLOUDEVENTS[0], "id")]).encode(), "no id"),
        (json.dumps([{**CLOUDEVENTS[0], "data": "x"}]).encode(), "data that is not an object"),
        (json.dumps([CLOUDEVENTS[0], {**CLOUDEVENTS[1], "intuitaccountid": None}]).encode(), "CloudEvent #1"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(body: bytes, complaint: str) -> None:
    with pytest.raises(WebhookPayloadError, match=complaint):
        parse_webhook(body)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-10-05T14:42:19-0700", datetime(2015, 10, 5, 14, 42, 19, tzinfo=timezone(timedelta(hours=-7)))),
        (
            "2015-10-05T14:42:19-07:00",
            datetime(2015, 10, 5, 14, 42, 19, tzinfo=timezone(timedelta(hours=-7))),
        ),
        ("2025-09-10T21:31:25.179851517Z", datetime(2025, 9, 10, 21, 31, 25, 179851, tzinfo=UTC)),
        ("2025-09-10T21:31:25.1Z", datetime(2025, 9, 10, 21, 31, 25, 100000, tzinfo=UTC)),
        (
            "2025-09-10T21:31:25+0530",
            datetime(2025, 9, 10, 21, 31, 25, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        ("2025-09-10T21:31:25", datetime(2025, 9, 10, 21, 31, 25, tzinfo=UTC)),
        ("2025-09-10T21:31Z", datetime(2025, 9, 10, 21, 31, tzinfo=UTC)),
        ("yesterday", None),
        # Not a QuickBooks Online change time (and near year 1 or 9999, not even a time once in UTC).
        ("1999-12-31T23:59:59Z", None),
        ("2100-01-01T00:00:00Z", None),
        ("0001-01-01T00:00:00+0100", None),
        ("9999-12-31T23:59:59-2300", None),
        ("\uff12\uff10\uff12\uff15-09-10T21:31:25Z", None),  # full-width digits are not digits here
        ("2025-13-10T21:31:25Z", None),
        ("2025-09-10T21:31:25+2500", None),
    ],
)
def test_timestamps(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_an_unreadable_time_keeps_the_event() -> None:
    body = json.dumps([{**CLOUDEVENTS[0], "time": "sometime"}]).encode()
    (event,) = parse_webhook(body)
    assert event.occurred_at is None
    assert event.occurred_at_raw == "sometime"

"""Property tests of webhook verification and parsing: whatever arrives, only WebhookPayloadError, and every event
returned fits what stores it."""

from __future__ import annotations

import json
import re
from datetime import UTC

from hypothesis import example, given, settings
from hypothesis import strategies as st

from qbo.webhooks import (
    WebhookEvent,
    WebhookPayloadError,
    parse_webhook,
    read_webhook,
    signature_of,
    verify_signature,
)
from tests.qbo.hypothesis_webhooks import any_text, webhook_bodies

SETTINGS = settings(max_examples=500, derandomize=True, database=None, deadline=None)
BOUNDED_ID = re.compile(r"[0-9]{1,32}")
ENTITY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}")
OPERATION = re.compile(r"[A-Za-z]{1,16}")

CLOUD_EVENT = {
    "specversion": "1.0",
    "type": "qbo.invoice.updated.v1",
    "intuitaccountid": "1",
    "intuitentityid": "2",
}
# Found by hand or by these tests on the parser before it checked what events carry.
CRASHERS = [
    b"[" * 100_000,  # RecursionError in json.loads
    json.dumps([{**CLOUD_EVENT, "id": "\ud800"}]).encode(),  # a lone surrogate in the dedupe key
    json.dumps([{**CLOUD_EVENT, "id": "e1", "time": "x\udfff"}]).encode(),
    json.dumps([{**CLOUD_EVENT, "id": "e1", "intuitaccountid": "1\x00"}]).encode(),  # NUL, stored
    json.dumps([{**CLOUD_EVENT, "id": "e1", "intuitaccountid": "9" * 40}]).encode(),  # past VARCHAR(32)
    json.dumps(
        [{**CLOUD_EVENT, "id": "e1", "time": "0001-01-01T00:00:00+2359"}]
    ).encode(),  # before year 1 in UTC
    json.dumps([{**CLOUD_EVENT, "id": "e1", "type": "qbo.invoice." + "x" * 40 + ".v1"}]).encode(),
    # Checked with `$`, which matches before a final newline, and stored unstripped: past VARCHAR(16) and (32).
    json.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "1",
                    "dataChangeEvent": {
                        "entities": [
                            {"name": "Invoice", "id": "1", "operation": "O" * 16 + "\n"},
                            {"name": "E" * 32 + "\n", "id": "2", "operation": "Update"},
                            {"name": "Invoice\n", "id": "3", "operation": "Update"},
                        ]
                    },
                }
            ]
        }
    ).encode(),
]


def assert_storable(event: WebhookEvent) -> None:
    """What the quickbooks_event columns and the events workflow take."""
    assert BOUNDED_ID.fullmatch(event.realm_id), event
    assert BOUNDED_ID.fullmatch(event.entity_id), event
    assert event.deleted_id is None or BOUNDED_ID.fullmatch(event.deleted_id), event
    assert ENTITY_NAME.fullmatch(event.entity), event
    assert OPERATION.fullmatch(event.operation), event
    if event.occurred_at is not None:
        assert event.occurred_at.tzinfo is not None
        assert 2000 <= event.occurred_at.astimezone(UTC).year < 2100, event
    assert len(event.dedupe_key) <= 255
    event.dedupe_key.encode("utf-8")


@SETTINGS
@given(body=webhook_bodies)
def test_the_strict_parser_raises_only_its_error_and_returns_only_storable_events(body: bytes) -> None:
    for crasher in CRASHERS:
        _strict(crasher)
    _strict(body)


def _strict(body: bytes) -> None:
    try:
        events = parse_webhook(body)
    except WebhookPayloadError:
        return
    for event in events:
        assert_storable(event)


@SETTINGS
@given(body=webhook_bodies)
@example(body=CRASHERS[0])
def test_the_reader_keeps_every_readable_event_and_says_what_it_could_not_read(body: bytes) -> None:
    for crasher in CRASHERS:
        _lenient(crasher)
    _lenient(body)


def _lenient(body: bytes) -> None:
    try:
        batch = read_webhook(body)
    except WebhookPayloadError:
        return
    for event in batch.events:
        assert_storable(event)
    assert all(isinstance(problem, str) and problem for problem in batch.problems)
    # The strict parser agrees: it returns the same events exactly when nothing was unreadable.
    try:
        assert parse_webhook(body) == batch.events and not batch.problems
    except WebhookPayloadError:
        assert batch.problems


def test_one_unreadable_event_leaves_the_others_readable() -> None:
    body = json.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "111",
                    "dataChangeEvent": {
                        "entities": [
                            {"name": "Payment", "id": "7", "operation": "Create"},
                            {"name": "Invoice", "id": "not-digits", "operation": "Update"},
                            {"name": "Invoice", "id": "8", "operation": "Update"},
                        ]
                    },
                },
                {"realmId": "x" * 40, "dataChangeEvent": {"entities": [{"name": "Invoice", "id": "9"}]}},
            ]
        }
    ).encode()
    batch = read_webhook(body)
    assert [(e.realm_id, e.entity, e.entity_id) for e in batch.events] == [
        ("111", "Payment", "7"),
        ("111", "Invoice", "8"),
    ]
    assert len(batch.problems) == 2
    assert "entities[1]" in batch.problems[0] and "eventNotifications[1]" in batch.problems[1]
    # Problems say where and what, never the values (a signed body is still not ours to echo).
    assert "not-digits" not in " ".join(batch.problems) and "x" * 40 not in " ".join(batch.problems)


@SETTINGS
@given(body=st.binary(max_size=300), signature=st.none() | any_text, token=any_text)
def test_signature_checks_never_crash(body: bytes, signature: str | None, token: str) -> None:
    assert verify_signature(body, signature, token) in (True, False)


@SETTINGS
@given(body=st.binary(max_size=300), token=st.text(min_size=1), flip=st.integers(min_value=0))
def test_a_genuine_signature_verifies_and_any_changed_byte_fails(body: bytes, token: str, flip: int) -> None:
    signature = signature_of(body, token)
    assert verify_signature(body, signature, token)
    if body:
        index = flip % len(body)
        changed = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
        assert not verify_signature(changed, signature, token)

"""The engine's payload converter: Temporal's Pydantic one with one adapter cache, and payloads Temporal's default
converter wrote (every history before it) read as they were written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import temporalio.converter
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import CompositePayloadConverter

import temporal_support
from models.domain import InvoiceStatus
from settings import Settings
from workflows.messages import (
    InvoiceLine,
    InvoiceRecord,
    InvoiceSnapshot,
    InvoiceWorkflowInput,
    NotificationItem,
    PlatformEvent,
    SyncInvoiceInput,
)

SNAPSHOT = InvoiceSnapshot(
    number="INV-7",
    client_name="Ada Lovelace",
    client_email="ada@example.com",
    currency="CAD",
    issue_date="2026-12-01",
    due_date="2026-12-31",
    lines=[
        InvoiceLine(description="Consulting", quantity="1.5", unit_price_cents=10000, tax_rate="13"),
        InvoiceLine(description="Travel", quantity="1", unit_price_cents=2500),
    ],
)
VALUES: list[object] = [
    InvoiceWorkflowInput(
        account_id="acct-1",
        invoice_id="inv-7",
        snapshot=SNAPSHOT,
        undelivered_events=[
            PlatformEvent(
                event_id="evt-1",
                type="invoice.paid",
                account_id="acct-1",
                occurred_at=datetime(2026, 12, 4, 18, 30, 5, 123456, tzinfo=UTC),
                invoice_id="inv-7",
                data={"amount_cents": 19450, "full": True, "note": None, "currency": "CAD"},
                sequence=3,
                chain="run-1",
            )
        ],
        version=1,
    ),
    SyncInvoiceInput(
        account_id="acct-1", invoice_id="inv-7", workflow_id="wf-1", snapshot=SNAPSHOT, record_synced=True
    ),
    InvoiceRecord(
        account_id="acct-1",
        invoice_id="inv-7",
        status=InvoiceStatus.SYNCED,
        realm_id="4620816365000000101",
        total_cents=19450,
        notification=NotificationItem(
            kind="sync_failed", message="It failed", dedupe_key="wf-1/sync_failed/0"
        ),
        resolve_notification_kinds=["sync_failed"],
    ),
]


def engine_converter() -> temporalio.converter.PayloadConverter:
    return temporal_support.data_converter(Settings(_env_file=None)).payload_converter


@pytest.mark.parametrize("value", VALUES, ids=lambda value: type(value).__name__)
def test_payloads_of_the_default_converter_read_the_same_and_the_default_converter_reads_ours(
    value: object,
) -> None:
    default = temporalio.converter.DataConverter.default.payload_converter
    ours = engine_converter()
    [written_before] = default.to_payloads([value])
    assert ours.from_payloads([written_before], [type(value)]) == [value]
    [written_now] = ours.to_payloads([value])
    assert written_now.metadata["encoding"] == b"json/plain"
    # An older worker (or an operator's tool with the default converter) still reads what is written now.
    assert default.from_payloads([written_now], [type(value)]) == [value]


def test_a_converter_made_for_each_workflow_builds_no_type_adapter_again() -> None:
    # Temporal makes a payload converter from the data converter's class for every workflow it runs.
    data_converter = temporal_support.data_converter(Settings(_env_file=None))
    [payload] = data_converter.payload_converter.to_payloads([VALUES[0]])
    data_converter.payload_converter_class().from_payloads([payload], [InvoiceWorkflowInput])
    before = temporal_support._TYPE_ADAPTERS.cache_info()
    for _ in range(3):
        converter = data_converter.payload_converter_class()
        assert isinstance(converter, CompositePayloadConverter)
        json_converter = converter.converters[b"json/plain"]
        # Pydantic's converter, with the process's cache rather than one of its own.
        assert isinstance(json_converter, PydanticJSONPlainPayloadConverter)
        assert json_converter._type_adapter is temporal_support._TYPE_ADAPTERS
        assert converter.from_payloads([payload], [InvoiceWorkflowInput]) == [VALUES[0]]
    after = temporal_support._TYPE_ADAPTERS.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 3)

"""Log lines are JSON objects carrying the ids they concern (Temporal's context, the workflow id's keys)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from logging_setup import ContextFields, bind_log_fields, configure_logging, formatter
from workflows.ids import business_keys, invoice_workflow_id


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    configure_logging("DEBUG", "json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    handler.addFilter(ContextFields())
    logger = logging.getLogger("qbo.client")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_line_logged_in_an_activity_names_its_workflow_run_account_invoice_and_company(
    lines: io.StringIO,
) -> None:
    workflow_id = invoice_workflow_id("acct:1", "inv/7")

    @activity.defn(name="sync_invoice")
    async def sync_invoice() -> None:
        bind_log_fields(realm_id="9130", account_id="acct:1")
        logging.getLogger("qbo.client").debug(
            "QuickBooks %s %s -> %s", "POST", "/v3/company/9130/invoice", 200
        )

    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(
        environment.info, workflow_id=workflow_id, workflow_run_id="run-1", activity_type="sync_invoice"
    )
    await environment.run(sync_invoice)
    [entry] = entries(lines)
    assert entry["message"] == "QuickBooks POST /v3/company/9130/invoice -> 200"
    assert {key: entry.get(key) for key in ("level", "logger", "workflow_id", "run_id", "activity_type")} == {
        "level": "DEBUG",
        "logger": "qbo.client",
        "workflow_id": workflow_id,
        "run_id": "run-1",
        "activity_type": "sync_invoice",
    }
    assert (entry["account_id"], entry["invoice_id"], entry["realm_id"]) == ("acct:1", "inv/7", "9130")
    assert str(entry["time"]).endswith("+00:00")


def test_a_line_outside_any_context_has_no_ids_and_names_stay_readable(lines: io.StringIO) -> None:
    logging.getLogger("qbo.client").info("Zoë")
    [entry] = entries(lines)
    assert entry["message"] == "Zoë" and "\\\\u" not in lines.getvalue()
    assert not {"workflow_id", "account_id", "invoice_id", "realm_id"} & entry.keys()


def test_business_keys_come_back_from_every_kind_of_workflow_id() -> None:
    assert business_keys(invoice_workflow_id("a:b", "c")) == {"account_id": "a:b", "invoice_id": "c"}
    assert business_keys("connection:acct%3A1") == {"account_id": "acct:1"}
    assert business_keys("quickbooks-events:9130") == {"realm_id": "9130"}
    assert business_keys("invoice-acct-17") == {}
    assert business_keys("invoice:only-one") == {}

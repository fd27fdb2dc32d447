"""Secrets and personal data stay out of Temporal and the logs; operators get health and metrics."""

from __future__ import annotations

import logging

import httpx
import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from models.tables import QuickBooksConnection
from tests.engine import Engine
from workflows.ids import connection_workflow_id, invoice_workflow_id
from workflows.messages import InvoiceObservation


async def stored_history(engine: Engine, workflow_id: str) -> History:
    """The workflow's history exactly as the Temporal server stores it (no codec applied)."""
    response = await engine.temporal.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=engine.temporal.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    return response.history


async def raw_history(engine: Engine, workflow_id: str) -> bytes:
    return (await stored_history(engine, workflow_id)).SerializeToString()


async def stored_tokens(engine: Engine, account: str) -> list[str]:
    async with engine.sessions() as session:
        row = await session.get(QuickBooksConnection, account)
        assert row is not None and row.access_token_enc and row.refresh_token_enc
        return [
            engine.resources.cipher.decrypt(row.access_token_enc),
            engine.resources.cipher.decrypt(row.refresh_token_enc),
        ]


async def test_tokens_and_client_details_never_reach_temporal_or_the_logs(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = await engine.create_account()
    await engine.connect(account)
    await engine.send_invoice(
        account, "inv-1", client_name="Grace Hopper", client_email="grace.hopper@example.com"
    )
    await engine.wait_for_invoice(account, "inv-1", "synced")
    tokens = await stored_tokens(engine, account)

    for workflow_id in (invoice_workflow_id(account, "inv-1"), connection_workflow_id(account)):
        history = await raw_history(engine, workflow_id)
        for secret in [*tokens, "grace.hopper@example.com", "Grace Hopper"]:
            assert secret.encode() not in history, f"{secret[:8]}... is readable in {workflow_id}'s history"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for token in tokens:
        assert token not in logged
        assert token[:20] not in logged


async def test_a_payload_not_encrypted_with_our_key_never_reaches_a_workflow(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    workflow_id = invoice_workflow_id(account, "inv-1")

    # Someone who can reach Temporal but holds no key forges "QuickBooks says it is paid", in plain JSON.
    forger = await Client.connect(
        engine.temporal.service_client.config.target_host, namespace=engine.temporal.namespace
    )
    forged = InvoiceObservation(
        realm_id=realm,
        qbo_invoice_id=synced["quickbooks"]["invoice_id"],
        sync_token=99,
        total_cents=synced["total_cents"],
        balance_cents=0,
    )
    await forger.get_workflow_handle(workflow_id).signal("quickbooks_invoice_changed", forged)

    async def refused_tasks() -> int:
        events = (await stored_history(engine, workflow_id)).events
        return sum(1 for event in events if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)

    # The worker refuses the workflow task that would deliver it; the invoice is untouched.
    await engine.wait_for(refused_tasks, lambda count: count > 0, timeout=15)
    invoice = await engine.invoice(account, "inv-1")
    assert invoice["status"] == "synced" and invoice["balance_cents"] == synced["total_cents"]


async def test_tokens_are_encrypted_at_rest(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    tokens = await stored_tokens(engine, account)
    async with engine.sessions() as session:
        row = await session.get(QuickBooksConnection, account)
        assert row is not None
        assert all(
            token not in (row.access_token_enc or "") + (row.refresh_token_enc or "") for token in tokens
        )


async def test_health_readiness_and_metrics(engine: Engine, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{engine.api_url}/healthz")).json() == {"status": "ok"}
    assert (await http.get(f"{engine.api_url}/readyz")).json() == {"status": "ready"}
    assert (await http.get(f"{engine.api_url}/metrics")).status_code == 401
    metrics = await engine.api.get("/metrics")
    assert metrics.status_code == 200
    assert "qbo_sync_quickbooks_events" in metrics.text
    assert "qbo_sync_webhook_deliveries_total" in metrics.text


async def test_oversized_webhooks_are_refused_before_reading_them(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    body = b"x" * (engine.settings.webhook_max_body_bytes + 1)
    response = await http.post(f"{engine.api_url}/webhooks/quickbooks", content=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

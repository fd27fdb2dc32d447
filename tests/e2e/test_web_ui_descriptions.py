"""What the Temporal Web UI shows of each workflow: its summary and current details, readable through the payload
codec only (they name the client, the company and QuickBooks' error words)."""

from __future__ import annotations

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest, QueryWorkflowRequest
from temporalio.client import Client

from tests.e2e.test_payments_and_webhooks import fault
from tests.engine import Engine
from workflows.ids import connection_workflow_id, invoice_workflow_id, realm_events_workflow_id

CLIENT_NAME = "Grace Brewster Hopper"
CLIENT_EMAIL = "grace.hopper@navy.example"
COMPANY_NAME = "Hopper Compilers LLC"


async def details(engine: Engine, workflow_id: str) -> str:
    """The current details as the Web UI reads them: the SDK's metadata query, decoded through the codec."""
    handle = engine.temporal.get_workflow_handle(workflow_id)
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    current: str = metadata.current_details
    return current


async def stored_without_the_codec(engine: Engine, workflow_id: str) -> bytes:
    """What anyone who can reach Temporal reads without the key: the raw description and the raw metadata query."""
    raw = await Client.connect(
        engine.temporal.service_client.config.target_host, namespace=engine.temporal.namespace
    )
    execution = WorkflowExecution(workflow_id=workflow_id)
    described = await raw.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(namespace=raw.namespace, execution=execution)
    )
    queried = await raw.workflow_service.query_workflow(
        QueryWorkflowRequest(
            namespace=raw.namespace,
            execution=execution,
            query=WorkflowQuery(query_type="__temporal_workflow_metadata"),
        )
    )
    assert described.execution_config.user_metadata.HasField("summary")
    assert queried.query_result.payloads
    return described.SerializeToString() + queried.SerializeToString()


def assert_unreadable(stored: bytes, *secrets: str) -> None:
    folded = stored.lower()
    for secret in secrets:
        assert secret.lower().encode() not in folded, f"{secret!r} is readable without the codec"


async def test_each_workflow_says_what_it_is_and_what_it_waits_for_and_only_the_codec_reads_it(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company(COMPANY_NAME)
    await engine.connect(account, realm)
    # QuickBooks' words name the client, as Intuit's validation details do.
    await fault(engine, count=1, method="POST", path_contains="/invoice", realm_id=realm, status=400,
                fault_code="6000", fault_type="ValidationFault",
                message=f"Business Validation Error: customer {CLIENT_NAME} is not valid")  # fmt: skip
    await engine.send_invoice(
        account, "inv-1", number="UI-1", client_name=CLIENT_NAME, client_email=CLIENT_EMAIL
    )
    await engine.wait_for_invoice(account, "inv-1", "failed")

    invoice_id = invoice_workflow_id(account, "inv-1")
    described = await engine.temporal.get_workflow_handle(invoice_id).describe()
    summary = f"Invoice UI-1 for {CLIENT_NAME} (account {account})"
    assert await described.static_summary() == summary
    shown = await engine.wait_for(
        lambda: details(engine, invoice_id), lambda text: "**Status:** failed" in text
    )
    assert shown.startswith(summary)
    assert "**Waiting for:** a manual retry" in shown
    assert f"customer {CLIENT_NAME} is not valid" in shown  # its last error, in words
    assert_unreadable(await stored_without_the_codec(engine, invoice_id), CLIENT_NAME, CLIENT_EMAIL)

    connection_id = connection_workflow_id(account)
    connection = await engine.temporal.get_workflow_handle(connection_id).describe()
    company = f"QuickBooks connection of account {account}: {COMPANY_NAME} (company {realm})"
    assert await connection.static_summary() == company
    shown = await details(engine, connection_id)
    assert shown.startswith(company)
    assert "**Status:** connected" in shown and "token refresh at " in shown
    assert_unreadable(await stored_without_the_codec(engine, connection_id), COMPANY_NAME)

    # A webhook for the company starts its events workflow.
    await engine.send_invoice(account, "inv-2", number="UI-2")
    synced = await engine.wait_for_invoice(account, "inv-2", "synced")
    await engine.emulator.admin.post(
        f"/__admin/companies/{realm}/payments",
        json={"invoice_id": synced["quickbooks"]["invoice_id"], "amount": "10.00"},
    )
    await engine.wait_for_invoice(account, "inv-2", "partially_paid")
    events = await engine.temporal.get_workflow_handle(realm_events_workflow_id(realm)).describe()
    assert await events.static_summary() == f"QuickBooks events of company {realm}"
    paid = await engine.wait_for(
        lambda: details(engine, invoice_workflow_id(account, "inv-2")),
        lambda text: "**Status:** partially_paid" in text,
    )
    assert "balance 215.50 of 225.50 USD" in paid
    assert "**Waiting for:** a payment in QuickBooks, a void, or a disconnect." in paid

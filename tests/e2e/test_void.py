"""Voiding on the platform voids in QuickBooks; a refusal is reported, never hidden."""

from __future__ import annotations

from models.domain import InvoiceStatus
from tests.e2e.test_payments_and_webhooks import fault, pay, synced_invoice
from tests.engine import Engine
from workflows.ids import invoice_workflow_id
from workflows.messages import InvoiceWorkflowResult


async def test_void_after_sync_voids_in_quickbooks_and_completes_the_workflow(engine: Engine) -> None:
    account, realm, qbo_id = await synced_invoice(engine)
    response = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void")
    assert response.status_code == 202
    voided = await engine.wait_for_invoice(account, "inv-1", "voided")
    assert voided["voided_at"] is not None and voided["balance_cents"] == 0

    [invoice] = [i for i in await engine.qbo_invoices(realm) if i["Id"] == qbo_id]
    assert invoice["TotalAmt"] == 0 and invoice["Balance"] == 0
    assert invoice["PrivateNote"].startswith("Voided")
    assert "Voided in QuickBooks." in await engine.timeline(account, "inv-1")
    handle = engine.temporal.get_workflow_handle(
        invoice_workflow_id(account, "inv-1"), result_type=InvoiceWorkflowResult
    )
    result = await handle.result()
    assert result.status == InvoiceStatus.VOIDED and result.qbo_invoice_id == qbo_id

    again = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void")
    assert again.status_code == 202 and again.json()["status"] == "voided"


async def test_void_of_an_invoice_never_synced_changes_nothing_in_quickbooks(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.send_invoice(account, "inv-early")
    realm = await engine.connect(account)
    response = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-early/void")
    assert response.status_code == 202 and response.json()["status"] == "voided"
    assert await engine.qbo_invoices(realm) == []


async def test_void_before_the_sync_succeeded_leaves_nothing_in_quickbooks(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    # Every create is rejected as invalid, so the sync fails at once (no retries).
    await fault(
        engine, count=1, method="POST", path_contains="/invoice", status=400, fault_code="6000",
        fault_type="ValidationFault", message="A business validation error has occurred",
    )  # fmt: skip
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for_invoice(account, "inv-1", "failed")
    await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void")
    voided = await engine.wait_for_invoice(account, "inv-1", "voided")
    assert voided["notification"] is None  # the failure notification is resolved by the void
    assert await engine.qbo_invoices(realm) == []


async def test_quickbooks_refusing_to_void_a_paid_invoice_is_reported(engine: Engine) -> None:
    account, realm, qbo_id = await synced_invoice(engine)
    await pay(engine, realm, qbo_id, "225.50")
    await engine.wait_for_invoice(account, "inv-1", "paid")

    await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void")
    refused = await engine.wait_for(
        lambda: engine.invoice(account, "inv-1"), lambda body: body["notification"] is not None
    )
    assert refused["status"] == "paid"
    assert refused["last_error"].startswith("QuickBooks refused to void invoice N-inv-1")
    assert refused["notification"]["kind"] == "void_refused"
    [invoice] = [i for i in await engine.qbo_invoices(realm) if i["Id"] == qbo_id]
    assert invoice["TotalAmt"] == 225.5

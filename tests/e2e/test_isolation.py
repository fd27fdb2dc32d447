"""One account never reaches another's invoices or QuickBooks company, whatever their ids look like."""

from __future__ import annotations

import uuid

from models.schemas import InvoiceSend
from models.tables import InvoiceSync, utcnow
from tests.e2e.test_payments_and_webhooks import pay
from tests.engine import Engine, invoice_payload
from workflows.invoice import InvoiceWorkflow
from workflows.messages import InvoiceWorkflowInput


async def test_accounts_whose_ids_share_a_dash_keep_their_invoices_apart(engine: Engine) -> None:
    # `acme` + invoice `corp-17` and `acme-corp` + invoice `17` once mapped to one workflow.
    acme = f"acme{uuid.uuid4().hex[:6]}"
    acme_corp = f"{acme}-corp"
    await engine.create_account(acme)
    await engine.create_account(acme_corp)
    acme_realm = await engine.connect(acme)
    acme_corp_realm = await engine.connect(acme_corp)

    sent = await engine.send_invoice(acme, "corp-17", number="ACME-17", client_email="ada@acme.example")
    assert sent.status_code == 202, sent.text
    sent = await engine.send_invoice(acme_corp, "17", number="CORP-17", client_email="bob@corp.example")
    assert sent.status_code == 202, sent.text
    await engine.wait_for_invoice(acme, "corp-17", "synced")
    theirs = await engine.wait_for_invoice(acme_corp, "17", "synced")
    assert theirs["quickbooks"]["realm_id"] == acme_corp_realm

    voided = await engine.api.post(f"/v1/accounts/{acme_corp}/invoices/17/void")
    assert voided.status_code == 202, voided.text
    await engine.wait_for_invoice(acme_corp, "17", "voided")

    # The other account's invoice is untouched, here and in its own QuickBooks company.
    mine = await engine.invoice(acme, "corp-17")
    assert mine["status"] == "synced"
    assert mine["quickbooks"]["realm_id"] == acme_realm
    (in_acme,) = await engine.qbo_invoices(acme_realm)
    assert in_acme["DocNumber"] == "ACME-17" and in_acme["TotalAmt"] > 0
    assert not str(in_acme.get("PrivateNote") or "").startswith("Voided")
    (in_corp,) = await engine.qbo_invoices(acme_corp_realm)
    assert in_corp["DocNumber"] == "CORP-17" and in_corp["TotalAmt"] == 0

    # A retry on one account never reaches the other's workflow either.
    retried = await engine.api.post(f"/v1/accounts/{acme_corp}/invoices/17/quickbooks/retry")
    assert retried.status_code == 409
    assert (await engine.invoice(acme, "corp-17"))["status"] == "synced"


async def test_an_invoice_whose_workflow_started_before_ids_were_injective_is_still_reached(
    engine: Engine,
) -> None:
    # Started under the old id (`invoice-{account}-{invoice}`), kept with its row by migration 0007.
    account = await engine.create_account()
    realm = await engine.connect(account)
    old_ids = {invoice_id: f"invoice-{account}-{invoice_id}" for invoice_id in ("legacy-paid", "legacy-void")}
    for invoice_id, workflow_id in old_ids.items():
        snapshot = InvoiceSend.model_validate(invoice_payload(number=f"L-{invoice_id}")).snapshot()
        async with engine.sessions() as session:
            session.add(
                InvoiceSync(
                    account_id=account, invoice_id=invoice_id, number=snapshot.number, status="pending",
                    currency="USD", total_cents=snapshot.total_cents, balance_cents=snapshot.total_cents,
                    client_name=snapshot.client_name, client_email=snapshot.client_email,
                    workflow_id=workflow_id, workflow_started_at=utcnow(),
                )
            )  # fmt: skip
            await session.commit()
        await engine.temporal.start_workflow(
            InvoiceWorkflow.run,
            InvoiceWorkflowInput(account_id=account, invoice_id=invoice_id, snapshot=snapshot),
            id=workflow_id,
            task_queue=engine.settings.temporal_task_queue,
        )
    paid = await engine.wait_for_invoice(account, "legacy-paid", "synced")
    await engine.wait_for_invoice(account, "legacy-void", "synced")

    await pay(engine, realm, paid["quickbooks"]["invoice_id"], "225.50")
    await engine.wait_for_invoice(account, "legacy-paid", "paid")
    voided = await engine.api.post(f"/v1/accounts/{account}/invoices/legacy-void/void")
    assert voided.status_code == 202, voided.text
    await engine.wait_for_invoice(account, "legacy-void", "voided")

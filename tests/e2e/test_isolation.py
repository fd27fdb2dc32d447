"""One account never reaches another's invoices or QuickBooks company, whatever their ids look like."""

from __future__ import annotations

import uuid

from tests.engine import Engine


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

"""Several accounts (experts of one firm) connected to one QuickBooks company, each with its own authorization.

Payments reach the account that synced the invoice; one account leaving (either way) leaves the others
working. Intuit documents that revoking a refresh token "disconnects the app from the company", so while
another account of ours holds the company nothing is revoked at Intuit: the leaving account's tokens are
erased here only.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_connect import outcome, revoked
from tests.e2e.test_disconnect import disconnected
from tests.e2e.test_payments_and_webhooks import pay
from tests.engine import Engine


async def synced(engine: Engine, account: str, invoice_id: str, number: str) -> dict[str, Any]:
    response = await engine.send_invoice(account, invoice_id, number=number)
    assert response.status_code == 202, response.text
    return await engine.wait_for_invoice(account, invoice_id, "synced")


def by_number(invoices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {invoice["DocNumber"]: invoice for invoice in invoices}


@pytest.mark.parametrize("mode", ["disconnect_only", "disconnect_and_void"])
async def test_two_accounts_on_one_company_get_their_own_payments_and_one_can_leave(
    engine: Engine, mode: str
) -> None:
    realm = await engine.emulator.create_company("Shared Practice LLP")
    first = await engine.create_account()
    second = await engine.create_account()
    await engine.connect(first, realm)
    await engine.connect(second, realm)
    for account in (first, second):
        status = await engine.connection_status(account)
        assert (status["realm_id"], status["company_name"]) == (realm, "Shared Practice LLP")

    first_paid = await synced(engine, first, "inv-1", "F-1")
    await synced(engine, first, "inv-2", "F-2")
    second_paid = await synced(engine, second, "inv-1", "S-1")
    await synced(engine, second, "inv-2", "S-2")

    # Each payment marks the invoice of the account that synced it, and only that one.
    await pay(engine, realm, first_paid["quickbooks"]["invoice_id"], "225.50")
    await engine.wait_for_invoice(first, "inv-1", "paid")
    assert (await engine.invoice(second, "inv-1"))["status"] == "synced"
    await pay(engine, realm, second_paid["quickbooks"]["invoice_id"], "225.50")
    await engine.wait_for_invoice(second, "inv-1", "paid")
    assert (await engine.invoice(first, "inv-2"))["status"] == "synced"

    if mode == "disconnect_only":
        # One company, one DocNumber space: the second account's invoice with the first's number is refused.
        await engine.send_invoice(second, "inv-same-number", number="F-1")
        clash = await engine.wait_for_invoice(second, "inv-same-number", "failed")
        assert "already used" in clash["last_error"]

    response = await engine.api.post(f"/v1/accounts/{first}/quickbooks/disconnect", json={"mode": mode})
    assert response.status_code == 202, response.text
    await disconnected(engine, first)

    # The other account's authorization still works, and so does the one that left (erased here only).
    assert revoked(await engine.emulator.company(realm)) == [False, False]
    qbo = by_number(await engine.qbo_invoices(realm))
    if mode == "disconnect_and_void":
        assert qbo["F-2"]["TotalAmt"] == 0  # the leaving account's own unpaid invoice was voided
        await engine.wait_for_invoice(first, "inv-2", "voided")
    else:
        assert qbo["F-2"]["TotalAmt"] == 225.5
    # The other account's invoices were not touched.
    assert qbo["S-2"]["TotalAmt"] == 225.5 and qbo["S-2"]["Balance"] == 225.5
    assert (await engine.invoice(second, "inv-2"))["status"] == "synced"

    # The account that stays keeps syncing new invoices and receiving payments.
    assert (await engine.connection_status(second))["status"] == "connected"
    later = await synced(engine, second, "inv-3", "S-3")
    await pay(engine, realm, later["quickbooks"]["invoice_id"], "100.00")
    await engine.wait_for_invoice(second, "inv-3", "partially_paid")

    # The last account to leave revokes: nobody of ours holds the company any more. (At Intuit that disconnects
    # the app from the company; the emulator revokes that one authorization.)
    response = await engine.api.post(
        f"/v1/accounts/{second}/quickbooks/disconnect", json={"mode": "disconnect_only"}
    )
    assert response.status_code == 202, response.text
    await disconnected(engine, second)
    assert revoked(await engine.emulator.company(realm)) == [False, True]


async def test_authorizing_a_company_another_account_holds_as_a_different_company_does_not_revoke(
    engine: Engine,
) -> None:
    mine = await engine.create_account()
    my_company = await engine.connect(mine)
    colleague = await engine.create_account()
    shared = await engine.connect(colleague)

    # Connected to its own company, this account authorizes the colleague's company by mistake.
    landed = outcome(await engine.authorize(mine, shared))
    assert landed["reason"] == "different_company"
    assert (await engine.connection_status(mine))["realm_id"] == my_company
    # Revoking the unwanted tokens would have disconnected the app from the colleague's company.
    assert revoked(await engine.emulator.company(shared)) == [False, False]
    await synced(engine, colleague, "inv-1", "C-1")

"""Disconnecting: "Disconnect only" stops syncing, "Disconnect & Void" voids what was synced; both revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.e2e.test_connection_health import notifications
from tests.e2e.test_payments_and_webhooks import pay
from tests.engine import Engine

INVOICES = 200


async def account_with_synced_invoices(engine: Engine, count: int) -> tuple[str, str]:
    account = await engine.create_account()
    realm = await engine.connect(account)
    gate = asyncio.Semaphore(20)

    async def send(n: int) -> None:
        async with gate:
            response = await engine.send_invoice(
                account,
                f"inv-{n}",
                number=f"D-{n}",
                client_name=f"Client {n % 7}",
                client_email=f"c{n % 7}@example.com",
            )
            assert response.status_code == 202

    await asyncio.gather(*(send(n) for n in range(count)))

    async def synced_count() -> int:
        listed = await engine.api.get(
            f"/v1/accounts/{account}/invoices", params={"status": "synced", "limit": 200}
        )
        return len(listed.json()["invoices"])

    await engine.wait_for(synced_count, lambda synced: synced == count, timeout=180)
    await engine.wait_for_webhooks_delivered()
    return account, realm


async def disconnected(engine: Engine, account: str) -> dict[str, Any]:
    status: dict[str, Any] = await engine.wait_for(
        lambda: engine.connection_status(account), lambda s: s["status"] == "disconnected", timeout=180
    )
    return status


async def test_disconnect_and_void_voids_every_synced_invoice_reports_the_refusal_and_revokes(
    engine: Engine,
) -> None:
    account, realm = await account_with_synced_invoices(engine, INVOICES)
    paid = await engine.invoice(account, "inv-7")
    await pay(engine, realm, paid["quickbooks"]["invoice_id"], "225.50")
    await engine.wait_for_invoice(account, "inv-7", "paid")
    seen = max(request["seq"] for request in await engine.qbo_requests())
    # What the Disconnect dialog tells the user beforehand: every synced invoice, the paid one included.
    assert (await engine.connection_status(account))["invoices_to_void"] == INVOICES

    response = await engine.api.post(
        f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_and_void"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "disconnecting"
    assert response.json()["disconnect"]["total"] == INVOICES
    # Sending now is recorded, never synced.
    late = await engine.send_invoice(account, "inv-late", number="D-LATE")
    assert late.json()["invoice"]["status"] == "not_synced"

    status = await disconnected(engine, account)
    assert status["invoices_to_void"] is None
    progress = status["disconnect"]
    assert (progress["mode"], progress["total"], progress["voided"], progress["failed"], progress["left"]) == (
        "disconnect_and_void", INVOICES, INVOICES - 1, 1, 0,
    )  # fmt: skip
    [failure] = progress["failures"]
    assert failure["invoice_id"] == "inv-7"
    assert "refused to void invoice D-7" in failure["reason"]
    assert progress["finished_at"] is not None

    qbo = {invoice["DocNumber"]: invoice for invoice in await engine.qbo_invoices(realm)}
    assert len(qbo) == INVOICES
    assert qbo["D-7"]["TotalAmt"] == 225.5  # paid: reported, not forced
    assert all(
        invoice["TotalAmt"] == 0 and invoice["PrivateNote"].startswith("Voided")
        for number, invoice in qbo.items()
        if number != "D-7"
    )
    # Each invoice's workflow records its outcome once told, moments after the connection's count moved.
    await engine.wait_for(
        lambda: engine.api.get(f"/v1/accounts/{account}/invoices", params={"status": "voided", "limit": 200}),
        lambda voided: len(voided.json()["invoices"]) == INVOICES - 1,
    )
    kept = await engine.wait_for_invoice(account, "inv-7", "disconnected")
    assert "refused to void" in kept["last_error"]
    # Within Intuit's limits: no throttling during the voids, and the authorization is revoked.
    assert [r for r in await engine.qbo_requests(realm, since_seq=seen) if r["status"] == 429] == []
    company = await engine.emulator.company(realm)
    assert all(auth["revoked"] for auth in company["authorizations"])


async def test_disconnect_only_stops_syncing_revokes_and_connecting_again_works(engine: Engine) -> None:
    account, realm = await account_with_synced_invoices(engine, INVOICES)
    response = await engine.api.post(
        f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_only"}
    )
    assert response.status_code == 202
    status = await disconnected(engine, account)
    assert status["action"] == "connect"
    assert status["disconnect"]["mode"] == "disconnect_only"

    qbo = await engine.qbo_invoices(realm)
    assert len(qbo) == INVOICES and all(invoice["TotalAmt"] == 225.5 for invoice in qbo)
    # Every invoice is told, and records it, before anything else is asked of the engine: connecting again below
    # then waits for its own adoption only, not behind 200 invoices' last steps (a busy machine took >30 s).
    await engine.wait_for(
        lambda: engine.api.get(
            f"/v1/accounts/{account}/invoices", params={"status": "disconnected", "limit": 200}
        ),
        lambda listed: len(listed.json()["invoices"]) == INVOICES,
        timeout=120,
    )
    company = await engine.emulator.company(realm)
    assert all(auth["revoked"] for auth in company["authorizations"])
    again = await engine.api.post(
        f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_only"}
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_connected"
    # A payment in QuickBooks no longer reaches a disconnected account's invoices.
    await pay(engine, realm, qbo[0]["Id"], "225.50")

    # Connecting again later is always possible, even to another company.
    other = await engine.connect(account)
    assert other != realm
    await engine.send_invoice(account, "inv-new", number="D-NEW")
    synced = await engine.wait_for_invoice(account, "inv-new", "synced")
    assert synced["quickbooks"]["realm_id"] == other
    assert (await engine.connection_status(account))["disconnect"] is None
    assert [n for n in await notifications(engine, account) if n["kind"].startswith("connection_")] == []


async def test_disconnect_and_void_is_refused_while_the_connection_is_expired(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    (await engine.emulator.admin.post(f"/__admin/companies/{realm}/revoke")).raise_for_status()
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for(lambda: engine.connection_status(account), lambda s: s["status"] == "expired")
    response = await engine.api.post(
        f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_and_void"}
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "reconnect_required"
    bad = await engine.api.post(f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "everything"})
    assert bad.status_code == 422
    response = await engine.api.post(
        f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_only"}
    )
    assert response.status_code == 202
    await disconnected(engine, account)
    await engine.wait_for_invoice(account, "inv-1", "disconnected")

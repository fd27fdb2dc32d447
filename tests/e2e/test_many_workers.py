"""Several worker processes, one company: together they keep Intuit's limits (10 in flight, 500 a minute)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import EngineFactory
from tests.e2e.test_payments_and_webhooks import fault
from tests.engine import Engine, worker_processes

INVOICES = 60


async def throttle_of(engine: Engine, realm_id: str) -> dict[str, Any]:
    response = await engine.emulator.admin.get("/__admin/throttle")
    response.raise_for_status()
    realm: dict[str, Any] = response.json()["realms"][realm_id]
    return realm


async def test_three_worker_processes_keep_one_company_within_ten_in_flight_and_make_no_429(
    engine_with: EngineFactory,
) -> None:
    engine = await engine_with(with_worker=False)
    with worker_processes(engine, 3):
        account = await engine.create_account()
        realm = await engine.connect(account)
        # QuickBooks takes a while to create each invoice, so calls pile up in every worker.
        await fault(
            engine, count=INVOICES, method="POST", path_contains="/invoice", status=None, latency_ms=400
        )

        sent = await asyncio.gather(
            *(
                engine.send_invoice(account, f"inv-{n}", number=f"MW-{n}", client_email="one@client.test")
                for n in range(INVOICES)
            )
        )
        assert {response.status_code for response in sent} == {202}
        for n in range(INVOICES):
            await engine.wait_for_invoice(account, f"inv-{n}", "synced", timeout=120)

        throttle = await throttle_of(engine, realm)
        refused = [entry for entry in await engine.qbo_requests(realm) if entry["status"] == 429]

    assert len(await engine.qbo_invoices(realm)) == INVOICES
    # Every worker alone keeps 10; three of them, without a shared budget, send the company up to 30 at once.
    assert throttle["max_in_flight_seen"] <= 10
    assert throttle["max_in_flight_seen"] >= 5  # the calls did pile up: the limit was what held them
    assert (throttle["refused"], len(refused)) == (0, 0)

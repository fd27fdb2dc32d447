"""Record workflow histories for the replay test (`.venv/bin/python scripts/record_histories.py`).

Runs a real lifecycle on a throwaway Temporal dev server, emulator and SQLite database: an invoice synced, partly
then fully paid, a void refused; a connection that refreshed its token; the company's events workflow. Re-record
when a deliberate, versioned change to workflow code should be covered by a new history, under a new name so the
older histories stay and keep replaying: `scripts/record_histories.py _v1` writes `invoice_paid_void_refused_v1.json`
and so on (the invoice workflow's version 1: workflows/messages.py, INVOICE_WORKFLOW_VERSION).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from models.db import migrate
from tests.engine import running_engine
from tests.support import start_dev_server, start_emulator
from workflows.ids import connection_workflow_id, invoice_workflow_id, realm_events_workflow_id
from workflows.messages import RefreshRequest, RefreshResult

DESTINATION = ROOT / "tests" / "workflows" / "histories"


async def main(suffix: str) -> None:
    env = await start_dev_server()
    emulator = await start_emulator()
    try:
        with tempfile.TemporaryDirectory() as folder:
            database = f"sqlite:///{folder}/histories.db"
            migrate(database)
            async with running_engine(
                env=env, database_url=database, emulator=emulator, task_queue="histories"
            ) as engine:
                account = await engine.create_account("acct-history")
                realm = await engine.connect(account)
                await engine.send_invoice(account, "inv-1", number="H-1")
                synced = await engine.wait_for_invoice(account, "inv-1", "synced")
                qbo_id = synced["quickbooks"]["invoice_id"]
                for amount in ("100.00", "125.50"):
                    paid = await emulator.admin.post(
                        f"/__admin/companies/{realm}/payments", json={"invoice_id": qbo_id, "amount": amount}
                    )
                    paid.raise_for_status()
                await engine.wait_for_invoice(account, "inv-1", "paid")
                await engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void")
                await engine.wait_for(
                    lambda: engine.invoice(account, "inv-1"), lambda b: b["notification"] is not None
                )
                connection = engine.temporal.get_workflow_handle(connection_workflow_id(account))
                await connection.execute_update(
                    "refresh_access_token", RefreshRequest(seen_version=10**6), result_type=RefreshResult
                )
                await asyncio.sleep(1)
                DESTINATION.mkdir(parents=True, exist_ok=True)
                for name, workflow_id in (
                    ("invoice_paid_void_refused", invoice_workflow_id(account, "inv-1")),
                    ("connection_connected_refreshed", connection_workflow_id(account)),
                    ("events_payments", realm_events_workflow_id(realm)),
                ):
                    history = await engine.temporal.get_workflow_handle(workflow_id).fetch_history()
                    (DESTINATION / f"{name}{suffix}.json").write_text(history.to_json())
                    print(f"recorded {name}: {len(history.events)} events")
    finally:
        await emulator.stop()
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else ""))

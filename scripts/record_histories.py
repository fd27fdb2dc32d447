"""Record workflow histories for the replay test (`.venv/bin/python scripts/record_histories.py`).

Runs a real lifecycle on a throwaway Temporal dev server, emulator and SQLite database: an invoice synced, partly
then fully paid, a void refused; a connection that refreshed its token; the company's events workflow. Re-record
when a deliberate, patched change to workflow code should be covered by a new history.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.testing import WorkflowEnvironment

import temporal_support
from models.db import migrate
from settings import Settings
from tests.engine import running_engine
from tests.support import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_VERIFIER_TOKEN,
    Emulator,
    free_port,
    venv_binary,
)
from workflows import search_attributes
from workflows.ids import connection_workflow_id, invoice_workflow_id, realm_events_workflow_id
from workflows.messages import RefreshRequest, RefreshResult

DESTINATION = ROOT / "tests" / "workflows" / "histories"


async def start_emulator() -> Emulator:
    import subprocess

    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", str(port), "--client-id", TEST_CLIENT_ID,
         "--client-secret", TEST_CLIENT_SECRET, "--verifier-token", TEST_VERIFIER_TOKEN],
        cwd=ROOT,
    )  # fmt: skip
    admin = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    for _ in range(200):
        try:
            if (await admin.get("/__admin/health")).status_code == 200:
                break
        except httpx.TransportError:
            await asyncio.sleep(0.05)
    return Emulator(base_url=f"http://127.0.0.1:{port}", process=process, admin=admin)


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=temporal_support.data_converter(Settings(_env_file=None)),
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=search_attributes.ALL,
    )
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
                    (DESTINATION / f"{name}.json").write_text(history.to_json())
                    print(f"recorded {name}: {len(history.events)} events")
    finally:
        emulator.process.terminate()
        await emulator.admin.aclose()
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())

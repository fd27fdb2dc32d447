"""The first sync in a company: concurrent syncs ensure its service item and each new client once, in one worker
process and across several."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from temporalio.testing import WorkflowEnvironment

from bench.harness import ACCOUNTING_PREFIX, call_kind
from tests.engine import Engine, running_engine, worker_processes
from tests.qbo_access import qbo_client_for
from tests.support import Emulator
from workflows.ids import invoice_workflow_id

CLIENTS = 3
INVOICES = 30
# The connection's own housekeeping (the change sweep, the daily check) runs on its clock, not the sync's.
HOUSEKEEPING = ("GET cdc", "GET companyinfo", "GET preferences")
# What the work needs, whoever does it: the item (look it up, find the income account, create it), each new
# client (look it up, create it) and each invoice.
NEEDED = {
    "query Item": 1,
    "query Account": 1,
    "POST item": 1,
    "query Customer": CLIENTS,
    "POST customer": CLIENTS,
    "POST invoice": INVOICES,
}


def sync_calls(requests: list[dict[str, Any]]) -> dict[str, int]:
    """The sync's Accounting API calls in an emulator request log, by kind (`query Item`, `POST customer`)."""
    kinds = Counter(
        call_kind(request)
        for request in requests
        if str(request["path"]).startswith(ACCOUNTING_PREFIX) and request.get("status") != 429
    )
    return {kind: count for kind, count in kinds.items() if not kind.startswith(HOUSEKEEPING)}


async def slow_lookups(engine: Engine, realm: str) -> None:
    """Intuit's own latency on the look-ups (the emulator answers in a millisecond): concurrent syncs overlap."""
    for path in ("/query", "/item", "/customer"):
        spec = {"count": 40, "path_contains": path, "realm_id": realm, "status": None, "latency_ms": 300}
        (await engine.emulator.admin.post("/__admin/faults", json=spec)).raise_for_status()


async def send_concurrently_to_new_clients(engine: Engine, account: str, realm: str) -> None:
    await slow_lookups(engine, realm)
    responses = await asyncio.gather(
        *(
            engine.send_invoice(
                account,
                f"inv-{index}",
                number=f"F-{index:03d}",
                client_name=f"First Client {index % CLIENTS}",
                client_email=f"first{index % CLIENTS}@example.com",
            )
            for index in range(INVOICES)
        )
    )
    assert [response.status_code for response in responses] == [202] * INVOICES
    for index in range(INVOICES):
        await engine.wait_for_invoice(account, f"inv-{index}", "synced", timeout=120)


async def test_concurrent_first_syncs_ensure_the_item_and_each_new_client_once(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)

    await send_concurrently_to_new_clients(engine, account, realm)

    assert sync_calls(await engine.qbo_requests(realm)) == NEEDED
    company = await engine.emulator.company(realm)
    assert len([item for item in company["items"] if item["Name"] == "Professional Services"]) == 1
    assert len([c for c in company["customers"] if c["DisplayName"].startswith("First Client")]) == CLIENTS
    assert len(company["invoices"]) == INVOICES


async def test_two_worker_processes_ensure_the_item_and_each_new_client_once(
    dev_env: WorkflowEnvironment, migrated_database: str, emulator: Emulator, task_queue: str
) -> None:
    async with running_engine(
        env=dev_env,
        database_url=migrated_database,
        emulator=emulator,
        task_queue=task_queue,
        with_worker=False,
    ) as engine:
        with worker_processes(engine, 2):
            account = await engine.create_account()
            realm = await engine.connect(account)

            await send_concurrently_to_new_clients(engine, account, realm)

            assert sync_calls(await engine.qbo_requests(realm)) == NEEDED
            # Both processes synced invoices, so what they did not repeat, they did not repeat across processes.
            assert len(await sync_workers(engine, account)) == 2


async def sync_workers(engine: Engine, account: str) -> set[str]:
    """The identities of the workers whose sync_invoice attempts started, from the invoices' histories."""
    identities: set[str] = set()
    for index in range(INVOICES):
        handle = engine.temporal.get_workflow_handle(invoice_workflow_id(account, f"inv-{index}"))
        history = await handle.fetch_history()
        syncs = {
            event.event_id
            for event in history.events
            if event.HasField("activity_task_scheduled_event_attributes")
            and event.activity_task_scheduled_event_attributes.activity_type.name == "sync_invoice"
        }
        identities |= {
            event.activity_task_started_event_attributes.identity
            for event in history.events
            if event.HasField("activity_task_started_event_attributes")
            and event.activity_task_started_event_attributes.scheduled_event_id in syncs
        }
    return identities


async def test_an_inactive_service_item_is_reactivated_once_by_concurrent_first_syncs(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.wait_for_catch_up_sweep(realm)
    async with qbo_client_for(engine.emulator, realm) as qbo:
        [income] = await qbo.query("SELECT * FROM Account WHERE Name = 'Services'")
        made = await qbo.create(
            "Item",
            {"Name": "Professional Services", "Type": "Service", "IncomeAccountRef": {"value": income["Id"]}},
            request_id="test-user-item",
        )
        await qbo.update(
            "Item",
            {"Id": made["Id"], "SyncToken": made["SyncToken"], "sparse": True, "Active": False},
            request_id="test-user-item-inactive",
        )
    seen = max(request["seq"] for request in await engine.qbo_requests())

    responses = await asyncio.gather(
        *(
            engine.send_invoice(
                account, f"inv-{index}", number=f"F-{index:03d}", client_email="first0@example.com"
            )
            for index in range(10)
        )
    )
    assert [response.status_code for response in responses] == [202] * 10
    for index in range(10):
        await engine.wait_for_invoice(account, f"inv-{index}", "synced")

    assert sync_calls(await engine.qbo_requests(realm, since_seq=seen)) == {
        # The active item (none), the income account, the create (a duplicate name), the item whatever its
        # state, its reactivation: once.
        "query Item": 2,
        "query Account": 1,
        "POST item": 2,
        "query Customer": 1,
        "POST customer": 1,
        "POST invoice": 10,
    }
    company = await engine.emulator.company(realm)
    [reactivated] = [item for item in company["items"] if item["Name"] == "Professional Services"]
    assert reactivated["Id"] == made["Id"] and reactivated["Active"] is True

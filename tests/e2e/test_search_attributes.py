"""The search attributes on a real Temporal: the command that registers them, and what operators find with them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

import temporal_support
from settings import Settings
from tests.e2e.test_failures import invoice_creates, server_error_on_create
from tests.engine import Engine
from tests.support import ROOT, free_port, venv_binary
from workflows import search_attributes
from workflows.ids import connection_workflow_id, invoice_workflow_id
from workflows.messages import RefreshRequest, RefreshResult


@pytest.fixture
async def bare_dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this test's own that knows none of our search attributes (as a new cluster)."""
    env = await WorkflowEnvironment.start_local(
        data_converter=temporal_support.data_converter(Settings(_env_file=None)),
        dev_server_existing_path=venv_binary("temporal"),
        ip="127.0.0.1",
        port=free_port(),
        ui=False,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def register_command(env: WorkflowEnvironment, namespace: str) -> subprocess.CompletedProcess[str]:
    """`python -m workflows.search_attributes`, configured only through the environment, as on a deploy."""
    environment = {
        **os.environ,
        "APP_ENV": "test",
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": namespace,
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workflows.search_attributes"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_register_command_adds_every_attribute_once_and_again_changes_nothing(
    bare_dev_server: WorkflowEnvironment,
) -> None:
    client = bare_dev_server.client
    assert not set(await search_attributes.registered(client)) & {key.name for key in search_attributes.ALL}

    first = await register_command(bare_dev_server, client.namespace)
    assert first.returncode == 0, first.stderr
    present = await search_attributes.registered(client)
    for key in search_attributes.ALL:
        assert present[key.name] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        assert f"{key.name} (Keyword): registered now" in first.stdout

    again = await register_command(bare_dev_server, client.namespace)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already registered") == len(search_attributes.ALL)
    assert "QboConnectionStatus (Keyword): already registered" in again.stdout


async def test_a_refused_registration_says_so_and_prints_the_temporal_cloud_command(
    bare_dev_server: WorkflowEnvironment,
) -> None:
    # A namespace this cluster does not have: the operator service refuses, as Temporal Cloud's does.
    refused = await register_command(bare_dev_server, "billing.a1b2c")
    assert refused.returncode == 1
    assert "refused to register the search attributes of namespace 'billing.a1b2c'" in refused.stderr
    expected = "tcld namespace search-attributes add --namespace billing.a1b2c " + " ".join(
        f"--search-attribute {key.name}=Keyword" for key in search_attributes.ALL
    )
    assert expected in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_an_attribute_registered_with_another_type_is_a_conflict_not_a_silent_pass(
    bare_dev_server: WorkflowEnvironment,
) -> None:
    client = bare_dev_server.client
    wrong = SearchAttributeKey.for_text("QboSyncStatus")
    await client.operator_service.add_search_attributes(
        search_attributes.add_request(client.namespace, [wrong])
    )

    conflict = await register_command(bare_dev_server, client.namespace)
    assert conflict.returncode == 2
    assert "QboSyncStatus is Text, not Keyword" in conflict.stderr


# --- What operators find ------------------------------------------------------------------------------------


async def found(engine: Engine, query: str, *, timeout: float = 15.0) -> list[str]:
    """Workflow ids the visibility query finds, once it finds any (visibility follows a moment behind)."""

    async def ids() -> list[str]:
        return [execution.id async for execution in engine.temporal.list_workflows(query)]

    listed: list[str] = await engine.wait_for(ids, bool, timeout=timeout)
    return listed


async def test_a_first_sync_that_keeps_failing_reads_syncing_while_it_is_retried(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await server_error_on_create(engine, count=4)
    await engine.send_invoice(account, "inv-1", number="SA-1")
    # The first attempt failed; its automatic retry waits for its backoff (10 s).
    await engine.wait_for(lambda: invoice_creates(engine, realm), lambda creates: creates >= 1)

    workflow_id = invoice_workflow_id(account, "inv-1")
    assert await found(engine, f'QboSyncStatus = "syncing" AND QboAccountId = "{account}"') == [workflow_id]
    assert (await engine.invoice(account, "inv-1"))["status"] == "syncing"
    assert await found(engine, 'QboInvoiceNumber = "SA-1"') == [workflow_id]

    # QuickBooks answers again: the retry syncs it, and the list follows.
    (await engine.emulator.admin.delete("/__admin/faults")).raise_for_status()
    await engine.wait_for_invoice(account, "inv-1", "synced", timeout=40)
    query = f'QboSyncStatus = "synced" AND QboAccountId = "{account}" AND QboRealmId = "{realm}"'
    assert await found(engine, query) == [workflow_id]


async def test_connection_workflows_are_found_by_their_status_after_each_transition(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    workflow_id = connection_workflow_id(account)

    def by_status(status: str) -> str:
        return f'QboConnectionStatus = "{status}" AND QboAccountId = "{account}" AND QboRealmId = "{realm}"'

    assert await found(engine, by_status("connected")) == [workflow_id]

    # Intuit revokes the authorization; the next refresh finds out.
    (await engine.emulator.admin.post(f"/__admin/companies/{realm}/revoke")).raise_for_status()
    await engine.temporal.get_workflow_handle(workflow_id).execute_update(
        "refresh_access_token", RefreshRequest(seen_version=10**6), result_type=RefreshResult
    )
    assert await found(engine, by_status("expired")) == [workflow_id]
    assert [e.id async for e in engine.temporal.list_workflows(by_status("connected"))] == []

    await engine.authorize(account, realm)
    await engine.wait_for(lambda: engine.connection_status(account), lambda s: s["status"] == "connected")
    assert await found(engine, by_status("connected")) == [workflow_id]

    response = await engine.api.post(
        f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_only"}
    )
    assert response.status_code == 202
    await engine.wait_for(lambda: engine.connection_status(account), lambda s: s["status"] == "disconnected")
    assert await found(engine, by_status("disconnected")) == [workflow_id]

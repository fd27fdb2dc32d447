"""The connection workflow's state machine, its activities replaced by fakes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from models.domain import ConnectionStatus
from tests.workflows.fakes import FakeConnectionActivities, connection_worker
from workflows import search_attributes
from workflows.connection import REQUESTED_CHECK_SPACING, ConnectionWorkflow
from workflows.messages import (
    CompanyCheckRequest,
    ConnectionDeadlines,
    ConnectionInfo,
    ConnectionProgress,
    ConnectionWorkflowInput,
    RefreshRequest,
)


def connected(account_id: str) -> ConnectionInfo:
    return ConnectionInfo(
        account_id=account_id, status=ConnectionStatus.CONNECTED, realm_id="9130000000000001", token_version=3,
        connected_at=datetime(2026, 11, 1, tzinfo=UTC),
    )  # fmt: skip


async def test_an_update_in_the_first_task_of_a_continued_run_is_served(dev_env: WorkflowEnvironment) -> None:
    # After a continue-as-new the server hands an update that the old run did not take to the new one, in its
    # first task: the validator must already know the connection the input carries.
    client = dev_env.client
    account_id = f"acct-{uuid.uuid4().hex[:8]}"
    fakes = FakeConnectionActivities(info=connected(account_id))
    far = datetime.now(UTC) + timedelta(days=1)
    progress = ConnectionProgress(
        info=fakes.info, deadlines=ConnectionDeadlines(refresh_at=far, cdc_at=far, health_at=far)
    )
    async with connection_worker(client, fakes) as task_queue:
        start = WithStartWorkflowOperation(
            ConnectionWorkflow.run,
            ConnectionWorkflowInput(account_id=account_id, progress=progress),
            id=f"connection:{account_id}",
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            task_queue=task_queue,
        )
        result = await client.execute_update_with_start_workflow(
            ConnectionWorkflow.refresh_access_token,
            RefreshRequest(seen_version=3),
            start_workflow_operation=start,
        )
        assert result.usable and result.token_version == 4
        assert [request.expected_version for request in fakes.refreshes] == [3]
        await (await start.workflow_handle()).terminate()


async def test_company_checks_asked_for_coalesce_and_one_asked_for_is_carried_across_continue_as_new(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    account_id = f"acct-{uuid.uuid4().hex[:8]}"
    fakes = FakeConnectionActivities(info=connected(account_id))
    far = datetime.now(UTC) + timedelta(days=1)
    deadlines = ConnectionDeadlines(refresh_at=far, cdc_at=far, health_at=far)
    task_queue = f"wf-{uuid.uuid4().hex[:10]}"
    # Three requests (a user pressing the button three times) reach the workflow before any worker runs it.
    handle = await client.start_workflow(
        ConnectionWorkflow.run,
        ConnectionWorkflowInput(
            account_id=account_id, progress=ConnectionProgress(info=fakes.info, deadlines=deadlines)
        ),
        id=f"connection:{account_id}",
        task_queue=task_queue,
    )
    for _ in range(3):
        await handle.signal(ConnectionWorkflow.check_company_settings, CompanyCheckRequest())
    async with connection_worker(client, fakes, task_queue):
        for _ in range(50):
            if fakes.company_checks:
                break
            await asyncio.sleep(0.1)
        # Past the spacing of requested checks: a queue of requests would have run a second check by now.
        await asyncio.sleep(REQUESTED_CHECK_SPACING.total_seconds() + 1)
        assert fakes.company_checks == 1
        await handle.terminate()

        # A check asked for just before a continue-as-new runs in the next run.
        carried = await client.start_workflow(
            ConnectionWorkflow.run,
            ConnectionWorkflowInput(
                account_id=account_id,
                progress=ConnectionProgress(info=fakes.info, deadlines=deadlines, check_requested=True),
            ),
            id=f"connection:{account_id}:carried",
            task_queue=task_queue,
        )
        for _ in range(50):
            if fakes.company_checks == 2:
                break
            await asyncio.sleep(0.1)
        assert fakes.company_checks == 2
        await carried.terminate()


async def test_an_expiring_connection_says_so_in_its_search_attributes(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    account_id = f"acct-{uuid.uuid4().hex[:8]}"
    fakes = FakeConnectionActivities(info=connected(account_id))
    now = await time_skipping_env.get_current_time()
    far = now + timedelta(days=300)
    # The authorization ends in 13 days: within the 14 days' warning.
    progress = ConnectionProgress(
        info=fakes.info,
        deadlines=ConnectionDeadlines(
            refresh_at=far, cdc_at=far, health_at=far, horizon_at=now + timedelta(days=13)
        ),
    )
    async with connection_worker(client, fakes) as task_queue:
        handle = await client.start_workflow(
            ConnectionWorkflow.run,
            ConnectionWorkflowInput(account_id=account_id, progress=progress),
            id=f"connection:{account_id}",
            task_queue=task_queue,
        )
        await time_skipping_env.sleep(timedelta(seconds=5))
        assert [record.status for record in fakes.records] == [ConnectionStatus.EXPIRING]
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(search_attributes.CONNECTION_STATUS) == "expiring"
        assert attributes.get(search_attributes.REALM_ID) == "9130000000000001"
        await handle.terminate()

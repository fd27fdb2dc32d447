"""Failure messages and stack traces are stored encrypted in Temporal's history, like payloads."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

# An exception text we did not write ourselves, the way a library's can quote the data it choked on.
LEAKY_MESSAGE = "cannot parse 'grace.hopper@example.com' for Grace Hopper"


@activity.defn
async def choke_on_data() -> None:
    raise ValueError(LEAKY_MESSAGE)


@workflow.defn(sandboxed=False)
class FailsWithData:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_activity(
                choke_on_data,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            # The workflow still reads the original message: decoding restores it.
            cause = err.cause.message if isinstance(err.cause, ApplicationError) else "?"
            raise ApplicationError(f"gave up: {cause}", non_retryable=True) from err
        return "unreachable"


async def test_failure_messages_and_stack_traces_are_encrypted_in_history(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    task_queue = f"failures-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[FailsWithData],
        activities=[choke_on_data],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(FailsWithData.run, id=task_queue, task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as excinfo:
            await handle.result()
    # Whoever holds the key (the client here, operators through the codec) reads everything.
    assert isinstance(excinfo.value.cause, ApplicationError)
    assert LEAKY_MESSAGE in excinfo.value.cause.message

    stored = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=handle.id)
        )
    )
    failures = [
        event.activity_task_failed_event_attributes.failure
        for event in stored.history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ] + [
        event.workflow_execution_failed_event_attributes.failure
        for event in stored.history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    ]
    assert len(failures) == 2
    for failure in failures:
        assert failure.message == "Encoded failure" and failure.stack_trace == ""
        assert failure.encoded_attributes.metadata["encoding"] == b"binary/encrypted"
    raw = stored.SerializeToString()
    for text in ("grace.hopper@example.com", "Grace Hopper", "raise ValueError(LEAKY_MESSAGE)"):
        assert text.encode() not in raw

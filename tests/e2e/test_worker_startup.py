"""A worker started while Temporal is away waits for it, then polls (deploys and restarts come in any order)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from tests.engine import Engine, start_worker_process
from tests.support import free_port, start_dev_server


async def test_a_worker_started_before_temporal_waits_for_it_and_then_polls(
    engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    worker = start_worker_process(engine, TEMPORAL_ADDRESS=f"127.0.0.1:{port}")
    try:
        await asyncio.sleep(4)
        assert worker.poll() is None, "the worker gave up on a Temporal that was not there yet"

        env = await start_dev_server(port=port, db_file=str(tmp_path / "temporal.db"))
        try:
            request = DescribeTaskQueueRequest(
                namespace=env.client.namespace,
                task_queue=TaskQueue(name=engine.settings.temporal_task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
            deadline = time.monotonic() + 60
            while not (await env.client.workflow_service.describe_task_queue(request)).pollers:
                assert worker.poll() is None
                assert time.monotonic() < deadline, "the worker never polled once Temporal was up"
                await asyncio.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait(timeout=40)
            await env.shutdown()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert worker.returncode == 0

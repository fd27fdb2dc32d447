"""Temporal history events per invoice lifecycle, read with `WorkflowHandle.fetch_history()`.

Three lifecycles, each for several invoices sent one at a time (no batching of workflow tasks by load):
synced only; synced then paid in QuickBooks (Intuit's webhook reaches the engine, which signals the workflow);
synced then voided through the API (an update; the workflow then completes). A history is read once the
workflow is idle: no activity or workflow task pending and no new event for a while.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from bench.harness import Stack, log
from bench.workload import send_payload
from workflows.ids import invoice_workflow_id

CASES = ("synced", "paid", "voided")
CASE_TITLES = {
    "synced": "send -> synced",
    "paid": "send -> synced -> paid (webhook)",
    "voided": "send -> synced -> voided (API), completed",
}
# A history is final once nothing is pending and no event was added for this long.
IDLE_FOR = 1.0


@dataclass
class Lifecycle:
    events: int
    by_type: dict[str, int]
    activities: list[str]


@dataclass
class HistoryResult:
    samples: int
    cases: dict[str, list[Lifecycle]] = field(default_factory=dict)


def lifecycle_of(history: WorkflowHistory) -> Lifecycle:
    by_type: Counter[str] = Counter()
    activities = []
    for event in history.events:
        by_type[EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")] += 1
        if event.HasField("activity_task_scheduled_event_attributes"):
            activities.append(event.activity_task_scheduled_event_attributes.activity_type.name)
    return Lifecycle(len(history.events), dict(by_type), activities)


def grouped(by_type: dict[str, int]) -> dict[str, int]:
    """Event counts by family: workflow tasks, activities, signals, updates, search attributes, the rest."""
    families = {
        "WORKFLOW_TASK_": "workflow task",
        "ACTIVITY_TASK_": "activity",
        "WORKFLOW_EXECUTION_SIGNALED": "signal",
        "WORKFLOW_EXECUTION_UPDATE_": "update",
        "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES": "search attributes",
        "TIMER_": "timer",
    }
    counts: Counter[str] = Counter()
    for name, count in by_type.items():
        family = next((label for prefix, label in families.items() if name.startswith(prefix)), "other")
        counts[family] += count
    return dict(counts)


async def idle_history(stack: Stack, workflow_id: str) -> WorkflowHistory:
    handle = stack.temporal.get_workflow_handle(workflow_id)
    last_length, quiet_since = -1, time.monotonic()
    deadline = time.monotonic() + 60
    while True:
        description = await handle.describe()
        raw = description.raw_description
        pending = len(raw.pending_activities) + (1 if raw.HasField("pending_workflow_task") else 0)
        if description.history_length != last_length or pending:
            last_length, quiet_since = description.history_length, time.monotonic()
        elif time.monotonic() - quiet_since >= IDLE_FOR:
            return await handle.fetch_history()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workflow_id} did not become idle")
        await asyncio.sleep(0.1)


async def one_lifecycle(stack: Stack, account_id: str, realm_id: str, case: str, index: int) -> Lifecycle:
    invoice_id = f"{case}-{index}"
    payload = send_payload(f"H-{case[0].upper()}{index:04d}", "History Client", "history@example.com")
    await stack.send_invoice(account_id, invoice_id, payload)
    synced = await stack.wait_for_invoice(account_id, invoice_id, "synced")
    workflow_id = invoice_workflow_id(account_id, invoice_id)
    if case == "paid":
        await stack.pay_in_quickbooks(realm_id, synced["quickbooks"]["invoice_id"])
        await stack.wait_for_invoice(account_id, invoice_id, "paid")
        await stack.settle()
    elif case == "voided":
        await stack.void_invoice(account_id, invoice_id)
        await stack.wait_for_invoice(account_id, invoice_id, "voided")
        await stack.temporal.get_workflow_handle(workflow_id).result()
    return lifecycle_of(await idle_history(stack, workflow_id))


async def run(stack: Stack, *, samples: int) -> HistoryResult:
    result = HistoryResult(samples)
    async with stack.running_worker():
        account_id, realm_id = await stack.connected_account("history")
        # The company's first invoice also creates the customer and the item; the lifecycles measured don't.
        await one_lifecycle(stack, account_id, realm_id, "synced", -1)
        for case in CASES:
            result.cases[case] = []
            for index in range(samples):
                lifecycle = await one_lifecycle(stack, account_id, realm_id, case, index)
                result.cases[case].append(lifecycle)
            log(f"history [{case}]: {[item.events for item in result.cases[case]]} events")
    return result


def describe(result: HistoryResult) -> dict[str, Any]:
    return {
        case: {
            "events": [item.events for item in lifecycles],
            "by_type": lifecycles[-1].by_type,
            "activities": lifecycles[-1].activities,
        }
        for case, lifecycles in result.cases.items()
    }

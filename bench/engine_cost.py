"""The engine's own cost (issue 14): throughput against a direct script at Intuit-like latency, CPU per invoice
by process, history events and Temporal actions per invoice, and how fast the API acknowledges a send.

Throughput: one Premium account connected to a new emulator company through the real OAuth flow sends N = 200
invoices over C = 20 new clients, S = 10 sends in flight, with L = 150 ms added to every Accounting API call of
the company (an emulator fault with no error: Intuit's own latency), at Intuit's limits. The clock stops when the
N-th invoice reads `synced`. CPU seconds of every process (worker, Temporal dev server, API, PostgreSQL, emulator)
from `/proc`, from the first send until the engine is idle again (Intuit's webhooks of the new invoices stored and
processed too: they are part of what a sync costs), per synced invoice. Then every invoice workflow's history:
its events, and the Temporal Cloud actions they stand for.

Baseline, in the same run and interleaved: the direct script of `first_sync` (the raw `QboClient` at Intuit's
limits) doing the same QuickBooks work on a second fresh company with the same latency.

Acknowledgment: A = 100 more invoices to the same company, 50 sends in flight (50 kept-alive connections, each
sending its next invoice once its last is answered), each send's latency as the client sees it (request written to
answer read); the syncs they start run meanwhile, as they do in production. The client speaks HTTP/1.1 by hand, as
`webhook_ack`'s does (an HTTP library's own cost per request, times 50 in one event loop, would be measured as the
API's), and the same 100 requests to `/healthz` in the same shape, just before, are the yardstick.

Lifecycle: one invoice sent, synced, paid in QuickBooks (Intuit's webhook -> `paid`): its history's actions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from bench import history
from bench.first_sync import add_latency, run_direct, wait_for_pollers
from bench.harness import (
    API_TOKEN,
    INTUIT_LIMITS,
    Stack,
    bounded,
    cpu_seconds,
    cpu_used,
    log,
    median,
    percentile,
    summarize_calls,
)
from bench.report import table
from bench.webhook_ack import closed_loop, healthy, http_request
from bench.workload import client_of, invoice_number, send_payload
from workflows.ids import invoice_workflow_id

INVOICES = 200
CLIENTS = 20
CONCURRENCY = 10
LATENCY_MS = 150
ACK_INVOICES = 100
ACK_CONCURRENCY = 50
SYNC_TIMEOUT = 600.0
PARTS = ("worker", "temporal", "api", "postgres", "emulator")

# History events that are Temporal Cloud actions (docs.temporal.io/cloud/actions): a workflow started (or continued
# as new), an activity scheduled (each retry is one more, see ActivityTaskStarted's attempt), a timer, a signal,
# an update, a search-attribute upsert, a signal or cancel sent to another workflow, a child started. Local
# activities are one action per workflow task that ran any (one marker each; markers of one task counted once).
# Heartbeats and queries are actions too but leave no event: not counted here (the sync heartbeats every few
# seconds only while a call is slow).
ACTION_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
}


def actions_of(workflow_history: WorkflowHistory) -> int:
    """Temporal Cloud actions a history stands for (see ACTION_EVENTS)."""
    actions = 0
    marker_tasks: set[int] = set()
    for event in workflow_history.events:
        if event.event_type in ACTION_EVENTS:
            actions += 1
        elif event.HasField("activity_task_started_event_attributes"):
            actions += event.activity_task_started_event_attributes.attempt
        elif (
            event.HasField("marker_recorded_event_attributes")
            and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ):
            marker_tasks.add(event.marker_recorded_event_attributes.workflow_task_completed_event_id)
    return actions + len(marker_tasks)


@dataclass
class CostRun:
    invoices: int
    seconds: float
    calls: dict[str, int]
    cpu: dict[str, float] = field(default_factory=dict)
    events: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    event_types: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.invoices / self.seconds

    @property
    def served_calls(self) -> int:
        return sum(count for kind, count in self.calls.items() if "429" not in kind)

    def cpu_ms_per_invoice(self, part: str) -> float:
        return self.cpu.get(part, 0.0) * 1000 / self.invoices

    # The engine's processes; the direct script runs in the benchmark's own process (the driver), so its own
    # CPU counts there. The engine's driver is only the load and the polling: not counted.
    direct_script: bool = False

    @property
    def cpu_ms_total(self) -> float:
        parts = (*PARTS, "driver") if self.direct_script else PARTS
        return sum(self.cpu_ms_per_invoice(part) for part in parts)


# The engine as shipped, and with the workflow sandbox on (`WORKER_WORKFLOW_SANDBOX`): what the sandbox costs.
VARIANTS = {"engine": {}, "engine, sandboxed": {"WORKER_WORKFLOW_SANDBOX": "true"}}


@dataclass
class CostResult:
    invoices: int
    clients: int
    concurrency: int
    latency_ms: int
    direct: list[CostRun] = field(default_factory=list)
    # Variant -> its runs, and the send acknowledgments (ms) of each run.
    engines: dict[str, list[CostRun]] = field(default_factory=dict)
    acks: dict[str, list[list[float]]] = field(default_factory=dict)
    # Variant -> the /healthz yardstick (ms) of each run: the same 50-in-flight shape, same client.
    ack_healthz: dict[str, list[list[float]]] = field(default_factory=dict)
    lifecycle_actions: list[int] = field(default_factory=list)
    lifecycle_events: list[int] = field(default_factory=list)
    lifecycle_types: dict[str, int] = field(default_factory=dict)


async def _history(stack: Stack, workflow_id: str) -> WorkflowHistory:
    return await stack.temporal.get_workflow_handle(workflow_id).fetch_history()


def _accepted_send(status: int, body: bytes) -> bool:
    return status == 202


async def run_engine(
    stack: Stack, result: CostResult, attempt: int, acks: list[list[float]], healthz: list[list[float]]
) -> CostRun:
    account_id, realm_id = await stack.connected_account("cost")
    after_seq = await stack.last_seq(realm_id)
    await add_latency(stack, realm_id, result.latency_ms)
    ids = [f"cost-{index:05d}" for index in range(result.invoices)]

    async def send(index: int) -> None:
        name, email = client_of(index, result.clients)
        await stack.send_invoice(
            account_id, ids[index], send_payload(invoice_number("C", index), name, email)
        )

    cpu_before = cpu_seconds(stack)
    started = time.monotonic()
    sending = asyncio.create_task(
        bounded(result.concurrency, [partial(send, index) for index in range(result.invoices)])
    )
    seconds = await stack.synced_while_sending(
        account_id, result.invoices, sending, started=started, within=SYNC_TIMEOUT
    )
    await stack.settle()
    cpu = cpu_used(cpu_before, cpu_seconds(stack))
    calls = summarize_calls(await stack.qbo_requests(realm_id, after_seq))
    histories = await bounded(
        20, [partial(_history, stack, invoice_workflow_id(account_id, invoice_id)) for invoice_id in ids]
    )
    types: Counter[str] = Counter()
    for item in histories:
        for event in item.events:
            types[EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")] += 1
    run = CostRun(
        result.invoices,
        seconds,
        calls,
        cpu,
        [len(item.events) for item in histories],
        [actions_of(item) for item in histories],
        {name: round(count / result.invoices, 2) for name, count in sorted(types.items())},
    )

    # Acknowledgment with 50 sends in flight, to the same (connected, busy-once-more) company; the /healthz yardstick
    # first, the same shape through the same client, while the syncs of the run are done and the server idle.
    yardstick = await closed_loop(
        stack.api_url,
        [http_request("GET", stack.api_url, "/healthz")] * ACK_INVOICES,
        ACK_CONCURRENCY,
        healthy,
    )
    healthz.append([latency * 1000 for latency in yardstick.latencies])
    sends = []
    for index in range(ACK_INVOICES):
        name, email = client_of(index, result.clients)
        payload = send_payload(invoice_number("A", index), name, email)
        sends.append(
            http_request(
                "POST",
                stack.api_url,
                f"/v1/accounts/{account_id}/invoices/ack-{attempt}-{index:05d}/send",
                json.dumps(payload).encode(),
                {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
            )
        )
    answered = await closed_loop(stack.api_url, sends, ACK_CONCURRENCY, _accepted_send)
    if answered.failures:
        raise RuntimeError(f"{answered.failures} of {ACK_INVOICES} sends were not accepted")
    acks.append([latency * 1000 for latency in answered.latencies])
    await stack.wait_for(
        lambda: stack.count_at_least(account_id, "synced", result.invoices + ACK_INVOICES),
        bool,
        within=SYNC_TIMEOUT,
        what="the acknowledgment's invoices to sync",
    )
    await stack.settle()
    return run


async def run(
    stack: Stack,
    *,
    repeat: int,
    invoices: int = INVOICES,
    clients: int = CLIENTS,
    concurrency: int = CONCURRENCY,
    latency_ms: int = LATENCY_MS,
) -> CostResult:
    result = CostResult(invoices, clients, concurrency, latency_ms)
    result.engines = {name: [] for name in VARIANTS}
    result.acks = {name: [] for name in VARIANTS}
    result.ack_healthz = {name: [] for name in VARIANTS}
    await stack.set_emulator_limits(INTUIT_LIMITS)
    try:
        for attempt in range(1, repeat + 1):
            await stack.settle()
            cpu_before = cpu_seconds(stack)
            direct = await run_direct(
                stack, latency_ms=latency_ms, invoices=invoices, clients=clients, concurrency=concurrency
            )
            result.direct.append(
                CostRun(
                    invoices,
                    direct.seconds,
                    direct.calls,
                    cpu_used(cpu_before, cpu_seconds(stack)),
                    direct_script=True,
                )
            )
            for name, env in VARIANTS.items():
                async with stack.running_worker(env=env) as worker:
                    await wait_for_pollers(stack, [worker])
                    await stack.settle()
                    engine = await run_engine(
                        stack, result, attempt, result.acks[name], result.ack_healthz[name]
                    )
                result.engines[name].append(engine)
                log(
                    f"cost {attempt}/{repeat}: direct {invoices / direct.seconds:.1f} inv/s; {name} "
                    f"{engine.per_second:.1f} inv/s, {engine.cpu_ms_total:.0f} ms CPU/invoice, "
                    f"{median(engine.events):.0f} events, {median(engine.actions):.0f} actions per invoice, "
                    f"send ack p50 {percentile(result.acks[name][-1], 0.5):.0f} ms"
                )
        async with stack.running_worker() as worker:
            await wait_for_pollers(stack, [worker])
            account_id, realm_id = await stack.connected_account("cost-life")
            # The company's first invoice also creates the customer and the item; the lifecycles measured don't.
            await history.one_lifecycle(stack, account_id, realm_id, "synced", -1)
            for index in range(repeat):
                await history.one_lifecycle(stack, account_id, realm_id, "paid", index)
                paid = await history.idle_history(stack, invoice_workflow_id(account_id, f"paid-{index}"))
                result.lifecycle_actions.append(actions_of(paid))
                result.lifecycle_events.append(len(paid.events))
                result.lifecycle_types = dict(
                    Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in paid.events)
                )
    finally:
        (await stack.admin.delete("/__admin/faults")).raise_for_status()
    return result


def _spread(values: list[float], digits: int = 1) -> str:
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _throttled(run: CostRun) -> int:
    return sum(count for kind, count in run.calls.items() if "429" in kind)


def markdown(result: CostResult) -> str:
    columns = [*result.engines, "direct script"]
    runs_of = {**result.engines, "direct script": result.direct}

    def row(
        label: str, figure: Callable[[CostRun], float], digits: int = 1, engines_only: bool = False
    ) -> list[str]:
        return [label] + [
            ""
            if engines_only and name == "direct script"
            else _spread([figure(run) for run in runs_of[name]], digits)
            for name in columns
        ]

    ratio_rows = [
        [f"{name} / direct script, invoices/s"]
        + [
            _spread(
                [
                    engine.per_second / direct.per_second
                    for engine, direct in zip(runs, result.direct, strict=True)
                ],
                2,
            )
            if other == name
            else ""
            for other in columns
        ]
        for name, runs in result.engines.items()
    ]

    def p50_p99(samples: dict[str, list[list[float]]], name: str) -> str:
        if not samples.get(name):
            return ""
        return (
            f"{median([percentile(values, 0.5) for values in samples[name]]):.0f} / "
            f"{median([percentile(values, 0.99) for values in samples[name]]):.0f}"
        )

    ack_row = ["send ack p50 / p99 ms, 50 in flight"] + [p50_p99(result.acks, name) for name in columns]
    healthz_row = ["/healthz p50 / p99 ms, 50 in flight (yardstick)"] + [
        p50_p99(result.ack_healthz, name) for name in columns
    ]
    lines = [
        f"### Engine cost: {result.invoices} invoices over {result.clients} clients, {result.concurrency} sends "
        f"in flight, {result.latency_ms} ms added to every QuickBooks call",
        "",
        f"Median (min-max) of {len(result.direct)} runs, the engine's variants and the direct script interleaved. "
        "CPU: each process from the first send until the engine is idle again, per synced invoice; the engine's "
        "total leaves out the driver (the load and the polling), the direct script's is mostly the driver (the "
        "script runs there). Events and actions: the invoice workflows' histories once synced (median over the "
        "run's invoices; actions as Temporal Cloud counts them, from the events).",
        "",
        table(
            ["figure", *columns],
            [
                row("invoices/s", lambda run: run.per_second),
                *ratio_rows,
                row("QuickBooks calls/invoice", lambda run: run.served_calls / run.invoices, 3),
                ["429s (each run)"]
                + ["/".join(str(_throttled(run)) for run in runs_of[name]) for name in columns],
                row("CPU ms/invoice, in all", lambda run: run.cpu_ms_total),
                *[
                    row(f"CPU ms/invoice: {part}", partial(CostRun.cpu_ms_per_invoice, part=part))
                    for part in (*PARTS, "driver")
                ],
                row("history events/synced invoice", lambda run: median(run.events), 0, engines_only=True),
                row("Temporal actions/synced invoice", lambda run: median(run.actions), 0, engines_only=True),
                ack_row,
                healthz_row,
            ],
        ),
        "",
        f"Lifecycle send -> synced -> paid (Intuit's webhook), the engine as shipped: "
        f"{median(result.lifecycle_events):.0f} events, {median(result.lifecycle_actions):.0f} actions; by type: "
        + ", ".join(f"{name} {count}" for name, count in sorted(result.lifecycle_types.items()))
        + ".",
        "",
        "History events per synced invoice by type (the engine as shipped, last run, mean): "
        + ", ".join(
            f"{name} {count}" for name, count in next(iter(result.engines.values()))[-1].event_types.items()
        )
        + ".",
    ]
    return "\n".join(lines)


def describe(result: CostResult) -> dict[str, Any]:
    def runs(items: list[CostRun]) -> list[dict[str, Any]]:
        return [
            {
                "seconds": run.seconds,
                "calls": run.calls,
                "cpu": run.cpu,
                "events": run.events,
                "actions": run.actions,
            }
            for run in items
        ]

    return {
        "invoices": result.invoices,
        "clients": result.clients,
        "concurrency": result.concurrency,
        "latency_ms": result.latency_ms,
        "direct": runs(result.direct),
        "engines": {name: runs(items) for name, items in result.engines.items()},
        "send_ack_ms": result.acks,
        "send_ack_healthz_ms": result.ack_healthz,
        "lifecycle": {"events": result.lifecycle_events, "actions": result.lifecycle_actions},
    }

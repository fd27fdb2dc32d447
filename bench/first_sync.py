"""The first sync in a fresh company: QuickBooks calls per invoice when invoices to new clients arrive together.

Engine: one Premium account connected to a new emulator company through the real OAuth flow sends N = 200
invoices over C = 20 new clients (in turn, so the first 20 each have a new client), S = 10 sends in flight,
through `POST /v1/accounts/{id}/invoices/{id}/send`, at Intuit's limits. Accounting API calls are counted in the
emulator's request log from the first send until every invoice is `synced` and the engine is idle again
(Intuit's webhooks delivered, stored events processed). Each run has as many worker processes as its variant
(`python worker.py`, as shipped), sharing the one database.

The emulator answers in a millisecond, which leaves concurrent syncs little time to overlap; Intuit takes a few
hundred. So each variant runs as is and with Intuit-like latency on every Accounting API call of the company (an
emulator fault with no error, `latency_ms`), in both the engine's company and the direct script's.

Baseline, in the same run and interleaved with the engine's runs: a direct script doing the same work with
`qbo.client.QboClient` on a second fresh company (query the item, query the income account, create the item;
query and create each client, 10 in flight; create each invoice, 10 in flight): what the work needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from bench.harness import (
    INTUIT_LIMITS,
    ROOT,
    TASK_QUEUE,
    THROTTLED,
    Child,
    Stack,
    bounded,
    log,
    median,
    start_child,
    summarize_calls,
    unique,
)
from bench.sync_throughput import create_invoices_directly
from bench.workload import client_of, invoice_number, send_payload
from workflows.connection import TOKEN_TASK_QUEUE_SUFFIX

INVOICES = 200
CLIENTS = 20
CONCURRENCY = 10
WORKER_VARIANTS = (1, 2)
LATENCY_VARIANTS_MS = (0, 250)
# Enough latency faults for every call of a run.
LATENCY_CALLS = 10_000
# The targets of issue 10: calls per invoice, and how far above the direct script the engine may be.
TARGET_CALLS_PER_INVOICE = 1.25
TARGET_OVER_DIRECT = 1.05
SYNC_TIMEOUT = 600.0


@dataclass
class FirstSyncRun:
    invoices: int
    calls: dict[str, int]
    seconds: float

    @property
    def served_calls(self) -> int:
        return sum(count for kind, count in self.calls.items() if kind != THROTTLED)

    @property
    def per_invoice(self) -> float:
        return self.served_calls / self.invoices


@dataclass
class FirstSyncResult:
    invoices: int
    clients: int
    concurrency: int
    # Latency (ms) -> the direct script's runs with it.
    direct: dict[int, list[FirstSyncRun]] = field(default_factory=dict)
    # (latency in ms, worker processes) -> the engine's runs with those.
    engine: dict[tuple[int, int], list[FirstSyncRun]] = field(default_factory=dict)

    def direct_median(self, latency_ms: int) -> float:
        return median([run.per_invoice for run in self.direct[latency_ms]])

    def engine_median(self, variant: tuple[int, int]) -> float:
        return median([run.per_invoice for run in self.engine[variant]])

    def meets_targets(self, variant: tuple[int, int]) -> bool:
        engine = self.engine_median(variant)
        return (
            engine <= TARGET_CALLS_PER_INVOICE
            and engine <= self.direct_median(variant[0]) * TARGET_OVER_DIRECT
        )


async def add_latency(stack: Stack, realm_id: str, latency_ms: int) -> None:
    """Every Accounting API call of the company answers `latency_ms` later (an emulator fault with no error)."""
    if latency_ms:
        spec = {"count": LATENCY_CALLS, "realm_id": realm_id, "status": None, "latency_ms": latency_ms}
        (await stack.admin.post("/__admin/faults", json=spec)).raise_for_status()


async def wait_for_pollers(stack: Stack, workers: list[Child], within: float = 120.0) -> None:
    """Until every worker process polls every task queue of the engine: on a loaded machine a worker takes a while
    to start, and a connection whose callback finds no worker reads `connecting`. A worker's identity is
    `pid@host` (the SDK's default)."""
    queues = [
        (TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        (TASK_QUEUE + TOKEN_TASK_QUEUE_SUFFIX, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ]
    expected = {str(child.process.pid) for child in workers}
    deadline = time.monotonic() + within
    while True:
        missing: set[str] = set()
        for name, kind in queues:
            described = await stack.temporal.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=stack.temporal.namespace, task_queue=TaskQueue(name=name), task_queue_type=kind
                )
            )
            missing |= expected - {poller.identity.split("@", 1)[0] for poller in described.pollers}
        if not missing:
            return
        stack.check_alive()
        for child in workers:
            child.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker processes {sorted(missing)} were not polling within {within:.0f} s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def more_workers(stack: Stack, count: int) -> AsyncIterator[list[Child]]:
    """`count` more worker processes beside the stack's own, as shipped (`python worker.py`)."""
    children = [
        start_child(
            f"worker-{index + 2}",
            [sys.executable, str(ROOT / "worker.py")],
            stack.workdir,
            stack.engine_env(),
        )
        for index in range(count)
    ]
    try:
        yield children
    finally:
        for child in children:
            await asyncio.to_thread(child.stop)


async def run_engine(
    stack: Stack,
    extra_workers: list[Child],
    *,
    latency_ms: int,
    invoices: int,
    clients: int,
    concurrency: int,
) -> FirstSyncRun:
    account_id, realm_id = await stack.connected_account("first")
    after_seq = await stack.last_seq(realm_id)
    await add_latency(stack, realm_id, latency_ms)

    async def send(index: int) -> None:
        name, email = client_of(index, clients)
        await stack.send_invoice(
            account_id, f"first-{index:05d}", send_payload(invoice_number("F", index), name, email)
        )

    started = time.monotonic()
    sending = asyncio.create_task(bounded(concurrency, [partial(send, index) for index in range(invoices)]))
    seconds = await stack.synced_while_sending(
        account_id, invoices, sending, started=started, within=SYNC_TIMEOUT, extra=extra_workers
    )
    await stack.settle()
    company = await stack.company(realm_id)
    if len(company["invoices"]) != invoices:
        raise RuntimeError(f"QuickBooks holds {len(company['invoices'])} invoices, not {invoices}")
    return FirstSyncRun(invoices, summarize_calls(await stack.qbo_requests(realm_id, after_seq)), seconds)


async def run_direct(
    stack: Stack, *, latency_ms: int, invoices: int, clients: int, concurrency: int
) -> FirstSyncRun:
    realm_id = await stack.create_company(unique("Bench first direct"))
    async with stack.raw_client(realm_id, INTUIT_LIMITS) as client:
        after_seq = await stack.last_seq(realm_id)
        await add_latency(stack, realm_id, latency_ms)
        started = time.monotonic()
        await create_invoices_directly(client, invoices, clients, concurrency)
        seconds = time.monotonic() - started
    return FirstSyncRun(invoices, summarize_calls(await stack.qbo_requests(realm_id, after_seq)), seconds)


async def run(
    stack: Stack,
    *,
    repeat: int,
    invoices: int = INVOICES,
    clients: int = CLIENTS,
    concurrency: int = CONCURRENCY,
    workers: tuple[int, ...] = WORKER_VARIANTS,
    latencies_ms: tuple[int, ...] = LATENCY_VARIANTS_MS,
) -> FirstSyncResult:
    result = FirstSyncResult(
        invoices,
        clients,
        concurrency,
        direct={latency: [] for latency in latencies_ms},
        engine={(latency, count): [] for latency in latencies_ms for count in workers},
    )
    sizes = {"invoices": invoices, "clients": clients, "concurrency": concurrency}
    await stack.set_emulator_limits(INTUIT_LIMITS)
    try:
        for attempt in range(1, repeat + 1):
            for latency in latencies_ms:
                await stack.settle()
                direct = await run_direct(stack, latency_ms=latency, **sizes)
                result.direct[latency].append(direct)
                log(
                    f"first sync {attempt}/{repeat}, {latency} ms: direct script {direct.per_invoice:.3f} "
                    f"calls/invoice ({direct.seconds:.1f} s)"
                )
                for count in workers:
                    async with stack.running_worker() as worker, more_workers(stack, count - 1) as extra:
                        await wait_for_pollers(stack, [worker, *extra])
                        await stack.settle()
                        engine = await run_engine(stack, extra, latency_ms=latency, **sizes)
                    result.engine[(latency, count)].append(engine)
                    log(
                        f"first sync {attempt}/{repeat}, {latency} ms: engine with {count} worker(s) "
                        f"{engine.per_invoice:.3f} calls/invoice ({engine.seconds:.1f} s)"
                    )
    finally:
        (await stack.admin.delete("/__admin/faults")).raise_for_status()
    return result


def describe(result: FirstSyncResult) -> dict[str, Any]:
    """The figures as plain data (for --json)."""
    return {
        "invoices": result.invoices,
        "clients": result.clients,
        "concurrency": result.concurrency,
        "direct": {
            f"{latency} ms": {
                "calls": [run.calls for run in runs],
                "calls_per_invoice": result.direct_median(latency),
                "seconds": [run.seconds for run in runs],
            }
            for latency, runs in result.direct.items()
        },
        "engine": {
            f"{latency} ms, {count} workers": {
                "calls": [run.calls for run in runs],
                "calls_per_invoice": result.engine_median((latency, count)),
                "seconds": [run.seconds for run in runs],
            }
            for (latency, count), runs in result.engine.items()
        },
    }

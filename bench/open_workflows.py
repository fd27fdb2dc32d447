"""10,000 open invoice workflows waiting for payment: the worker's memory as they accumulate, and how long a payment
takes to read `paid` with that many open, against the same with few open, in the same run.

One Premium account connected to a new emulator company through the real OAuth flow sends N = 10,000 invoices over
50 clients, 50 sends in flight, in steps (100, 1,000, 2,500, 5,000, 7,500, 10,000). Intuit's limits would make
that 20 minutes of waiting that measures nothing here, so the emulator's limits and the engine's limiter are raised
(`bench.limited_worker`, as the `unthrottled` sync variant), and Intuit's webhooks leave at once (the emulator's
batching window 0 s; Intuit's own delay is not the engine's).

- Memory: once a step's invoices all read `synced` and the engine is idle, the worker process's resident set
  (`VmRSS` of /proc) and the workflows open in Temporal (visibility count).
- Payment: with 100 open (the baseline) and with N open, P invoices spread evenly over the open ones (so most are
  out of the worker's workflow cache and replay their history first) are paid in full in QuickBooks one
  at a time (admin API: the payment, then Intuit's Payment and Invoice webhooks); the time from the payment being
  recorded until the API reads the invoice `paid` (polled every 20 ms).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.harness import RAISED_LIMITS, Stack, bounded, log, median, percentile
from bench.report import table
from bench.workload import client_of, invoice_number, send_payload
from worker import build_workers

STEPS = (100, 1_000, 2_500, 5_000, 7_500, 10_000)
CLIENTS = 50
CONCURRENCY = 50
PAYMENTS = 20
SYNC_TIMEOUT = 1_800.0
PAID_POLL_SECONDS = 0.02


def steps_up_to(invoices: int) -> tuple[int, ...]:
    """The steps of STEPS scaled to `invoices` open at the end (100 first, the baseline)."""
    scaled = {round(invoices * step / STEPS[-1]) for step in STEPS[1:]}
    return tuple(sorted({min(STEPS[0], invoices), *(step for step in scaled if step > STEPS[0])}))


@dataclass
class Step:
    open_workflows: int
    synced: int
    rss_mib: float
    seconds: float


@dataclass
class OpenWorkflowsResult:
    steps: list[Step] = field(default_factory=list)
    # Open invoices when the payments were made -> seconds from each payment to `paid`.
    payments: dict[int, list[float]] = field(default_factory=dict)
    cache_size: int = field(
        default_factory=lambda: int(
            inspect.signature(build_workers).parameters["max_cached_workflows"].default
        )
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def open_invoice_workflows(stack: Stack) -> int:
    count = await stack.temporal.count_workflows(
        "WorkflowType = 'InvoiceWorkflow' AND ExecutionStatus = 'Running'"
    )
    return count.count


async def time_to_paid(stack: Stack, account_id: str, realm_id: str, invoice_id: str) -> float:
    invoice = await stack.invoice(account_id, invoice_id)
    qbo_invoice_id = invoice["quickbooks"]["invoice_id"]
    started = time.monotonic()
    await stack.pay_in_quickbooks(realm_id, qbo_invoice_id)
    await stack.wait_for(
        lambda: stack.invoice(account_id, invoice_id),
        lambda body: body["status"] == "paid",
        within=60.0,
        interval=PAID_POLL_SECONDS,
        what=f"invoice {invoice_id} to read paid",
    )
    return time.monotonic() - started


async def run(
    stack: Stack, *, steps: tuple[int, ...] = STEPS, payments: int = PAYMENTS
) -> OpenWorkflowsResult:
    result = OpenWorkflowsResult()
    await stack.set_emulator_limits(RAISED_LIMITS)
    (await stack.admin.put("/__admin/config", json={"webhook_batch_seconds": 0})).raise_for_status()
    async with stack.running_worker(RAISED_LIMITS) as worker:
        account_id, realm_id = await stack.connected_account("open")
        ids: list[str] = []
        paid: set[str] = set()
        started = time.monotonic()

        async def send(index: int) -> None:
            name, email = client_of(index, CLIENTS)
            await stack.send_invoice(
                account_id, ids[index], send_payload(invoice_number("O", index), name, email)
            )

        for target in steps:
            first = len(ids)
            ids += [f"open-{index:05d}" for index in range(first, target)]
            await bounded(CONCURRENCY, [partial(send, index) for index in range(first, target)])
            await stack.wait_for(
                partial(stack.count_at_least, account_id, "synced", target - len(paid)),
                bool,
                within=SYNC_TIMEOUT,
                interval=0.5,
                what=f"{target} invoices to sync",
            )
            await stack.settle()
            step = Step(
                open_workflows=await open_invoice_workflows(stack),
                synced=target,
                rss_mib=rss_mib(worker.process.pid),
                seconds=time.monotonic() - started,
            )
            result.steps.append(step)
            log(f"open workflows: {step.open_workflows}, worker RSS {step.rss_mib:.0f} MiB")
            if target in (steps[0], steps[-1]):
                # Evenly over the open (unpaid) ones: with N open, most are outside the worker's cache.
                unpaid = [invoice_id for invoice_id in ids if invoice_id not in paid]
                chosen = unpaid[:: max(len(unpaid) // payments, 1)][:payments]
                open_now = step.open_workflows
                result.payments[open_now] = []
                for invoice_id in chosen:
                    result.payments[open_now].append(
                        await time_to_paid(stack, account_id, realm_id, invoice_id)
                    )
                    paid.add(invoice_id)
                await stack.settle()
                log(f"payment -> paid with {open_now} open: p50 {median(result.payments[open_now]):.3f} s")
    return result


def markdown(result: OpenWorkflowsResult) -> str:
    memory = table(
        ["invoices synced", "invoice workflows open", "worker RSS MiB", "seconds since the first send"],
        [
            [f"{step.synced:,}", f"{step.open_workflows:,}", f"{step.rss_mib:.0f}", f"{step.seconds:.0f}"]
            for step in result.steps
        ],
    )
    paid = table(
        ["open workflows", "payments", "payment -> paid p50 s", "p95 s", "max s"],
        [
            [
                f"{open_now:,}",
                str(len(seconds)),
                f"{median(seconds):.3f}",
                f"{percentile(seconds, 0.95):.3f}",
                f"{max(seconds):.3f}",
            ]
            for open_now, seconds in sorted(result.payments.items())
        ],
    )
    return (
        "### Open invoice workflows waiting for payment\n\n"
        "The emulator's and the engine's limits raised, Intuit's webhooks at once; the worker's workflow cache holds "
        f"{result.cache_size:,} workflows. Memory once each step is synced and idle:\n\n{memory}\n\n"
        "A payment recorded in QuickBooks until the API reads `paid`, the invoices spread over the open ones:\n\n"
        f"{paid}\n"
    )


def describe(result: OpenWorkflowsResult) -> dict[str, Any]:
    return {
        "steps": [step.__dict__ for step in result.steps],
        "payments": {str(open_now): seconds for open_now, seconds in result.payments.items()},
        "cache_size": result.cache_size,
    }

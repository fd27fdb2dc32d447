"""Sync throughput: invoices a second from the API's send until QuickBooks has them, against the raw ceiling.

Engine: one Premium account connected to a new emulator company through the real OAuth flow sends N invoices
over C clients through the HTTP API, S sends in flight; the clock stops when the API lists all N as `synced`
(the workflow records `synced` only after QuickBooks answered the create).

Baseline, in the same run and interleaved with the engine's runs: `qbo.client.QboClient` makes the same
QuickBooks calls directly (find the service item, find or create each customer, create each invoice, with the
engine's own request bodies), S in flight, through a `RealmLimiter` with the variant's limits: the ceiling the
engine could reach against that company.

Variants: Intuit's limits (500 requests a minute and 10 in flight per company, enforced by the emulator and
mirrored by the engine's limiter); the emulator's limits raised with the engine as shipped; and both raised
(`bench.limited_worker`), which shows the engine's own speed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from activities.mapping import SERVICE_ITEM_NAME, customer_body, invoice_body, pick_income_account
from bench.harness import (
    INTUIT_LIMITS,
    RAISED_LIMITS,
    THROTTLED,
    Limits,
    Stack,
    Variant,
    bounded,
    by_name,
    cpu_seconds,
    cpu_used,
    log,
    median,
    percentile,
    summarize_calls,
    unique,
)
from bench.workload import client_of, invoice_number, send_payload, snapshot
from qbo.client import QboClient, quote, request_id
from workflows.ids import invoice_workflow_id

WARM_UP_INVOICES = 20
SYNC_TIMEOUT = 900.0


VARIANTS = by_name(
    Variant(
        "intuit",
        "Intuit's limits: emulator 500/min and 10 in flight per company; engine as shipped",
        engine_limits=None,
        raw_limits=INTUIT_LIMITS,
    ),
    Variant(
        "raised",
        "emulator limits raised (100000/min, 1000 in flight); engine as shipped (its limiter: 500/min, 10)",
        engine_limits=None,
        raw_limits=RAISED_LIMITS,
        emulator_limits=RAISED_LIMITS,
    ),
    Variant(
        "unthrottled",
        "emulator limits raised; engine limiter raised too (bench.limited_worker)",
        engine_limits=RAISED_LIMITS,
        raw_limits=RAISED_LIMITS,
        emulator_limits=RAISED_LIMITS,
    ),
)


@dataclass
class Run:
    """One measured run of N invoices, by the engine or by the raw client."""

    invoices: int
    seconds: float
    calls: dict[str, int]
    # Engine only: when the API had accepted every send, and each invoice's sent_at -> synced_at.
    accepted_seconds: float | None = None
    latencies: list[float] = field(default_factory=list)
    # CPU seconds each process used during the run.
    cpu: dict[str, float] = field(default_factory=dict)
    # Engine only: how long the API took to accept each send (202), under the run's load.
    send_latencies: list[float] = field(default_factory=list)
    # Engine only: sync_invoice activities that needed more than one attempt, and history events per invoice.
    sync_retries: int = 0
    history_events: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.invoices / self.seconds

    @property
    def served_calls(self) -> int:
        return sum(count for kind, count in self.calls.items() if kind != THROTTLED)

    @property
    def throttled(self) -> int:
        return self.calls.get(THROTTLED, 0)


@dataclass
class VariantResult:
    variant: Variant
    raw: list[Run] = field(default_factory=list)
    engine: list[Run] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median([run.per_second for run in self.engine]) / median([run.per_second for run in self.raw])


@dataclass
class SyncThroughputResult:
    invoices: int
    clients: int
    concurrency: int
    variants: list[VariantResult]


async def run_engine(stack: Stack, invoices: int, clients: int, concurrency: int) -> Run:
    account_id, realm_id = await stack.connected_account("sync")
    after_seq = await stack.last_seq(realm_id)
    send_latencies: list[float] = []

    async def send(index: int) -> None:
        name, email = client_of(index, clients)
        payload = send_payload(invoice_number("S", index), name, email)
        sent = time.monotonic()
        await stack.send_invoice(account_id, f"inv-{index:05d}", payload)
        send_latencies.append(time.monotonic() - sent)

    jobs = [partial(send, index) for index in range(invoices)]
    cpu_before = cpu_seconds(stack)
    started = time.monotonic()
    accepted_at: list[float] = []

    async def send_all() -> None:
        await bounded(concurrency, jobs)
        accepted_at.append(time.monotonic())

    sending = asyncio.create_task(send_all())
    try:
        polls = 0
        while not await stack.count_at_least(account_id, "synced", invoices):
            if sending.done():
                sending.result()  # a failed send stops the run
            polls += 1
            if polls % 20 == 0:
                stack.check_alive()
                if await stack.count_at_least(account_id, "failed", 1):
                    failed = await stack.invoices(account_id, "failed")
                    raise RuntimeError(f"{len(failed)} invoices failed to sync, e.g. {failed[0]}")
            if time.monotonic() - started > SYNC_TIMEOUT:
                raise RuntimeError(f"{invoices} invoices were not all synced within {SYNC_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)
        seconds = time.monotonic() - started
        cpu = cpu_used(cpu_before, cpu_seconds(stack))
        await sending
    finally:
        if not sending.done():
            sending.cancel()
    synced = await stack.invoices(account_id, "synced")
    latencies = [
        (datetime.fromisoformat(row["synced_at"]) - datetime.fromisoformat(row["sent_at"])).total_seconds()
        for row in synced
    ]
    company = await stack.company(realm_id)
    if len(company["invoices"]) != invoices:
        raise RuntimeError(f"QuickBooks holds {len(company['invoices'])} invoices, not {invoices}")
    calls = summarize_calls(await stack.qbo_requests(realm_id, after_seq))
    histories = await bounded(
        20,
        [
            partial(_sync_history, stack, invoice_workflow_id(account_id, f"inv-{index:05d}"))
            for index in range(invoices)
        ],
    )
    return Run(
        invoices,
        seconds,
        calls,
        accepted_at[0] - started,
        latencies,
        cpu,
        send_latencies,
        sync_retries=sum(1 for _, attempts in histories if attempts > 1),
        history_events=[events for events, _ in histories],
    )


async def _sync_history(stack: Stack, workflow_id: str) -> tuple[int, int]:
    """History events of an invoice workflow, and the attempt on which its sync activity succeeded."""
    history = await stack.temporal.get_workflow_handle(workflow_id).fetch_history()
    scheduled_sync = {
        event.event_id
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "sync_invoice"
    }
    attempts = max(
        (
            event.activity_task_started_event_attributes.attempt
            for event in history.events
            if event.HasField("activity_task_started_event_attributes")
            and event.activity_task_started_event_attributes.scheduled_event_id in scheduled_sync
        ),
        default=0,
    )
    return len(history.events), attempts


async def run_raw(stack: Stack, invoices: int, clients: int, concurrency: int, limits: Limits) -> Run:
    """The same QuickBooks work with `QboClient` directly: the item, each customer, each invoice."""
    realm_id = await stack.create_company(unique("Bench raw"))
    async with stack.raw_client(realm_id, limits) as client:
        after_seq = await stack.last_seq(realm_id)
        cpu_before = cpu_seconds(stack)
        started = time.monotonic()
        await create_invoices_directly(client, invoices, clients, concurrency)
        seconds = time.monotonic() - started
        cpu = cpu_used(cpu_before, cpu_seconds(stack))
    calls = summarize_calls(await stack.qbo_requests(realm_id, after_seq))
    return Run(invoices, seconds, calls, cpu=cpu)


async def create_invoices_directly(
    client: QboClient, invoices: int, clients: int, concurrency: int
) -> list[str]:
    """The item, each customer and each invoice, made with `QboClient` directly; the invoices' QuickBooks ids."""
    realm_id = client.realm_id
    item_id = await _ensure_item(client)
    people = sorted({client_of(index, clients) for index in range(min(invoices, clients))})
    customer_ids = dict(
        await bounded(
            concurrency,
            [partial(_ensure_customer, client, name, email) for name, email in people],
        )
    )

    async def create(index: int) -> str:
        name, email = client_of(index, clients)
        number = invoice_number("R", index)
        body = invoice_body(
            snapshot(number, name, email),
            customer_id=customer_ids[email],
            item_id=item_id,
            workflow_id=f"raw-{realm_id}-{index}",
        )
        created = await client.create(
            "Invoice", body, request_id=request_id(realm_id, "raw.invoice", str(index))
        )
        return str(created["Id"])

    return list(await bounded(concurrency, [partial(create, index) for index in range(invoices)]))


async def _ensure_item(client: QboClient) -> str:
    # QuickBooks query statements, built with qbo.client.quote as the engine builds them (not SQL).
    rows = await client.query(f"SELECT * FROM Item WHERE Name = {quote(SERVICE_ITEM_NAME)}")  # noqa: S608
    if rows:
        return str(rows[0]["Id"])
    income = pick_income_account(await client.query("SELECT * FROM Account WHERE AccountType = 'Income'"))
    assert income is not None
    body = {"Name": SERVICE_ITEM_NAME, "Type": "Service", "IncomeAccountRef": {"value": str(income["Id"])}}
    created = await client.create("Item", body, request_id=request_id(client.realm_id, "raw.item"))
    return str(created["Id"])


async def _ensure_customer(client: QboClient, name: str, email: str) -> tuple[str, str]:
    rows = await client.query(f"SELECT * FROM Customer WHERE PrimaryEmailAddr = {quote(email)}")  # noqa: S608
    if rows:
        return email, str(rows[0]["Id"])
    created = await client.create(
        "Customer", customer_body(name, name, email), request_id=request_id(client.realm_id, "raw", email)
    )
    return email, str(created["Id"])


async def run_variant(
    stack: Stack, variant: Variant, *, invoices: int, clients: int, concurrency: int, repeat: int
) -> VariantResult:
    result = VariantResult(variant)
    await stack.set_emulator_limits(variant.emulator_limits)
    async with stack.running_worker(variant.engine_limits):
        log(f"sync [{variant.name}]: warming up the worker with {WARM_UP_INVOICES} invoices")
        await run_engine(stack, WARM_UP_INVOICES, min(clients, WARM_UP_INVOICES), concurrency)
        for attempt in range(1, repeat + 1):
            await stack.settle()
            raw = await run_raw(stack, invoices, clients, concurrency, variant.raw_limits)
            result.raw.append(raw)
            log(
                f"sync [{variant.name}] {attempt}/{repeat}: raw QboClient {raw.per_second:.1f} invoices/s "
                f"({raw.seconds:.1f} s, {raw.served_calls} calls, {raw.throttled} throttled)"
            )
            await stack.settle()
            engine = await run_engine(stack, invoices, clients, concurrency)
            result.engine.append(engine)
            log(
                f"sync [{variant.name}] {attempt}/{repeat}: engine {engine.per_second:.1f} invoices/s "
                f"({engine.seconds:.1f} s, {engine.served_calls} calls, {engine.throttled} throttled; "
                f"all sends accepted after {engine.accepted_seconds or 0:.1f} s; "
                f"{engine.sync_retries} syncs needed a retry)"
            )
    await stack.set_emulator_limits(INTUIT_LIMITS)
    return result


async def run(
    stack: Stack, *, invoices: int, clients: int, concurrency: int, repeat: int, variants: list[str]
) -> SyncThroughputResult:
    results = []
    for name in variants:
        results.append(
            await run_variant(
                stack,
                VARIANTS[name],
                invoices=invoices,
                clients=clients,
                concurrency=concurrency,
                repeat=repeat,
            )
        )
    return SyncThroughputResult(invoices, clients, concurrency, results)


def latency_summary(runs: list[Run]) -> tuple[float, float]:
    """Medians over runs of each run's per-invoice p50 and p99 (send accepted -> synced recorded)."""
    return (
        median([percentile(run.latencies, 0.50) for run in runs]),
        median([percentile(run.latencies, 0.99) for run in runs]),
    )


def calls_per_invoice(runs: list[Run]) -> float:
    return median([run.served_calls / run.invoices for run in runs])


def describe(result: SyncThroughputResult) -> dict[str, Any]:
    """The figures as plain data (for --json)."""
    return {
        "invoices": result.invoices,
        "clients": result.clients,
        "concurrency": result.concurrency,
        "variants": [
            {
                "name": item.variant.name,
                "description": item.variant.description,
                "raw_invoices_per_second": [run.per_second for run in item.raw],
                "engine_invoices_per_second": [run.per_second for run in item.engine],
                "ratio": item.ratio,
                "engine_calls": [run.calls for run in item.engine],
                "raw_calls": [run.calls for run in item.raw],
                "engine_latency_p50_p99": latency_summary(item.engine),
                "engine_sync_retries": [run.sync_retries for run in item.engine],
                "engine_history_events_median": [median(run.history_events) for run in item.engine],
            }
            for item in result.variants
        ],
    }

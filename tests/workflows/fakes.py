"""Activities replaced for workflow tests (the Temporal samples' pattern: fakes registered under the same names).

The fakes keep what the workflow asked for, so a test reads the state machine's moves without a database or
QuickBooks; gates let a test hold an activity open while it sends signals, so they land in one workflow task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.invoice_sync import synced_record
from models.domain import InvoiceStatus, VoidOutcome
from workflows.connection import TOKEN_TASK_QUEUE_SUFFIX, ConnectionWorkflow
from workflows.invoice import InvoiceWorkflow
from workflows.messages import (
    CompanyCheckResult,
    ConnectionInfo,
    ConnectionRecord,
    HealthResult,
    InvoiceLine,
    InvoiceObservation,
    InvoiceRecord,
    InvoiceSnapshot,
    PauseInput,
    PauseResult,
    PlatformEvent,
    ReadInvoiceInput,
    RefreshTokensInput,
    RefreshTokensResult,
    SweepInput,
    SweepResult,
    SyncInvoiceInput,
    SyncInvoiceResult,
    TokenLifetimes,
    VoidInvoiceInput,
    VoidInvoiceResult,
)


def snapshot(number: str = "INV-1") -> InvoiceSnapshot:
    return InvoiceSnapshot(
        number=number,
        client_name="Ada Lovelace",
        client_email="ada@example.com",
        currency="USD",
        issue_date="2026-11-24",
        due_date="2026-12-24",
        lines=[InvoiceLine(description="Review", quantity="1", unit_price_cents=10_000)],
    )


@dataclass
class FakeInvoiceActivities:
    """What the invoice workflow's activities were asked, and gates to hold them open."""

    records: list[InvoiceRecord] = field(default_factory=list)
    syncs: list[SyncInvoiceInput] = field(default_factory=list)
    voids: list[VoidInvoiceInput] = field(default_factory=list)
    events: list[PlatformEvent] = field(default_factory=list)
    # Set to hold `record_invoice` for the given status until the event is set.
    hold_record: dict[InvoiceStatus, asyncio.Event] = field(default_factory=dict)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    sync_result: Callable[[SyncInvoiceInput], SyncInvoiceResult] | None = None
    # Set to hold every `sync_invoice` open until the event is set (`sync_started` says one is held).
    hold_sync: asyncio.Event | None = None
    sync_started: asyncio.Event = field(default_factory=asyncio.Event)
    void_outcome: VoidOutcome = VoidOutcome.VOIDED
    connection_usable: bool = True
    # The platform's event endpoint is down: every delivery attempt fails.
    platform_down: bool = False
    # What QuickBooks holds when an operator re-reads the invoice (None: the invoice as synced, unchanged).
    in_quickbooks: InvoiceObservation | None = None
    reads: list[ReadInvoiceInput] = field(default_factory=list)

    @property
    def statuses(self) -> list[InvoiceStatus]:
        return [record.status for record in self.records]

    @activity.defn(name="record_invoice")
    async def record_invoice(self, record: InvoiceRecord) -> None:
        self.records.append(record)
        gate = self.hold_record.get(record.status)
        if gate is not None:
            self.held.set()
            await gate.wait()

    @activity.defn(name="pause_invoice")
    async def pause_invoice(self, request: PauseInput) -> PauseResult:
        return PauseResult(resume_now=self.connection_usable)

    @activity.defn(name="sync_invoice")
    async def sync_invoice(self, request: SyncInvoiceInput) -> SyncInvoiceResult:
        self.syncs.append(request)
        if self.hold_sync is not None:
            self.sync_started.set()
            await self.hold_sync.wait()
        if self.sync_result is not None:
            result = self.sync_result(request)
        else:
            total = request.snapshot.total_cents
            result = SyncInvoiceResult(
                realm_id="9130000000000001",
                qbo_invoice_id="145",
                qbo_customer_id="58",
                sync_token=0,
                total_cents=total,
                balance_cents=total,
            )
        if request.record_synced:
            # As the real activity does: the synced invoice recorded by the sync itself.
            await self.record_invoice(synced_record(request, result))
            result = dataclasses.replace(result, recorded=True)
        return result

    @activity.defn(name="void_invoice")
    async def void_invoice(self, request: VoidInvoiceInput) -> VoidInvoiceResult:
        self.voids.append(request)
        return VoidInvoiceResult(outcome=self.void_outcome)

    @activity.defn(name="read_invoice")
    async def read_invoice(self, request: ReadInvoiceInput) -> InvoiceObservation:
        self.reads.append(request)
        if self.in_quickbooks is not None:
            return self.in_quickbooks
        total = snapshot().total_cents
        return InvoiceObservation(
            realm_id=request.realm_id, qbo_invoice_id=request.qbo_invoice_id, sync_token=0, total_cents=total,
            balance_cents=total, source="operator",
        )  # fmt: skip

    @activity.defn(name="deliver_platform_event")
    async def deliver_platform_event(self, event: PlatformEvent) -> None:
        self.events.append(event)
        if self.platform_down:
            raise ApplicationError("platform unreachable", type="PlatformUnavailable")

    def all(self) -> list[Callable[..., object]]:
        return [
            self.record_invoice,
            self.pause_invoice,
            self.sync_invoice,
            self.void_invoice,
            self.read_invoice,
            self.deliver_platform_event,
        ]


@asynccontextmanager
async def invoice_worker(client: Client, fakes: FakeInvoiceActivities) -> AsyncIterator[str]:
    """A worker running InvoiceWorkflow with the fakes on a task queue of its own (yielded)."""
    task_queue = f"wf-{uuid.uuid4().hex[:10]}"
    async with Worker(client, task_queue=task_queue, workflows=[InvoiceWorkflow], activities=fakes.all()):
        yield task_queue


@dataclass
class FakeConnectionActivities:
    """The connection workflow's activities: a connection whose every refresh succeeds."""

    info: ConnectionInfo
    refreshes: list[RefreshTokensInput] = field(default_factory=list)
    records: list[ConnectionRecord] = field(default_factory=list)
    company_checks: int = 0
    sweeps: int = 0
    health_checks: int = 0
    sweep_result: SweepResult = field(default_factory=lambda: SweepResult(caught=0, changed=0))

    @activity.defn(name="refresh_tokens")
    async def refresh_tokens(self, request: RefreshTokensInput) -> RefreshTokensResult:
        self.refreshes.append(request)
        self.info = dataclasses.replace(self.info, token_version=request.expected_version + 1)
        return RefreshTokensResult(
            info=self.info, refreshed=True, lifetimes=TokenLifetimes(access_seconds=3600)
        )

    @activity.defn(name="record_connection")
    async def record_connection(self, record: ConnectionRecord) -> ConnectionInfo:
        self.records.append(record)
        self.info = dataclasses.replace(self.info, status=record.status, status_reason=record.reason)
        return self.info

    @activity.defn(name="check_connection")
    async def check_connection(self, account_id: str) -> HealthResult:
        self.health_checks += 1
        return HealthResult(ok=True)

    @activity.defn(name="check_company")
    async def check_company(self, account_id: str) -> CompanyCheckResult:
        self.company_checks += 1
        return CompanyCheckResult(checked=True)

    @activity.defn(name="sweep_changes")
    async def sweep_changes(self, request: SweepInput) -> SweepResult:
        self.sweeps += 1
        return self.sweep_result

    @activity.defn(name="deliver_platform_event")
    async def deliver_platform_event(self, event: PlatformEvent) -> None:
        return None


@asynccontextmanager
async def connection_worker(
    client: Client, fakes: FakeConnectionActivities, task_queue: str | None = None
) -> AsyncIterator[str]:
    """Workers running ConnectionWorkflow with the fakes, on a task queue of their own (or `task_queue`, where
    workflows may already wait) and its token queue."""
    task_queue = task_queue or f"wf-{uuid.uuid4().hex[:10]}"
    async with (
        Worker(
            client,
            task_queue=task_queue,
            workflows=[ConnectionWorkflow],
            activities=[
                fakes.check_connection,
                fakes.check_company,
                fakes.sweep_changes,
                fakes.deliver_platform_event,
            ],
        ),
        Worker(
            client,
            task_queue=task_queue + TOKEN_TASK_QUEUE_SUFFIX,
            activities=[fakes.refresh_tokens, fakes.record_connection],
        ),
    ):
        yield task_queue

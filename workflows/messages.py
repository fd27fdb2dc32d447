"""Inputs, results and messages of the workflows and activities: small dataclasses, never tokens.

New fields always get defaults, so workflows already running keep decoding their history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from models.domain import ConnectionStatus, DisconnectMode, InvoiceStatus, VoidOutcome


@dataclass
class FailureReason:
    """What a failed activity tells the user, as the first detail of its ApplicationError.

    Details are payloads, which the codec encrypts; an error's message is not: the SDK logs it, so it names codes,
    entity kinds and ids only. The reason may quote QuickBooks' own words, which can echo what was sent.
    """

    reason: str


# --- Invoices ----------------------------------------------------------------------------------------------


@dataclass
class InvoiceLine:
    description: str
    quantity: str  # a decimal string, e.g. "1.5"
    unit_price_cents: int
    # The line's sales tax rate, a canonical percent ("13", "14.975"); None or "0": no tax on the line.
    tax_rate: str | None = None

    @property
    def amount_cents(self) -> int:
        amount = Decimal(self.quantity) * self.unit_price_cents
        return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    @property
    def taxed(self) -> bool:
        return self.tax_rate is not None and Decimal(self.tax_rate) != 0


@dataclass
class InvoiceSnapshot:
    """The platform invoice as it was sent. Names and emails are PII: the payload codec encrypts them."""

    number: str
    client_name: str
    client_email: str
    currency: str
    issue_date: str  # ISO date
    due_date: str  # ISO date
    lines: list[InvoiceLine]
    # The invoice's total tax as the platform computed it; None: the lines' rates say it (see `tax_cents`).
    total_tax_cents: int | None = None

    @property
    def subtotal_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    @property
    def tax_cents(self) -> int:
        """The platform's tax, or the tax of the lines' rates as QuickBooks computes it: per rate, the net amounts
        of its lines times the rate, rounded half up to the cent."""
        if self.total_tax_cents is not None:
            return self.total_tax_cents
        net_by_rate: dict[Decimal, int] = {}
        for line in self.lines:
            if line.taxed:
                rate = Decimal(str(line.tax_rate))
                net_by_rate[rate] = net_by_rate.get(rate, 0) + line.amount_cents
        return sum(
            int((net * rate / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            for rate, net in net_by_rate.items()
        )

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents


@dataclass
class InvoiceProgress:
    """What an invoice workflow carries across continue-as-new."""

    status: InvoiceStatus = InvoiceStatus.PENDING
    realm_id: str | None = None
    qbo_invoice_id: str | None = None
    qbo_customer_id: str | None = None
    qbo_sync_token: int = -1
    total_cents: int | None = None
    balance_cents: int | None = None
    last_error: str | None = None
    manual_retries: int = 0
    create_attempted: bool = False
    resume_status: InvoiceStatus | None = None  # where a paused invoice carries on once QuickBooks is usable
    # What signals and updates asked for; part of the progress so continue-as-new never drops one.
    void_requested: bool = False
    retry_requested: bool = False
    resume_requested: bool = False
    disconnect_mode: str | None = None
    disconnect_void_outcome: VoidOutcome | None = None
    disconnect_reason: str | None = None
    pending_observations: list[InvoiceObservation] = field(default_factory=list)
    # Counts what needs a key of its own (a refusal, a resumption) across runs: history lengths restart.
    occurrences: int = 0
    events_emitted: int = 0  # platform events of this chain so far: the next one's `sequence` follows


@dataclass
class InvoiceWorkflowInput:
    account_id: str
    invoice_id: str
    snapshot: InvoiceSnapshot
    progress: InvoiceProgress | None = None
    # Platform events the previous run had not delivered when it continued as new: this run sends them.
    undelivered_events: list[PlatformEvent] = field(default_factory=list)
    # Which sequence of commands the workflow follows (INVOICE_WORKFLOW_VERSION when started; carried across
    # continue-as-new). Versioned by its input rather than with `workflow.patched`, which costs every new workflow
    # a marker and a search-attribute upsert per patch. 0: workflows started before versions (their histories
    # replay as they ran).
    version: int = 0


# 1: the sync activity records the synced invoice itself, the read side's other writes are local activities, and the
# workflow starts reading `syncing` (its start search attribute) without upserting it.
INVOICE_WORKFLOW_VERSION = 1


@dataclass
class InvoiceWorkflowResult:
    status: InvoiceStatus
    qbo_invoice_id: str | None = None


@dataclass
class InvoiceStatusView:
    """The invoice workflow's query answer: everything an operator needs at a glance."""

    account_id: str
    invoice_id: str
    number: str
    status: InvoiceStatus
    realm_id: str | None
    qbo_invoice_id: str | None
    total_cents: int | None
    balance_cents: int | None
    last_error: str | None
    manual_retries: int
    void_requested: bool


# The source of an observation an operator asked for (`reread_from_quickbooks`): applied even when QuickBooks'
# SyncToken has not moved, so the invoice's status is derived again from what QuickBooks holds.
OPERATOR_READ = "operator"


@dataclass
class InvoiceObservation:
    """The state of a QuickBooks invoice as read from QuickBooks (after a webhook or a CDC sweep)."""

    realm_id: str
    qbo_invoice_id: str
    sync_token: int
    total_cents: int
    balance_cents: int
    voided: bool = False
    deleted: bool = False
    source: str = "webhook"


@dataclass
class RetrySyncRequest:
    requested_by: str = "api"


@dataclass
class RetryAccepted:
    """What the `retry_sync` update did: a manual retry of a failed sync, or a paused invoice's re-check."""

    status: InvoiceStatus  # the invoice's status when the retry was accepted (failed or paused)
    message: str
    retry: int = 0  # the manual retry this is (1 for the first); 0 for a paused invoice's re-check
    already_requested: bool = False  # asked for before and not started yet: this request changed nothing


@dataclass
class RereadRequest:
    requested_by: str = "operator"


@dataclass
class RereadResult:
    """What the `reread_from_quickbooks` update found in QuickBooks and what became of the invoice."""

    status: InvoiceStatus  # the invoice's status once QuickBooks' state was applied
    previous_status: InvoiceStatus
    message: str
    total_cents: int | None = None
    balance_cents: int | None = None
    changed: bool = False  # the status or the balance moved


@dataclass
class ReadInvoiceInput:
    account_id: str
    realm_id: str
    qbo_invoice_id: str


@dataclass
class VoidRequest:
    requested_by: str = "api"


@dataclass
class VoidAccepted:
    status: InvoiceStatus


@dataclass
class ConnectionChange:
    """Sent to invoice workflows by the connection workflow."""

    usable: bool
    reason: str | None = None
    # "disconnect_only" / "disconnect_and_void" when the user disconnected; None for expiry or resumption.
    disconnect_mode: str | None = None
    # What Disconnect & Void did to this invoice in QuickBooks.
    void_outcome: VoidOutcome | None = None


# --- Activities of the invoice workflow ---------------------------------------------------------------------


@dataclass
class SyncInvoiceInput:
    account_id: str
    invoice_id: str
    workflow_id: str
    snapshot: InvoiceSnapshot
    generation: int = 0  # bumps on each manual retry, so a fresh request id replaces a failed one
    may_exist: bool = False  # an earlier write's outcome is unknown: look before creating
    # The attempt also writes the synced invoice to the read side (status, timeline, resolved notification), so
    # the workflow needs no store activity after it. Older workflows record it themselves.
    record_synced: bool = False


@dataclass
class SyncInvoiceResult:
    realm_id: str
    qbo_invoice_id: str
    qbo_customer_id: str
    sync_token: int
    total_cents: int
    balance_cents: int
    found_existing: bool = False
    # QuickBooks' tax or total differs from the platform's: the words for the user (amounts: payloads only).
    mismatch: str | None = None
    recorded: bool = False  # the read side reads synced already (the request's `record_synced`)


@dataclass
class VoidInvoiceInput:
    account_id: str
    invoice_id: str
    workflow_id: str
    doc_number: str
    qbo_invoice_id: str | None = None
    # To find the invoice by its customer and date where QuickBooks numbered it itself (custom numbers off).
    client_email: str | None = None
    currency: str | None = None
    issue_date: str | None = None
    generation: int = 0  # no longer read: a void's requestid is its SyncToken's (kept for older histories)


@dataclass
class VoidInvoiceResult:
    outcome: VoidOutcome
    reason: str | None = None
    observation: InvoiceObservation | None = None


@dataclass
class TimelineItem:
    kind: str
    message: str
    dedupe_key: str


def synced_timeline(workflow_id: str, number: str, qbo_invoice_id: str) -> TimelineItem:
    """The timeline entry of an invoice's sync, whoever writes it (the sync activity, or an older workflow)."""
    return TimelineItem(
        kind="synced",
        message=f"Synced to QuickBooks as invoice {number}.",
        dedupe_key=f"{workflow_id}/synced/{qbo_invoice_id}",
    )


@dataclass
class NotificationItem:
    kind: str
    message: str
    dedupe_key: str
    action: str | None = None


@dataclass
class InvoiceRecord:
    """A change to an invoice's read side (database), with its timeline entry and notification if any."""

    account_id: str
    invoice_id: str
    status: InvoiceStatus
    realm_id: str | None = None
    qbo_invoice_id: str | None = None
    qbo_customer_id: str | None = None
    total_cents: int | None = None
    balance_cents: int | None = None
    qbo_sync_token: int | None = None
    last_error: str | None = None
    clear_last_error: bool = False
    timeline: TimelineItem | None = None
    notification: NotificationItem | None = None
    resolve_notification_kinds: list[str] = field(default_factory=list)


@dataclass
class PauseInput:
    account_id: str
    invoice_id: str
    reason: str


@dataclass
class PauseResult:
    resume_now: bool


@dataclass
class PlatformEvent:
    """An event for the platform (signed and POSTed to PLATFORM_EVENTS_URL)."""

    event_id: str
    type: str  # invoice.paid, invoice.partially_paid, invoice.voided, invoice.sync_failed, connection.*
    account_id: str
    occurred_at: datetime
    invoice_id: str | None = None
    data: dict[str, str | int | bool | None] = field(default_factory=dict)
    # The subject's (invoice's or connection's) count of events in this workflow chain (`chain`: its first run's
    # id), from 1; the event's kept record turns it into the subject's `sequence`. 0: sent by an earlier release.
    sequence: int = 0
    chain: str = ""


@dataclass
class RedeliverPlatformEvent:
    """Deliver a kept platform event again (its id: `evt_...`)."""

    event_id: str


# --- Connections --------------------------------------------------------------------------------------------


@dataclass
class ConnectionInfo:
    """A connection's state without its tokens."""

    account_id: str
    status: ConnectionStatus
    realm_id: str | None = None
    token_version: int = 0
    connected_at: datetime | None = None
    access_expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    refresh_hard_expires_at: datetime | None = None
    status_reason: str | None = None
    company_name: str | None = None  # CompanyInfo.CompanyName, as the callback read it


@dataclass
class TokenLifetimes:
    """Seconds each token had left when an activity looked; the workflow turns them into its own deadlines."""

    access_seconds: float
    refresh_seconds: float | None = None
    hard_seconds: float | None = None


@dataclass
class ConnectionPolicy:
    """The connection workflow's timings, from settings (the workflow cannot read settings itself)."""

    expiry_warning_seconds: int = 14 * 24 * 3600
    cdc_interval_seconds: int = 15 * 60
    health_check_interval_seconds: int = 24 * 3600


@dataclass
class ConnectionDeadlines:
    """When (in workflow time) the next refresh, sweep, health check and expiry warning are due."""

    refresh_at: datetime | None = None
    cdc_at: datetime | None = None
    health_at: datetime | None = None
    horizon_at: datetime | None = None  # when the authorization itself ends (rolling or hard expiry)


@dataclass
class ConnectionProgress:
    """What a connection workflow carries across continue-as-new."""

    info: ConnectionInfo | None = None
    refreshes: int = 0
    deadlines: ConnectionDeadlines = field(default_factory=ConnectionDeadlines)
    plan_entitled: bool = True
    caught_by_sweeps: int = 0
    # The latest authorizations dealt with: grant id -> None if adopted, else why it was refused.
    grant_outcomes: dict[str, str | None] = field(default_factory=dict)
    occurrences: int = 0
    check_requested: bool = False  # a company check asked for and not yet run
    events_emitted: int = 0  # platform events of this chain so far: the next one's `sequence` follows


@dataclass
class ConnectionWorkflowInput:
    account_id: str
    grant_id: str | None = None
    pending_grants: list[str] = field(default_factory=list)
    progress: ConnectionProgress | None = None
    policy: ConnectionPolicy = field(default_factory=ConnectionPolicy)
    undelivered_events: list[PlatformEvent] = field(default_factory=list)


@dataclass
class PlanChange:
    entitled: bool


@dataclass
class DisconnectRequest:
    mode: DisconnectMode


@dataclass
class DisconnectAccepted:
    mode: DisconnectMode


@dataclass
class BeginDisconnectInput:
    account_id: str
    mode: DisconnectMode


@dataclass
class BeginDisconnectResult:
    to_void: int


@dataclass
class VoidForDisconnectInput:
    account_id: str
    batch_size: int = 100


@dataclass
class VoidForDisconnectResult:
    voided: int
    failed: int
    remaining: int


@dataclass
class HealthResult:
    ok: bool
    reason: str | None = None
    unblocked: bool = False  # the company check found nothing blocking and invoices are paused: resume them


@dataclass
class OperatorRequest:
    """The input of an operator's action that needs nothing else (`{}`, or no input at all)."""

    requested_by: str = "operator"


@dataclass
class ReplayParkedEventsRequest:
    """`{}`: every parked event of the connection's company; `{"event_ids": [412, 413]}`: those only."""

    event_ids: list[int] = field(default_factory=list)


@dataclass
class ReplayParkedEventsInput:
    realm_id: str
    event_ids: list[int] = field(default_factory=list)


@dataclass
class ReplayParkedEventsResult:
    replayed: int
    event_ids: list[int] = field(default_factory=list)  # the events put back to pending
    not_parked: list[int] = field(default_factory=list)  # asked for, but not a parked event of this company
    message: str = ""


@dataclass
class ReprocessDeliveryRequest:
    """`{"delivery_id": 42}`: the kept webhook delivery (`quickbooks_webhook_delivery.id`) to read again."""

    delivery_id: int = 0


@dataclass
class ReprocessDeliveryInput:
    realm_id: str
    delivery_id: int


@dataclass
class ReprocessDeliveryResult:
    found: bool
    read: int = 0  # events of this company the delivery now yields
    stored: int = 0  # of those, not stored before
    duplicates: int = 0
    unreadable: int = 0  # events this release still cannot read
    other_companies: int = 0  # companies other than this one the delivery holds events for
    error: str | None = None  # what could not be read, where and why (never what it held)
    message: str = ""


@dataclass
class SweepNowResult:
    caught: int  # invoice changes no webhook had brought
    changed: int  # invoice changes QuickBooks reported since the last sweep
    message: str


@dataclass
class HealthCheckNowResult:
    ok: bool
    message: str
    resumed_paused: bool = (
        False  # the check found nothing blocking any more: paused invoices were told to go on
    )


@dataclass
class RefreshNowResult:
    refreshed: bool
    status: ConnectionStatus
    token_version: int
    message: str
    access_expires_at: datetime | None = None


@dataclass
class CompanyCheckRequest:
    requested_by: str = "api"


@dataclass
class CompanyCheckResult:
    """What the company check found (no personal data: settings and findings only)."""

    checked: bool  # False: QuickBooks could not be asked (the connection is not usable); nothing changed
    blocked_reason: str | None = None
    unblocked: bool = False  # nothing blocks, and invoices of the account are paused: they may go on now
    reason: str | None = None  # why it could not check


@dataclass
class SweepInput:
    account_id: str


@dataclass
class SweepResult:
    caught: int
    changed: int


@dataclass
class GrantSignal:
    """A new authorization is stored (encrypted) under `grant_id`: adopt it."""

    grant_id: str


@dataclass
class GrantOutcome:
    """What became of an authorization: adopted (the connection is usable), or refused and why (an error type)."""

    adopted: bool
    refused: str | None = None
    info: ConnectionInfo | None = None
    # Neither yet: the run continued as new with the grant, which its next run adopts (ask that one).
    carried_over: bool = False


@dataclass
class RefreshRequest:
    """An activity got a 401 with the tokens of `seen_version`; refresh unless that already happened."""

    seen_version: int


@dataclass
class RefreshResult:
    token_version: int
    usable: bool
    status: ConnectionStatus


@dataclass
class AdoptGrantInput:
    account_id: str
    grant_id: str


@dataclass
class AdoptGrantResult:
    info: ConnectionInfo
    realm_changed: bool = False
    previous_realm_id: str | None = None
    lifetimes: TokenLifetimes | None = None


@dataclass
class RefreshTokensInput:
    account_id: str
    expected_version: int


@dataclass
class RefreshTokensResult:
    info: ConnectionInfo
    refreshed: bool
    expired: bool = False
    reason: str | None = None
    lifetimes: TokenLifetimes | None = None


@dataclass
class ConnectionRecord:
    """A status change of a connection, with the notification and platform event it causes."""

    account_id: str
    status: ConnectionStatus
    reason: str | None = None
    notification: NotificationItem | None = None
    resolve_notification_kinds: list[str] = field(default_factory=list)


@dataclass
class SignalInvoicesInput:
    account_id: str
    statuses: list[InvoiceStatus]
    change: ConnectionChange


@dataclass
class SignalInvoicesResult:
    signalled: int


# --- QuickBooks events (webhooks and CDC) -----------------------------------------------------------------


@dataclass
class RealmEventsInput:
    realm_id: str
    processed_before: int = 0


@dataclass
class ProcessEventsInput:
    realm_id: str
    batch_size: int = 200


@dataclass
class ProcessEventsResult:
    processed: int
    deferred: int
    invoices_signalled: int
    more_pending: bool

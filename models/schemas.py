"""API request and response shapes (separate from the tables)."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation, localcontext
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from models.bounds import (
    MAX_AMOUNT_CENTS,
    MAX_AMOUNT_TEXT,
    MAX_QUANTITY,
    QUANTITY_DECIMAL_PLACES,
    SafeStr,
)
from models.domain import (
    AttentionKind,
    CheckCode,
    CheckSeverity,
    ConnectionStatus,
    DisconnectMode,
    EventSubject,
    InvoiceStatus,
    NotificationKind,
    PlatformEventStatus,
    PlatformEventType,
)
from models.plans import Plan
from qbo.company_settings import RATE_PATTERN, canonical_rate
from workflows.messages import InvoiceLine, InvoiceSnapshot

# Deliberately simple: one @, no spaces, a dot in the domain. QuickBooks caps addresses at 100 characters.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DOC_NUMBER_MAX_LENGTH = 21


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, object]] | None = None


class ErrorResponse(BaseModel):
    """Every error the API returns: a stable `code` to branch on and a `message` for people."""

    error: ErrorBody


# --- Accounts ---------------------------------------------------------------------------------------------


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Plan
    quickbooks_addon: bool = False


class AccountPublic(BaseModel):
    account_id: str
    plan: Plan
    quickbooks_addon: bool
    quickbooks_available: bool
    quickbooks_unavailable_reason: str | None = None
    api_token: str | None = Field(
        default=None,
        description="This account's own API token (returned to the service token's holder only).",
    )


# --- QuickBooks connection --------------------------------------------------------------------------------


class ConnectStart(BaseModel):
    authorization_url: str = Field(
        description="This service's start link: redirect the user's browser to it at once (single use). It binds "
        "the sign-in to that browser and goes on to Intuit's authorization page. Never show, store or send it."
    )
    authorization_url_expires_at: datetime = Field(description="The start link must be opened before this.")
    state_expires_at: datetime = Field(description="The sign-in at Intuit must be finished before this.")
    flow_id: str = Field(
        description="Names this sign-in: the signed return to PLATFORM_RETURN_URL carries it as `flow`. Keep it with "
        "the session that asked to connect, and act on a return only when its `flow` is that session's."
    )


class DisconnectFailure(BaseModel):
    invoice_id: str
    number: str
    reason: str | None = None


class DisconnectProgress(BaseModel):
    """How far "Disconnect & Void" is: counts, and the invoices QuickBooks would not void."""

    mode: DisconnectMode
    total: int
    voided: int
    failed: int
    left: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failures: list[DisconnectFailure] = Field(default_factory=list)


class ConnectionPublic(BaseModel):
    status: ConnectionStatus
    realm_id: str | None = None
    company_name: str | None = Field(
        default=None, description="The QuickBooks company's name, as QuickBooks reported it when connecting."
    )
    connected_at: datetime | None = None
    reason: str | None = None
    action: Literal["connect", "reconnect", "upgrade"] | None = None
    expires_at: datetime | None = Field(
        default=None, description="When the authorization ends (expiring only)."
    )
    sync_paused_reason: str | None = Field(
        default=None,
        description="Set while the plan does not include QuickBooks, or a blocking finding of the company check "
        "stands.",
    )
    company: CompanyPublic | None = Field(
        default=None, description="The company's settings and what they mean for syncing (the company check)."
    )
    disconnect: DisconnectProgress | None = None
    invoices_to_void: int | None = Field(
        default=None,
        description="How many invoices `disconnect_and_void` would void now: synced (paid ones included, which "
        "QuickBooks refuses to void while a payment is applied) and not voided. Set while connected or expiring.",
    )
    last_sweep_at: datetime | None = None
    missed_changes_caught: int = Field(
        default=0, description="Changes the periodic sweep found that webhooks missed."
    )


class DisconnectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: DisconnectMode = Field(
        description="`disconnect_only` stops syncing; `disconnect_and_void` first voids every synced invoice."
    )


# --- Invoices ---------------------------------------------------------------------------------------------


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[SafeStr, Field(min_length=1, max_length=500)]
    email: Annotated[SafeStr, Field(min_length=3, max_length=100)]

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the client's name is blank")
        return value.strip()

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str) -> str:
        value = value.strip()
        if not _EMAIL.match(value):
            raise ValueError("not an email address")
        return value


class InvoiceLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Annotated[SafeStr, Field(min_length=1, max_length=4000)]
    quantity: Annotated[
        str,
        Field(
            description=f"A positive decimal of at most {QUANTITY_DECIMAL_PLACES} decimal places and at most "
            f'{MAX_QUANTITY} (QuickBooks\' Qty), e.g. "1.5"',
            examples=["1.5"],
        ),
    ]
    unit_price_cents: Annotated[
        int, Field(ge=0, le=MAX_AMOUNT_CENTS, description=f"At most {MAX_AMOUNT_TEXT} (QuickBooks' limit)")
    ]
    tax_rate_percent: Annotated[
        str | None,
        Field(
            description='The line\'s sales tax rate in percent ("13", "14.975"; 0 to 100, at most 4 decimals), '
            "before tax; absent or 0: no tax. The line gets the QuickBooks company's active tax code of that rate "
            "(or the one chosen with PUT .../quickbooks/tax-codes).",
            examples=["13"],
        ),
    ] = None

    @field_validator("tax_rate_percent", mode="before")
    @classmethod
    def _tax_rate(cls, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise ValueError("tax_rate_percent must be a decimal number of percent")
        text = str(value).strip()
        if not re.fullmatch(RATE_PATTERN, text):
            raise ValueError("tax_rate_percent is a percent from 0 to 100 with at most 4 decimals")
        return canonical_rate(text)

    @field_validator("quantity", mode="before")
    @classmethod
    def _quantity_decimal(cls, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise ValueError("quantity must be a decimal number")
        try:
            quantity = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError("quantity must be a decimal number") from exc
        if not quantity.is_finite() or quantity <= 0:
            raise ValueError("quantity must be greater than 0")
        if quantity > MAX_QUANTITY:
            raise ValueError(f"quantity is at most {MAX_QUANTITY} (QuickBooks' limit)")
        if quantity.as_tuple().exponent < -QUANTITY_DECIMAL_PLACES:  # type: ignore[operator]
            raise ValueError(f"quantity allows at most {QUANTITY_DECIMAL_PLACES} decimal places")
        # Plain notation ("1000", never "1E+3"), as QuickBooks and people read it.
        return format(quantity, "f")

    @model_validator(mode="after")
    def _amount_fits_quickbooks(self) -> InvoiceLineIn:
        if line_amount_cents(self.quantity, self.unit_price_cents) > MAX_AMOUNT_CENTS:
            raise ValueError(f"a line's amount (quantity x unit price) is at most {MAX_AMOUNT_TEXT}")
        return self


def line_amount_cents(quantity: str, unit_price_cents: int) -> int:
    """The line's amount as InvoiceLine.amount_cents computes it, exact however large the operands."""
    with localcontext() as context:
        context.prec = 60
        return InvoiceLine(description="", quantity=quantity, unit_price_cents=unit_price_cents).amount_cents


class InvoiceSend(BaseModel):
    """The invoice as the platform sent it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "number": "INV-1001",
                    "client": {"name": "Ada Lovelace", "email": "ada@example.com"},
                    "currency": "USD",
                    "issue_date": "2026-11-24",
                    "due_date": "2026-12-24",
                    "lines": [
                        {"description": "Architecture review", "quantity": "1.5", "unit_price_cents": 12000}
                    ],
                }
            ]
        },
    )

    number: Annotated[
        SafeStr,
        Field(
            min_length=1,
            description="The platform's invoice number; QuickBooks' DocNumber holds at most 21 characters.",
        ),
    ]
    client: ClientIn
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["USD"])]
    issue_date: date
    due_date: date
    lines: Annotated[list[InvoiceLineIn], Field(min_length=1, max_length=750)]
    total_tax_cents: Annotated[
        int | None,
        Field(
            strict=True,
            ge=0,
            le=MAX_AMOUNT_CENTS,
            description="The invoice's total tax as the platform computed it; compared with QuickBooks' after the "
            "sync (absent: the tax of the lines' rates, rounded per rate).",
        ),
    ] = None

    @field_validator("number")
    @classmethod
    def _number_fits_quickbooks(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the invoice number is blank")
        if len(value) > DOC_NUMBER_MAX_LENGTH:
            raise ValueError(
                f"QuickBooks invoice numbers hold at most {DOC_NUMBER_MAX_LENGTH} characters "
                f"({len(value)} given)"
            )
        return value

    @model_validator(mode="after")
    def _tax_needs_taxed_lines(self) -> InvoiceSend:
        if self.total_tax_cents and not any(line.tax_rate_percent not in (None, "0") for line in self.lines):
            raise ValueError("total_tax_cents is more than 0 but no line has a tax_rate_percent above 0")
        return self

    @model_validator(mode="after")
    def _due_after_issue(self) -> InvoiceSend:
        if self.due_date < self.issue_date:
            raise ValueError("due_date is before issue_date")
        return self

    @model_validator(mode="after")
    def _total_fits_quickbooks(self) -> InvoiceSend:
        with localcontext() as context:
            context.prec = 60
            total = self.snapshot().total_cents  # with the tax, given or of the lines' rates
        if total > MAX_AMOUNT_CENTS:
            raise ValueError(f"the invoice's total is at most {MAX_AMOUNT_TEXT}")
        return self

    def snapshot(self) -> InvoiceSnapshot:
        return InvoiceSnapshot(
            number=self.number,
            client_name=self.client.name,
            client_email=self.client.email,
            currency=self.currency,
            issue_date=self.issue_date.isoformat(),
            due_date=self.due_date.isoformat(),
            lines=[
                InvoiceLine(
                    description=line.description,
                    quantity=line.quantity,
                    unit_price_cents=line.unit_price_cents,
                    tax_rate=line.tax_rate_percent,
                )
                for line in self.lines
            ],
            total_tax_cents=self.total_tax_cents,
        )


class QuickBooksBadge(BaseModel):
    """What the invoice's QuickBooks badge shows."""

    synced: bool
    realm_id: str | None = None
    invoice_id: str | None = None
    customer_id: str | None = None


class NotificationPublic(BaseModel):
    id: int
    kind: NotificationKind
    message: str
    action: str | None = None
    invoice_id: str | None = None
    created_at: datetime
    resolved_at: datetime | None = None


class InvoiceSyncPublic(BaseModel):
    invoice_id: str
    number: str
    status: InvoiceStatus
    reason: str | None = None
    currency: str
    total_cents: int
    balance_cents: int | None = None
    quickbooks: QuickBooksBadge
    last_error: str | None = None
    notification: NotificationPublic | None = None
    sent_at: datetime
    synced_at: datetime | None = None
    paid_at: datetime | None = None
    voided_at: datetime | None = None
    updated_at: datetime


class InvoiceAccepted(BaseModel):
    invoice: InvoiceSyncPublic
    duplicate: bool = Field(default=False, description="True when this invoice had been sent before.")
    body_differs: bool = Field(
        default=False,
        description="True when this send's body differs from the first send's: the first one is what is synced "
        "(and shown here); this one changed nothing.",
    )


_SNAPSHOTS = TypeAdapter(InvoiceSnapshot)


def snapshot_json(snapshot: InvoiceSnapshot) -> str:
    """An invoice snapshot as the invoice row keeps it (the body first sent)."""
    return _SNAPSHOTS.dump_json(snapshot).decode()


def snapshot_from_json(text: str) -> InvoiceSnapshot:
    return _SNAPSHOTS.validate_json(text)


class InvoiceList(BaseModel):
    invoices: list[InvoiceSyncPublic]
    next_offset: int | None = None


class TimelineEntryPublic(BaseModel):
    at: datetime
    kind: str
    message: str


class Timeline(BaseModel):
    invoice_id: str
    entries: list[TimelineEntryPublic]


class NotificationList(BaseModel):
    notifications: list[NotificationPublic]


class WebhookAccepted(BaseModel):
    accepted: int = Field(description="Events stored now.")
    duplicates: int = Field(description="Events stored before (a redelivery).")
    unreadable: int = Field(
        default=0,
        description="Events that could not be read: kept verbatim with the delivery, for operators.",
    )


class CompanyCheckPublic(BaseModel):
    code: CheckCode
    severity: CheckSeverity
    message: str


class CompanyPublic(BaseModel):
    """What the last company check read and found (on connect, daily, and on request)."""

    country: str = Field(
        description='CompanyInfo.Country: "US", or a global edition ("CA", "GB", "AU", ...).'
    )
    home_currency: str
    multicurrency: bool
    custom_transaction_numbers: bool
    books_closed_through: date | None = None
    using_sales_tax: bool
    checked_at: datetime | None = None
    checks: list[CompanyCheckPublic] = Field(
        default_factory=list,
        description="Blocking findings first: while one stands, syncing is paused with its words "
        "(`sync_paused_reason`); warnings are shown and syncing goes on.",
    )


class TaxCodePublic(BaseModel):
    id: str
    name: str
    description: str | None = None
    rate_percent: str | None = Field(
        default=None, description="The combined sales rate; null for the US pseudo codes TAX and NON."
    )
    taxable: bool
    zero_rated: bool


TaxCodeId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
TaxRateKey = Annotated[str, Field(pattern=RATE_PATTERN)]


class TaxCodeDefaultsIn(BaseModel):
    """The account's choice of QuickBooks tax codes in its company: replaces the previous choice."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"no_tax": "4", "rates": {"13": "7"}}]},
    )

    no_tax: TaxCodeId | None = Field(
        default=None,
        description="The code for lines without tax (a code of rate 0); null: chosen automatically.",
    )
    rates: Annotated[dict[TaxRateKey, TaxCodeId], Field(max_length=50)] = Field(
        default_factory=dict, description="Per tax rate in percent, the code of that rate to use."
    )


class TaxCodeDefaultsPublic(BaseModel):
    no_tax: str | None = None
    rates: dict[str, str] = Field(default_factory=dict)


class TaxCodesPublic(BaseModel):
    realm_id: str
    checked_at: datetime | None = None
    codes: list[TaxCodePublic] = Field(description="The company's active sales tax codes, as last read.")
    defaults: TaxCodeDefaultsPublic
    no_tax_code: TaxCodePublic | None = Field(
        default=None, description="The code lines without tax get now (the choice, or the automatic one)."
    )
    check_requested: bool | None = Field(
        default=None,
        description="After a choice: whether the company check that applies it (and lifts a block it solves) was "
        "started now; false: the choice is saved and the daily check applies it.",
    )


ConnectionPublic.model_rebuild()


# --- Outbound events ----------------------------------------------------------------------------------------


class PlatformEventPublic(BaseModel):
    """A kept outbound event: what was sent and how delivering it went."""

    id: str = Field(
        description="The event's id (`webhook-id` and the body's `id`), the same on every delivery."
    )
    type: PlatformEventType
    version: int = Field(description="The version of this type's payload.")
    sequence: int = Field(
        description="The event's place among the events of its subject (the invoice, or for connection.* events "
        "the account's connection): it grows with each, so a lower one than the last seen arrived late."
    )
    account_id: str
    invoice_id: str | None = None
    subject: EventSubject
    occurred_at: datetime
    status: PlatformEventStatus
    attempts: int = Field(description="Delivery attempts so far (redeliveries included).")
    last_attempt_at: datetime | None = None
    last_status_code: int | None = Field(
        default=None, description="The platform's answer to the last attempt."
    )
    last_error: str | None = None
    delivered_at: datetime | None = None
    retry_until: datetime = Field(description="Temporal retries a failing delivery until then.")
    redeliveries: int = 0
    payload: dict[str, Any] = Field(description="The body as sent (the webhook's payload).")


class PlatformEventList(BaseModel):
    events: list[PlatformEventPublic]
    next_offset: int | None = None


# --- Needs attention (the platform's support staff) ---------------------------------------------------------


class AttentionItem(BaseModel):
    """Something the platform's support staff may need to act on, across accounts."""

    kind: AttentionKind
    account_id: str
    invoice_id: str | None = None
    number: str | None = Field(default=None, description="The invoice's number.")
    realm_id: str | None = None
    reason: str | None = Field(default=None, description="What happened, in words.")
    since: datetime = Field(description="When it came to this.")
    action: Literal["retry", "void", "reconnect"] = Field(
        description="`retry`: POST .../quickbooks/retry (or POST /v1/attention/retry); `void`: the user removes the "
        "payment in QuickBooks, then voids again; `reconnect`: the user connects QuickBooks again."
    )


class AttentionList(BaseModel):
    items: list[AttentionItem]
    next_offset: int | None = None


class InvoiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    invoice_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class AttentionRetryIn(BaseModel):
    """Retry many invoices: the ones listed, or those of the attention list that match a filter (not both)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"items": [{"account_id": "acme", "invoice_id": "inv-1001"}]},
                {"kind": "sync_failed", "limit": 50},
            ]
        },
    )

    items: Annotated[list[InvoiceRef] | None, Field(max_length=100)] = None
    kind: Literal["sync_failed", "invoice_paused"] | None = None
    account_id: Annotated[str | None, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = (
        None
    )
    limit: Annotated[int, Field(ge=1, le=100)] = 100

    @model_validator(mode="after")
    def _items_or_filter(self) -> AttentionRetryIn:
        if (self.items is None) == (self.kind is None):
            raise ValueError("give either items or kind (a filter), not both")
        if self.items is not None and self.account_id is not None:
            raise ValueError("account_id filters the attention list: give it with kind")
        return self


class AttentionRetryResult(BaseModel):
    account_id: str
    invoice_id: str
    outcome: Literal["retried", "refused"]
    status: InvoiceStatus | None = Field(default=None, description="The invoice's status after asking.")
    error: ErrorBody | None = Field(default=None, description="Why it was refused: the single retry's error.")


class AttentionRetryReport(BaseModel):
    results: list[AttentionRetryResult]
    retried: int
    refused: int

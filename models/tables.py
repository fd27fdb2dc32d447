"""Database tables. Schema changes go through Alembic migrations (migrations/versions)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, LargeBinary, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlmodel import Column, Field, SQLModel
from sqlmodel.sql.sqltypes import AutoString

from models.domain import EventStatus

DEDUPE_KEY_MAX_LENGTH = 255


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; attach a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DedupeKey(TypeDecorator[str]):
    """A dedupe key that fits its column whatever it is built from: a longer one is stored as its digest.

    Keys start with a workflow id, which grows with the ids a client chose (a `:` is `%3A` there, so two 64-character
    ids make a 400-character key). The digest starts with `sha256:`, which no workflow id does, so it never equals a
    key stored as it is; one key always gives one digest, in lookups too.
    """

    impl = AutoString(length=DEDUPE_KEY_MAX_LENGTH)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or len(value) <= DEDUPE_KEY_MAX_LENGTH:
            return value
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class Account(SQLModel, table=True):
    """A platform account and the plan that decides whether it may use QuickBooks."""

    id: str = Field(primary_key=True, max_length=64)
    plan: str = Field(max_length=16)
    quickbooks_addon: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class OAuthState(SQLModel, table=True):
    """A single-use, short-lived OAuth `state`, bound to the account that asked to connect and to the browser
    that opened its start link (both stored hashed)."""

    __tablename__ = "oauth_state"

    state_hash: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # The start link opens once, before this; opening it sets the flow cookie whose value hashes to browser_hash.
    launch_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    launched_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    browser_hash: str | None = Field(default=None, max_length=64)


class QuickBooksGrant(SQLModel, table=True):
    """Tokens from a fresh authorization, waiting for the connection workflow to adopt them."""

    __tablename__ = "quickbooks_grant"

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=64)
    realm_id: str = Field(max_length=32)
    # CompanyInfo.CompanyName, read with these tokens when the callback verified the company.
    company_name: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    access_token_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    refresh_token_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    access_expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    refresh_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    refresh_hard_expires_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    adopted_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # When the connection workflow was told about it; still empty after an outage: the API's relay tells it.
    signalled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class QuickBooksConnection(SQLModel, table=True):
    """An account's QuickBooks connection. Only the connection workflow's activities write the tokens."""

    __tablename__ = "quickbooks_connection"

    account_id: str = Field(primary_key=True, foreign_key="account.id", max_length=64)
    realm_id: str | None = Field(default=None, index=True, max_length=32)
    company_name: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The connection workflow's id (see InvoiceSync.workflow_id: older ones keep `connection-{account}`).
    workflow_id: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    status: str = Field(max_length=24)
    status_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    connected_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    access_token_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    refresh_token_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    token_version: int = 0
    access_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    refresh_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    refresh_hard_expires_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    last_refreshed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_health_check_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    # Change-data-capture sweeps: QuickBooks' own clock for the next window, and how many misses they caught.
    cdc_watermark: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    cdc_last_sweep_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    cdc_caught_total: int = 0
    # Disconnecting: the mode and how many invoices "Disconnect & Void" has to void (outcomes are per invoice).
    disconnect_mode: str | None = Field(default=None, max_length=24)
    disconnect_total: int = 0
    disconnect_started_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    disconnect_finished_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    # The company check (on connect, daily, on request): the company's settings and the findings, as JSON
    # (`qbo.company_settings`), and the blocking findings' words while syncing waits for them.
    company_settings: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    company_checks: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    company_blocked_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    company_checked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # QuickBooks lacked something the stored settings name (a 610 on a create): the next sync reads the company.
    company_stale: bool = False
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class TaxCodeDefault(SQLModel, table=True):
    """An account's choice of QuickBooks tax code in one company: for lines without tax (rate "none") or per rate
    (a canonical percent, "13")."""

    __tablename__ = "quickbooks_tax_default"

    account_id: str = Field(primary_key=True, foreign_key="account.id", max_length=64)
    realm_id: str = Field(primary_key=True, max_length=32)
    rate: str = Field(primary_key=True, max_length=16)
    tax_code_id: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class RealmCacheEntry(SQLModel, table=True):
    """QuickBooks ids remembered per company (customer by email, the service item), so a sync costs one call."""

    __tablename__ = "quickbooks_realm_cache"

    realm_id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=255)
    qbo_id: str = Field(max_length=32)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class InvoiceSync(SQLModel, table=True):
    """The read side of one platform invoice's sync: what the API shows. The invoice workflow writes it."""

    __tablename__ = "invoice_sync"
    __table_args__ = (Index("ix_invoice_sync_realm_qbo_invoice", "realm_id", "qbo_invoice_id"),)

    account_id: str = Field(primary_key=True, foreign_key="account.id", max_length=64)
    invoice_id: str = Field(primary_key=True, max_length=64)
    number: str = Field(max_length=64)
    status: str = Field(max_length=24, index=True)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    currency: str = Field(max_length=3)
    # Money is BIGINT: QuickBooks amounts reach 9,999,999,999.99 (models/bounds.py), beyond a 32-bit integer.
    total_cents: int = Field(sa_column=Column(BigInteger, nullable=False))
    balance_cents: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    client_name: str = Field(sa_column=Column(Text, nullable=False))
    client_email: str = Field(max_length=320)
    realm_id: str | None = Field(default=None, max_length=32)
    qbo_invoice_id: str | None = Field(default=None, max_length=32)
    qbo_customer_id: str | None = Field(default=None, max_length=32)
    qbo_sync_token: int | None = None
    # A VoidOutcome once Disconnect & Void has dealt with this invoice.
    disconnect_outcome: str | None = Field(default=None, max_length=16)
    # Its workflow's id. Stored, because workflows started before ids were made injective keep their old id
    # (`invoice-{account}-{invoice}`): every signal, update and requestid goes to the id kept here.
    workflow_id: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The invoice as it was first sent (InvoiceSnapshot as JSON): a repeated send and the relay start its sync
    # with this body, so the database, the workflow and QuickBooks never disagree.
    snapshot: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # When its workflow was started; empty while Temporal could not be reached (the API's relay starts it).
    workflow_started_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True, index=True)
    )
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    sent_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    synced_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    paid_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    voided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class TimelineEntry(SQLModel, table=True):
    """One line of an invoice's timeline ("Payment confirmed via QuickBooks.")."""

    __tablename__ = "invoice_timeline"
    __table_args__ = (
        Index("ix_invoice_timeline_invoice", "account_id", "invoice_id", "id"),
        UniqueConstraint("dedupe_key", name="uq_invoice_timeline_dedupe_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=64)
    invoice_id: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    kind: str = Field(max_length=32)
    message: str = Field(sa_column=Column(Text, nullable=False))
    # Activities may run twice; the key makes the insert idempotent.
    dedupe_key: str = Field(sa_column=Column(DedupeKey(), nullable=False))


class Notification(SQLModel, table=True):
    """Something the user must see or act on (a failed sync, a connection that needs reconnecting)."""

    __table_args__ = (
        Index("ix_notification_account", "account_id", "id"),
        UniqueConstraint("dedupe_key", name="uq_notification_dedupe_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=64)
    invoice_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=32)
    message: str = Field(sa_column=Column(Text, nullable=False))
    action: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    dedupe_key: str = Field(sa_column=Column(DedupeKey(), nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """A verified webhook POST from Intuit, kept verbatim so nothing Intuit sent is ever lost.

    The body is the exact bytes signed (not text: a signed body may hold NUL, or bytes that are not UTF-8, and
    is still Intuit's). `event_count` events were stored from it; `unreadable_count` could not be read, and
    `parse_error` says where and why (never what they held).
    """

    __tablename__ = "quickbooks_webhook_delivery"

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    event_count: int = 0
    unreadable_count: int = 0
    # When its companies' events workflows were told; still empty after an outage: the API's relay tells them.
    signalled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    parse_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class QuickBooksEvent(SQLModel, table=True):
    """One entity change Intuit told us about (or a CDC sweep found), processed at least once."""

    __tablename__ = "quickbooks_event"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_quickbooks_event_dedupe_key"),
        Index("ix_quickbooks_event_pending", "realm_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=255)
    realm_id: str = Field(max_length=32)
    entity: str = Field(max_length=32)
    entity_id: str = Field(max_length=32)
    operation: str = Field(max_length=16)
    occurred_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    source: str = Field(default="webhook", max_length=16)
    delivery_id: int | None = Field(default=None, foreign_key="quickbooks_webhook_delivery.id")
    status: str = Field(default=EventStatus.PENDING.value, max_length=16)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    processed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class PaymentLink(SQLModel, table=True):
    """Which invoices a QuickBooks payment was applied to, remembered for when it is deleted or voided."""

    __tablename__ = "quickbooks_payment_link"

    realm_id: str = Field(primary_key=True, max_length=32)
    payment_id: str = Field(primary_key=True, max_length=32)
    qbo_invoice_id: str = Field(primary_key=True, max_length=32)


class BudgetCall(SQLModel, table=True):
    """The per-minute log of the shared company budget (qbo/company_budget.py): one row per admitted call,
    written and pruned only by the `qbo_budget_*` functions of migration 0008 (PostgreSQL only)."""

    __tablename__ = "qbo_budget_call"
    __table_args__ = (Index("ix_qbo_budget_call_realm_admitted", "realm_id", "admitted_at"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    realm_id: str = Field(max_length=32)
    admitted_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class BudgetCompany(SQLModel, table=True):
    """A company's row of the shared budget: the calls its minute's log holds, until when it admits nothing after
    a throttle, and until when a release should notify waiters (migration 0008)."""

    __tablename__ = "qbo_budget_company"

    realm_id: str = Field(primary_key=True, max_length=32)
    admitted: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    hold_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    contended_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class PlatformEventRecord(SQLModel, table=True):
    """An outbound event to the platform, kept: what was sent (the exact body), and how delivering it went
    (migration 0010). Its first delivery activity writes it; the API lists it and asks for redeliveries.

    `body` is not encrypted: the `reason` of a failed sync or void may quote a client's name, which this database
    already holds in the clear (`invoice_sync.client_name`, and the same reason in `last_error` and notifications).
    """

    __tablename__ = "platform_event"
    __table_args__ = (
        UniqueConstraint(
            "account_id", "subject_kind", "subject_id", "sequence", name="uq_platform_event_subject_sequence"
        ),
        Index("ix_platform_event_account", "account_id", "occurred_at"),
        Index("ix_platform_event_occurred", "occurred_at"),
    )

    id: str = Field(primary_key=True, max_length=40)  # evt_<hex>, from the workflow's event id
    source_key: str = Field(sa_column=Column(Text, nullable=False))  # the workflow's event id
    type: str = Field(max_length=40)
    version: int
    account_id: str = Field(max_length=64)
    invoice_id: str | None = Field(default=None, max_length=64)
    subject_kind: str = Field(max_length=16)
    subject_id: str = Field(max_length=64)
    # The subject's workflow chain (its first run's id) and that chain's own count: `sequence` is the chain's count
    # on top of the subject's events before the chain, so a later connection workflow of the account goes on
    # counting where the earlier one stopped.
    chain: str = Field(max_length=64)
    chain_sequence: int
    sequence: int
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16)
    attempts: int = 0
    last_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # Until when Temporal keeps retrying the delivery under way (three days from the event or the redelivery).
    retry_until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    redeliveries: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))

"""The domain's words, defined once: invoice and connection statuses and their groups, void outcomes, event
statuses, and the error types workflows branch on. The API, the tables, the activities and the workflows all
import them from here; nowhere else spells these values.
"""

from __future__ import annotations

from enum import StrEnum


class InvoiceStatus(StrEnum):
    NOT_SYNCED = "not_synced"  # sent while QuickBooks was not connected: never synced
    PENDING = "pending"  # accepted, the workflow has not started syncing yet
    SYNCING = "syncing"  # a sync attempt (or one of its automatic retries) is under way
    SYNCED = "synced"  # in QuickBooks, unpaid
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    FAILED = "failed"  # automatic retries exhausted; waits for a manual retry
    PAUSED = "paused"  # the connection cannot be used (expired, plan); resumes on reconnect
    VOIDED = "voided"
    DELETED_IN_QUICKBOOKS = (
        "deleted_in_quickbooks"  # someone deleted it in QuickBooks; nothing left to follow
    )
    DISCONNECTED = "disconnected"  # QuickBooks was disconnected; no longer followed


def payment_status(total_cents: int, balance_cents: int) -> InvoiceStatus:
    """An invoice in QuickBooks: synced (open), partially paid or paid, from its total and balance."""
    if total_cents > 0 and balance_cents <= 0:
        return InvoiceStatus.PAID
    if 0 < balance_cents < total_cents:
        return InvoiceStatus.PARTIALLY_PAID
    return InvoiceStatus.SYNCED


# In QuickBooks and followed there: payments and voids made in QuickBooks are read back.
IN_QUICKBOOKS = frozenset({InvoiceStatus.SYNCED, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAID})
# Nothing more happens to the invoice: its workflow has ended (or is ending).
FINAL_INVOICE_STATUSES = frozenset(
    {InvoiceStatus.VOIDED, InvoiceStatus.DELETED_IN_QUICKBOOKS, InvoiceStatus.DISCONNECTED}
)
# Sent, but QuickBooks is not followed for it and never will be: no workflow runs for it.
UNFOLLOWED_INVOICE_STATUSES = frozenset({InvoiceStatus.NOT_SYNCED}) | FINAL_INVOICE_STATUSES
# Still in the engine's hands: these invoice workflows are told when QuickBooks is disconnected.
OPEN_INVOICE_STATUSES = frozenset(InvoiceStatus) - UNFOLLOWED_INVOICE_STATUSES


class ConnectionStatus(StrEnum):
    NOT_CONNECTED = "not_connected"
    CONNECTING = "connecting"  # authorized at Intuit; the connection workflow has not adopted it yet
    CONNECTED = "connected"
    EXPIRING = "expiring"  # works, but the authorization ends soon: reconnect
    EXPIRED = "expired"  # Intuit refused the tokens (invalid_grant or revoked): reconnect
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


USABLE_CONNECTION_STATUSES = frozenset({ConnectionStatus.CONNECTED, ConnectionStatus.EXPIRING})
# The connection holds a live authorization it still uses (Disconnect & Void voids with it while disconnecting).
AUTHORIZATION_HOLDING_STATUSES = USABLE_CONNECTION_STATUSES | {ConnectionStatus.DISCONNECTING}
# The account is tied to its company: an authorization of another company is refused until it disconnects.
COMPANY_BOUND_STATUSES = AUTHORIZATION_HOLDING_STATUSES | {ConnectionStatus.EXPIRED}
# No authorization at all, now or coming: an invoice sent in these is never synced.
UNCONNECTED_STATUSES = frozenset({ConnectionStatus.NOT_CONNECTED, ConnectionStatus.DISCONNECTED})
# QuickBooks may be usable again without a new authorization from the user (or one is being adopted).
MAY_RESUME_STATUSES = (COMPANY_BOUND_STATUSES - {ConnectionStatus.DISCONNECTING}) | {
    ConnectionStatus.CONNECTING
}


class DisconnectMode(StrEnum):
    DISCONNECT_ONLY = "disconnect_only"
    DISCONNECT_AND_VOID = "disconnect_and_void"


class VoidOutcome(StrEnum):
    """What voiding an invoice in QuickBooks came to (the invoice's own void, or Disconnect & Void)."""

    VOIDED = "voided"
    ALREADY_VOIDED = "already_voided"
    NOT_IN_QUICKBOOKS = "not_in_quickbooks"
    REFUSED = "refused"  # QuickBooks said no (a payment is applied): reported, never forced
    FAILED = "failed"  # QuickBooks could not be asked, or kept failing


# The invoice is not (or no longer) open in QuickBooks.
VOID_DONE = frozenset({VoidOutcome.VOIDED, VoidOutcome.ALREADY_VOIDED, VoidOutcome.NOT_IN_QUICKBOOKS})
VOID_NOT_DONE = frozenset({VoidOutcome.REFUSED, VoidOutcome.FAILED})


class EventStatus(StrEnum):
    """A stored QuickBooks event (from a webhook or a change sweep)."""

    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"  # nothing the engine follows changed
    FAILED = "failed"  # parked for operators: it could not be processed (its reason is kept)


def followed_change(entity: str, operation: str) -> bool:
    """Whether a QuickBooks change can move an invoice the engine follows: any change of an invoice but its
    creation and e-mailing (the engine's own writes), and any change of a payment. Other changes are kept as
    `ignored` when they are stored, so they cost no events workflow, activity or second write."""
    if entity == "Invoice":
        return operation not in ("Create", "Emailed")
    return entity == "Payment"


# Application error types workflows branch on (never on message text).
CONNECTION_UNAVAILABLE = "ConnectionUnavailable"
QUICKBOOKS_REJECTED = "QuickBooksRejected"
DIFFERENT_COMPANY = "DifferentCompany"


class CheckSeverity(StrEnum):
    """How much a finding of the company check matters (the connection status lists them)."""

    BLOCKING = "blocking"  # syncing pauses with this reason until a later check passes
    WARNING = "warning"  # syncing goes on, but does something the user may not expect
    INFO = "info"  # how syncing adapts to the company


class CheckCode(StrEnum):
    """Stable codes of the company check's findings."""

    EDITION = "edition"
    CUSTOM_NUMBERS_OFF = "custom_numbers_off"
    AUTO_APPLY_CREDIT = "auto_apply_credit"
    BOOKS_CLOSED = "books_closed"
    SALES_TAX_OFF = "sales_tax_off"
    AUTOMATED_SALES_TAX = "automated_sales_tax"
    UNTAXED_CODE = "untaxed_code"
    NO_UNTAXED_CODE = "no_untaxed_code"
    DEFAULT_TAX_CODE_UNUSABLE = "default_tax_code_unusable"
    MULTICURRENCY_OFF = "multicurrency_off"
    MULTICURRENCY_ON = "multicurrency_on"


class NotificationKind(StrEnum):
    """What a notification is about (the API's `kind`)."""

    SYNC_FAILED = "sync_failed"
    SYNC_MISMATCH = "sync_mismatch"
    PAUSED = "paused"
    PLAN_PAUSED = "plan_paused"
    VOID_REFUSED = "void_refused"
    CONNECTION_EXPIRING = "connection_expiring"
    CONNECTION_EXPIRED = "connection_expired"
    DELETED_IN_QUICKBOOKS = "deleted_in_quickbooks"
    COMPANY_SETTINGS_BLOCKED = "company_settings_blocked"


class PlatformEventType(StrEnum):
    """The outbound events the platform receives (README "Outbound events")."""

    INVOICE_PAID = "invoice.paid"
    INVOICE_PARTIALLY_PAID = "invoice.partially_paid"
    INVOICE_REOPENED = "invoice.reopened"
    INVOICE_VOIDED = "invoice.voided"
    INVOICE_VOID_FAILED = "invoice.void_failed"
    INVOICE_SYNC_FAILED = "invoice.sync_failed"
    CONNECTION_CONNECTED = "connection.connected"
    CONNECTION_EXPIRING = "connection.expiring"
    CONNECTION_EXPIRED = "connection.expired"
    CONNECTION_SYNC_PAUSED = "connection.sync_paused"
    CONNECTION_SYNC_RESUMED = "connection.sync_resumed"
    CONNECTION_DISCONNECTED = "connection.disconnected"


# The version of each event type's payload: raised when a type's `data` changes incompatibly (a field removed or
# its meaning changed), so the platform can tell which shape it holds. Adding a field keeps the version.
PLATFORM_EVENT_VERSIONS: dict[PlatformEventType, int] = {event_type: 1 for event_type in PlatformEventType}


class PlatformEventStatus(StrEnum):
    """Where delivering a kept outbound event stands."""

    PENDING = "pending"  # kept, not attempted yet
    DELIVERED = "delivered"  # the platform answered 2xx
    FAILING = "failing"  # the last attempt failed; Temporal retries it until `retry_until`
    NOT_SENT = "not_sent"  # PLATFORM_EVENTS_URL was not set when it was due; redeliver once it is


class EventSubject(StrEnum):
    """What an outbound event is about; its `sequence` counts the events of that one subject."""

    INVOICE = "invoice"
    CONNECTION = "connection"


class AttentionKind(StrEnum):
    """What the cross-account "needs attention" list shows the platform's support staff."""

    SYNC_FAILED = "sync_failed"
    INVOICE_PAUSED = "invoice_paused"
    VOID_REFUSED = "void_refused"
    CONNECTION_EXPIRING = "connection_expiring"
    CONNECTION_EXPIRED = "connection_expired"

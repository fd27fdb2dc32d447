"""The invoice workflow: one per platform invoice, from send to paid or voided in QuickBooks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.invoice_sync import InvoiceSyncActivities
    from activities.store import StoreActivities
    from models.domain import (
        CONNECTION_UNAVAILABLE,
        FINAL_INVOICE_STATUSES,
        IN_QUICKBOOKS,
        VOID_DONE,
        VOID_NOT_DONE,
        DisconnectMode,
        InvoiceStatus,
        VoidOutcome,
    )
    from workflows import search_attributes
    from workflows.common import PlatformEventOutbox, should_continue_as_new
    from workflows.messages import (
        ConnectionChange,
        InvoiceObservation,
        InvoiceProgress,
        InvoiceRecord,
        InvoiceStatusView,
        InvoiceWorkflowInput,
        InvoiceWorkflowResult,
        NotificationItem,
        PauseInput,
        PlatformEvent,
        RetrySyncRequest,
        SyncInvoiceInput,
        SyncInvoiceResult,
        TimelineItem,
        VoidAccepted,
        VoidInvoiceInput,
        VoidInvoiceResult,
        VoidRequest,
    )

# The first attempt plus up to 3 automatic retries, with backoff. Validation faults and a missing
# connection are not retried: no retry can fix them.
SYNC_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=3.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=4,
    non_retryable_error_types=["QuickBooksRejected", "ConnectionUnavailable"],
)
# Long enough to wait out QuickBooks throttling inside the activity (which never counts as a failure).
SYNC_START_TO_CLOSE = timedelta(minutes=30)
# The activity heartbeats every few seconds; silence this long means its worker died mid-call.
QBO_HEARTBEAT_TIMEOUT = timedelta(seconds=15)
STORE_TIMEOUT = timedelta(seconds=30)
STORE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
# A sync that found the connection unusable, which is usable again by the time it looks, tries again this soon.
RESUME_DELAY = timedelta(seconds=2)
# A paused invoice re-checks its connection this often, in case a resume signal was missed.
PAUSE_RECHECK_INTERVAL = timedelta(hours=6)


@workflow.defn
class InvoiceWorkflow:
    """Syncs one platform invoice to QuickBooks and follows it until it is voided (or QuickBooks is disconnected).

    Id: `invoice:{account_id}:{invoice_id}`, each part percent-encoded (workflows/ids.py).
    Signals:
      - `retry_sync` (RetrySyncRequest): retry a `failed` sync now (also what the API's manual retry sends).
      - `quickbooks_invoice_changed` (InvoiceObservation): QuickBooks' current state of the invoice.
      - `connection_changed` (ConnectionChange): the account's connection resumed, or was disconnected.
    Updates:
      - `request_void` (VoidRequest) -> VoidAccepted: void the invoice, in QuickBooks too.
    Queries:
      - `status` -> InvoiceStatusView.
    """

    @workflow.init
    def __init__(self, request: InvoiceWorkflowInput) -> None:
        # From the input, before any handler runs: a signal or update delivered with the start of a run (signal-
        # with-start, or right after a continue-as-new) acts on this run's progress, never on a blank one.
        self._progress = request.progress or InvoiceProgress()
        self._account_id = request.account_id
        self._invoice_id = request.invoice_id
        self._snapshot = request.snapshot
        self._outbox = PlatformEventOutbox()

    @workflow.run
    async def run(self, request: InvoiceWorkflowInput) -> InvoiceWorkflowResult:
        for event in request.undelivered_events:
            self._outbox.send(event)

        while self._progress.status not in FINAL_INVOICE_STATUSES:
            if should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    InvoiceWorkflowInput(
                        account_id=self._account_id,
                        invoice_id=self._invoice_id,
                        snapshot=self._snapshot,
                        progress=self._progress,
                        undelivered_events=self._outbox.hand_over(),
                    )
                )
            await self._step()

        await self._outbox.drain()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return InvoiceWorkflowResult(
            status=self._progress.status, qbo_invoice_id=self._progress.qbo_invoice_id
        )

    async def _step(self) -> None:
        """One move of the state machine; every branch either acts or waits for something to act on."""
        progress = self._progress
        if progress.disconnect_mode is not None:
            await self._disconnected(progress.disconnect_mode)
        elif progress.void_requested and (
            progress.status != InvoiceStatus.PAUSED or not self._may_be_in_quickbooks()
        ):
            await self._void()
        elif progress.status in (InvoiceStatus.PENDING, InvoiceStatus.SYNCING):
            await self._sync()
        elif progress.status == InvoiceStatus.FAILED:
            await self._wait_for(lambda: progress.retry_requested)
            if progress.retry_requested and not progress.void_requested:
                progress.retry_requested = False
                progress.manual_retries += 1
                await self._record(
                    InvoiceStatus.SYNCING,
                    timeline=self._timeline(
                        "retry",
                        "Manual retry of the QuickBooks sync requested.",
                        key=str(progress.manual_retries),
                    ),
                )
        elif progress.status == InvoiceStatus.PAUSED:
            await self._wait_while_paused()
        elif progress.status in IN_QUICKBOOKS:
            await self._wait_for(lambda: bool(progress.pending_observations))
            while progress.pending_observations and not progress.void_requested:
                await self._apply(progress.pending_observations.pop(0))

    # --- Sync --------------------------------------------------------------------------------------------

    async def _sync(self) -> None:
        snapshot = self._snapshot
        progress = self._progress
        may_exist = progress.create_attempted
        progress.create_attempted = True
        try:
            result: SyncInvoiceResult = await workflow.execute_activity_method(
                InvoiceSyncActivities.sync_invoice,
                SyncInvoiceInput(
                    account_id=self._account_id,
                    invoice_id=self._invoice_id,
                    workflow_id=workflow.info().workflow_id,
                    snapshot=snapshot,
                    generation=progress.manual_retries,
                    may_exist=may_exist,
                ),
                start_to_close_timeout=SYNC_START_TO_CLOSE,
                heartbeat_timeout=QBO_HEARTBEAT_TIMEOUT,
                retry_policy=SYNC_RETRY_POLICY,
            )
        except ActivityError as err:
            if _error_type(err) == CONNECTION_UNAVAILABLE:
                await self._pause(_reason(err), resume_status=InvoiceStatus.SYNCING)
                return
            await self._sync_failed(_reason(err))
            return

        progress.realm_id = result.realm_id
        progress.qbo_invoice_id = result.qbo_invoice_id
        progress.qbo_customer_id = result.qbo_customer_id
        progress.qbo_sync_token = result.sync_token
        progress.total_cents = result.total_cents
        progress.balance_cents = result.balance_cents
        progress.last_error = None
        await self._record(
            _payment_status(result.total_cents, result.balance_cents),
            timeline=self._timeline(
                "synced", f"Synced to QuickBooks as invoice {snapshot.number}.", key=result.qbo_invoice_id
            ),
            clear_last_error=True,
            resolve=["sync_failed"],
        )
        if result.mismatch is not None:
            # In QuickBooks, but not as the platform sent it: said, never silently kept.
            progress.last_error = result.mismatch
            await self._record(
                progress.status,
                timeline=self._timeline("sync_mismatch", result.mismatch, key=result.qbo_invoice_id),
                notification=NotificationItem(
                    kind="sync_mismatch",
                    message=f"Invoice {snapshot.number} differs in QuickBooks: {result.mismatch}",
                    dedupe_key=f"{workflow.info().workflow_id}/sync_mismatch/{result.qbo_invoice_id}",
                ),
            )

    async def _sync_failed(self, reason: str) -> None:
        snapshot = self._snapshot
        self._progress.last_error = reason
        generation = str(self._progress.manual_retries)
        await self._record(
            InvoiceStatus.FAILED,
            timeline=self._timeline("sync_failed", f"Sync to QuickBooks failed: {reason}", key=generation),
            notification=NotificationItem(
                kind="sync_failed",
                message=f"Invoice {snapshot.number} could not be synced to QuickBooks: {reason}",
                dedupe_key=f"{workflow.info().workflow_id}/sync_failed/{generation}",
                action="retry",
            ),
        )
        self._emit("invoice.sync_failed", key=generation, reason=reason)

    async def _pause(self, reason: str, *, resume_status: InvoiceStatus) -> None:
        """Wait for the connection without spending retries; `resume_status` is where to carry on."""
        result = await workflow.execute_activity_method(
            StoreActivities.pause_invoice,
            PauseInput(account_id=self._account_id, invoice_id=self._invoice_id, reason=reason),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY_POLICY,
        )
        if result.resume_now:
            # The connection came back (was adopted, reconnected) while we were failing: try again shortly,
            # without spending a retry. Short, because a user who just connected is watching.
            await workflow.sleep(RESUME_DELAY)
            return
        if self._progress.status != InvoiceStatus.PAUSED:
            self._progress.resume_status = resume_status
        self._progress.status = InvoiceStatus.PAUSED
        self._progress.last_error = reason
        self._set_search_status()

    async def _wait_while_paused(self) -> None:
        """Wait for the connection to come back; any wake-up (or the periodic re-check) asks the database."""
        progress = self._progress
        # A void of an invoice that may be in QuickBooks has to wait for the connection like everything else.
        await self._wait_for(
            lambda: progress.resume_requested or progress.retry_requested,
            PAUSE_RECHECK_INTERVAL,
            wake_on_void=not self._may_be_in_quickbooks(),
        )
        if progress.disconnect_mode is not None or (
            progress.void_requested and not self._may_be_in_quickbooks()
        ):
            return
        progress.resume_requested = progress.retry_requested = False
        check = await workflow.execute_activity_method(
            StoreActivities.pause_invoice,
            PauseInput(
                account_id=self._account_id, invoice_id=self._invoice_id, reason=progress.last_error or ""
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY_POLICY,
        )
        if check.resume_now:
            progress.last_error = None
            resume_status, progress.resume_status = progress.resume_status or InvoiceStatus.SYNCING, None
            await self._record(
                resume_status,
                timeline=self._timeline(
                    "resumed",
                    "QuickBooks can be used again: syncing resumed.",
                    key=self._occurrence(),
                ),
                clear_last_error=True,
            )

    # --- Payments ----------------------------------------------------------------------------------------

    async def _apply(self, observation: InvoiceObservation) -> None:
        progress = self._progress
        if observation.qbo_invoice_id != progress.qbo_invoice_id:
            return
        if observation.sync_token <= progress.qbo_sync_token and not observation.deleted:
            return  # older than what we know: a redelivery or an out-of-order event
        progress.qbo_sync_token = observation.sync_token
        key = str(observation.sync_token)
        if observation.deleted:
            reason = "The invoice was deleted in QuickBooks; it is no longer followed."
            progress.last_error = reason
            await self._record(
                InvoiceStatus.DELETED_IN_QUICKBOOKS,
                timeline=self._timeline("deleted", "Deleted in QuickBooks.", key=key),
                notification=NotificationItem(
                    kind="deleted_in_quickbooks",
                    message=f"Invoice {self._snapshot.number} was deleted in QuickBooks.",
                    dedupe_key=f"{workflow.info().workflow_id}/deleted",
                ),
            )
            return
        if observation.voided:
            progress.total_cents = progress.balance_cents = 0
            await self._record(
                InvoiceStatus.VOIDED, timeline=self._timeline("voided", "Voided in QuickBooks.", key=key)
            )
            self._emit("invoice.voided", key=key, source="quickbooks")
            return

        previous_status, previous_balance = progress.status, progress.balance_cents
        progress.total_cents = observation.total_cents
        progress.balance_cents = observation.balance_cents
        status = _payment_status(observation.total_cents, observation.balance_cents)
        if status == previous_status and observation.balance_cents == previous_balance:
            await self._record(status)  # nothing the user sees changed; the stored SyncToken did
            return
        timeline: TimelineItem | None = None
        event: tuple[str, dict[str, Any]] | None = None
        if status == InvoiceStatus.PAID:
            timeline = self._timeline("paid", "Payment confirmed via QuickBooks.", key=key)
            event = ("invoice.paid", {})
        elif status == InvoiceStatus.PARTIALLY_PAID:
            paid = observation.total_cents - observation.balance_cents
            timeline = self._timeline(
                "partially_paid",
                f"Partial payment recorded in QuickBooks: {_money(paid)} of {_money(observation.total_cents)} "
                f"{self._snapshot.currency} paid.",
                key=key,
            )
            event = ("invoice.partially_paid", {"paid_cents": paid})
        elif previous_status in (InvoiceStatus.PAID, InvoiceStatus.PARTIALLY_PAID):
            timeline = self._timeline(
                "reopened", "Payment removed in QuickBooks: the invoice is open again.", key=key
            )
            event = ("invoice.reopened", {})
        await self._record(status, timeline=timeline)
        if event is not None:
            self._emit(event[0], key=key, **event[1])

    # --- Void --------------------------------------------------------------------------------------------

    async def _void(self) -> None:
        progress = self._progress
        snapshot = self._snapshot
        if not self._may_be_in_quickbooks():
            await self._voided("Voided. It had not been synced to QuickBooks.")
            return
        try:
            result: VoidInvoiceResult = await workflow.execute_activity_method(
                InvoiceSyncActivities.void_invoice,
                VoidInvoiceInput(
                    account_id=self._account_id,
                    invoice_id=self._invoice_id,
                    workflow_id=workflow.info().workflow_id,
                    doc_number=snapshot.number,
                    qbo_invoice_id=progress.qbo_invoice_id,
                    client_email=snapshot.client_email,
                    currency=snapshot.currency,
                    issue_date=snapshot.issue_date,
                ),
                start_to_close_timeout=SYNC_START_TO_CLOSE,
                heartbeat_timeout=QBO_HEARTBEAT_TIMEOUT,
                retry_policy=SYNC_RETRY_POLICY,
            )
        except ActivityError as err:
            if _error_type(err) == CONNECTION_UNAVAILABLE:
                await self._pause(
                    f"The void waits for QuickBooks: {_reason(err)}", resume_status=progress.status
                )
                return
            result = VoidInvoiceResult(
                outcome=VoidOutcome.FAILED, reason=f"Voiding in QuickBooks failed: {_reason(err)}"
            )

        if result.outcome in VOID_NOT_DONE:
            progress.void_requested = False
            reason = result.reason or "QuickBooks refused to void the invoice."
            progress.last_error = reason
            attempt = self._occurrence()
            await self._record(
                progress.status,
                timeline=self._timeline("void_refused", reason, key=attempt),
                notification=NotificationItem(
                    kind="void_refused",
                    message=reason,
                    dedupe_key=f"{workflow.info().workflow_id}/void_refused/{attempt}",
                ),
            )
            self._emit("invoice.void_failed", key=attempt, reason=reason)
            return
        if result.outcome == VoidOutcome.NOT_IN_QUICKBOOKS:
            await self._voided("Voided. It was not in QuickBooks.")
        else:
            await self._voided("Voided in QuickBooks.")

    async def _voided(self, message: str) -> None:
        self._progress.void_requested = False
        self._progress.balance_cents = 0
        await self._record(
            InvoiceStatus.VOIDED,
            timeline=self._timeline("voided", message),
            clear_last_error=True,
            resolve=["sync_failed"],
        )
        self._emit("invoice.voided", source="platform")

    async def _disconnected(self, mode: str) -> None:
        """QuickBooks was disconnected; with Disconnect & Void, record what happened to this invoice there."""
        progress = self._progress
        outcome, reason = progress.disconnect_void_outcome, progress.disconnect_reason
        progress.disconnect_mode = progress.disconnect_void_outcome = progress.disconnect_reason = None
        if outcome in VOID_DONE:
            progress.balance_cents = 0
            message = (
                "QuickBooks was disconnected (Disconnect & Void); the invoice was no longer in QuickBooks."
                if outcome == VoidOutcome.NOT_IN_QUICKBOOKS
                else "Voided in QuickBooks (Disconnect & Void)."
            )
            await self._record(InvoiceStatus.VOIDED, timeline=self._timeline("voided", message))
            self._emit("invoice.voided", source="disconnect_and_void")
            return
        if outcome in VOID_NOT_DONE:
            progress.last_error = reason
            message = f"QuickBooks was disconnected (Disconnect & Void), but the invoice was not voided there: {reason}"
        elif mode == DisconnectMode.DISCONNECT_AND_VOID and self._may_be_in_quickbooks():
            message = "QuickBooks was disconnected (Disconnect & Void) before this invoice's sync finished."
        else:
            message = "QuickBooks was disconnected; this invoice is no longer synced."
        await self._record(InvoiceStatus.DISCONNECTED, timeline=self._timeline("disconnected", message))

    # --- Messages ----------------------------------------------------------------------------------------

    @workflow.signal
    def retry_sync(self, request: RetrySyncRequest) -> None:
        if self._progress.status in (InvoiceStatus.FAILED, InvoiceStatus.PAUSED):
            self._progress.retry_requested = True

    @workflow.signal
    def quickbooks_invoice_changed(self, observation: InvoiceObservation) -> None:
        self._progress.pending_observations.append(observation)

    @workflow.signal
    def connection_changed(self, change: ConnectionChange) -> None:
        if change.disconnect_mode is not None:
            # Disconnect & Void tells an invoice what it did, and the disconnect's fan-out to every invoice
            # follows without an outcome: what one told is kept, never replaced by a later silence.
            progress = self._progress
            progress.disconnect_mode = change.disconnect_mode
            if change.void_outcome is not None:
                progress.disconnect_void_outcome = change.void_outcome
                progress.disconnect_reason = change.reason
        elif change.usable:
            self._progress.resume_requested = True

    @workflow.update
    def request_void(self, request: VoidRequest) -> VoidAccepted:
        self._progress.void_requested = True
        return VoidAccepted(status=self._progress.status)

    @request_void.validator
    def _validate_void(self, request: VoidRequest) -> None:
        if self._progress.status in FINAL_INVOICE_STATUSES:
            raise ValueError(f"the invoice is already {self._progress.status.value}")

    @workflow.query
    def status(self) -> InvoiceStatusView:
        progress = self._progress
        return InvoiceStatusView(
            account_id=self._account_id,
            invoice_id=self._invoice_id,
            number=self._snapshot.number,
            status=progress.status,
            realm_id=progress.realm_id,
            qbo_invoice_id=progress.qbo_invoice_id,
            total_cents=progress.total_cents,
            balance_cents=progress.balance_cents,
            last_error=progress.last_error,
            manual_retries=progress.manual_retries,
            void_requested=progress.void_requested,
        )

    # --- Helpers -----------------------------------------------------------------------------------------

    async def _wait_for(
        self, condition: Callable[[], bool], within: timedelta | None = None, *, wake_on_void: bool = True
    ) -> bool:
        """Wait for the condition, a void request, a disconnect or a due continue-as-new. False on timeout."""
        progress = self._progress

        def woken() -> bool:
            return (
                condition()
                or (wake_on_void and progress.void_requested)
                or progress.disconnect_mode is not None
                or should_continue_as_new()
            )

        try:
            await workflow.wait_condition(woken, timeout=within)
        except TimeoutError:
            return False
        return True

    async def _record(
        self,
        status: InvoiceStatus,
        *,
        timeline: TimelineItem | None = None,
        notification: NotificationItem | None = None,
        clear_last_error: bool = False,
        resolve: list[str] | None = None,
    ) -> None:
        progress = self._progress
        progress.status = status
        await workflow.execute_activity_method(
            StoreActivities.record_invoice,
            InvoiceRecord(
                account_id=self._account_id,
                invoice_id=self._invoice_id,
                status=status,
                realm_id=progress.realm_id,
                qbo_invoice_id=progress.qbo_invoice_id,
                qbo_customer_id=progress.qbo_customer_id,
                total_cents=progress.total_cents,
                balance_cents=progress.balance_cents,
                qbo_sync_token=progress.qbo_sync_token if progress.qbo_sync_token >= 0 else None,
                last_error=None if clear_last_error else progress.last_error,
                clear_last_error=clear_last_error,
                timeline=timeline,
                notification=notification,
                resolve_notification_kinds=resolve or [],
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY_POLICY,
        )
        self._set_search_status()

    def _set_search_status(self) -> None:
        updates = [search_attributes.SYNC_STATUS.value_set(self._progress.status.value)]
        if self._progress.realm_id:
            updates.append(search_attributes.REALM_ID.value_set(self._progress.realm_id))
        workflow.upsert_search_attributes(updates)

    def _timeline(self, kind: str, message: str, *, key: str = "") -> TimelineItem:
        return TimelineItem(
            kind=kind, message=message, dedupe_key=f"{workflow.info().workflow_id}/{kind}/{key}"
        )

    def _emit(self, event_type: str, *, key: str = "", **data: Any) -> None:
        """Start delivering an event to the platform without waiting for it (awaited before completing)."""
        progress = self._progress
        snapshot = self._snapshot
        event = PlatformEvent(
            event_id=f"{workflow.info().workflow_id}/{event_type}/{key}",
            type=event_type,
            account_id=self._account_id,
            invoice_id=self._invoice_id,
            occurred_at=workflow.now(),
            data={
                "number": snapshot.number,
                "status": progress.status.value,
                "qbo_invoice_id": progress.qbo_invoice_id,
                "realm_id": progress.realm_id,
                "total_cents": progress.total_cents,
                "balance_cents": progress.balance_cents,
                **data,
            },
        )
        self._outbox.send(event)

    def _occurrence(self) -> str:
        """A key for something that may happen again (a refusal, a resumption), unique in this workflow."""
        self._progress.occurrences += 1
        return f"n{self._progress.occurrences}"

    def _may_be_in_quickbooks(self) -> bool:
        return self._progress.qbo_invoice_id is not None or self._progress.create_attempted


def _payment_status(total_cents: int, balance_cents: int) -> InvoiceStatus:
    if total_cents > 0 and balance_cents <= 0:
        return InvoiceStatus.PAID
    if 0 < balance_cents < total_cents:
        return InvoiceStatus.PARTIALLY_PAID
    return InvoiceStatus.SYNCED


def _error_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _reason(err: ActivityError) -> str:
    """A human-readable reason from an activity failure, never a stack trace.

    The FailureReason in the error's details when it has one (encrypted; it may quote QuickBooks), else the
    message (codes and ids only, or a failure recorded before reasons travelled in the details).
    """
    cause = err.cause
    if isinstance(cause, ActivityTimeoutError):
        return "QuickBooks did not answer in time."
    if isinstance(cause, ApplicationError):
        # Details arrive as plain JSON values: a FailureReason is a dict with its field.
        for detail in cause.details:
            if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
                return str(detail["reason"])
    if isinstance(cause, FailureError) and cause.message:
        return cause.message
    return str(err)


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"

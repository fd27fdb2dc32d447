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
        payment_status,
    )
    from workflows import descriptions, search_attributes
    from workflows.common import PlatformEventOutbox, should_continue_as_new
    from workflows.messages import (
        OPERATOR_READ,
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
        ReadInvoiceInput,
        RereadRequest,
        RereadResult,
        RetryAccepted,
        RetrySyncRequest,
        SyncInvoiceInput,
        TimelineItem,
        VoidAccepted,
        VoidInvoiceInput,
        VoidInvoiceResult,
        VoidRequest,
        synced_timeline,
    )

# What no retry can fix: QuickBooks refused the invoice (validation), or there is no usable connection.
NOT_RETRIED = ("QuickBooksRejected", "ConnectionUnavailable")
# The first attempt plus up to 3 automatic retries, with backoff. Validation faults and a missing
# connection are not retried: no retry can fix them.
SYNC_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=3.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=4,
    non_retryable_error_types=list(NOT_RETRIED),
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
# A first sync reads `syncing` from its first attempt on (it read `pending` until it ended); the read side's status
# is written by the attempt itself, the search attribute here. Workflows started before keep their old sequence.
SYNCING_FROM_FIRST_ATTEMPT_PATCH = "syncing-from-first-attempt"
# From version 1 (workflows/messages.py) the sync activity also records the synced invoice (status, timeline, the
# failure notification resolved): two workflow tasks and one activity for a sync, instead of three and two; the
# read side's other writes are local activities (`_store`). A local activity for the sync itself (one workflow task,
# 6 events) was tried and taken back: while it runs the workflow task stays open, so an update (a void, a retry)
# waited up to 8 s for the task's renewal and the API's 5 s wait answered 503; a shorter task timeout timed tasks
# out under load and ran attempts again (bench/README.md, "The engine's own cost").
RECORDING_SYNC_VERSION = 1
# How a failed local activity is raised: its own error (an ApplicationError, a timeout), not an ActivityError.
LOCAL_ACTIVITY_FAILURES = (ActivityError, ApplicationError, ActivityTimeoutError)
# An operator's re-read waits for QuickBooks a little, not for ever: the operator is watching and can ask again.
REREAD_TIMEOUT = timedelta(minutes=2)
REREAD_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=["ConnectionUnavailable"],
)


@workflow.defn
class InvoiceWorkflow:
    """Syncs one platform invoice to QuickBooks and follows it until it is voided (or QuickBooks is disconnected).

    Id: `invoice:{account_id}:{invoice_id}`, each part percent-encoded (workflows/ids.py).
    Signals:
      - `retry_sync` (RetrySyncRequest): as the update of that name, silently (kept for older senders).
      - `quickbooks_invoice_changed` (InvoiceObservation): QuickBooks' current state of the invoice.
      - `connection_changed` (ConnectionChange): the account's connection resumed, or was disconnected.
    Updates (operators' actions; each refuses, in words, what makes no sense in the invoice's state; input `{}`):
      - `retry_sync` (RetrySyncRequest) -> RetryAccepted: retry a `failed` sync now (what the API's manual retry
        sends); a `paused` invoice checks its connection again.
      - `request_void` (VoidRequest) -> VoidAccepted: void the invoice, in QuickBooks too (what the API's void
        sends).
      - `reread_from_quickbooks` (RereadRequest) -> RereadResult: read the invoice's balance and status from
        QuickBooks now (paid, partially paid, voided, deleted there) and apply them.
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
        self._version = request.version
        self._outbox = PlatformEventOutbox()
        # Observations applied by this run: a re-read waits until its own is (they are applied in order).
        self._applied = 0

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
                        version=self._version,
                    )
                )
            await self._step()

        self._show()
        await self._outbox.drain()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return InvoiceWorkflowResult(
            status=self._progress.status, qbo_invoice_id=self._progress.qbo_invoice_id
        )

    async def _step(self) -> None:
        """One move of the state machine; every branch either acts or waits for something to act on."""
        progress = self._progress
        self._show()
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
                self._applied += 1

    # --- Sync --------------------------------------------------------------------------------------------

    async def _sync(self) -> None:
        snapshot = self._snapshot
        progress = self._progress
        may_exist = progress.create_attempted
        progress.create_attempted = True
        recording = self._version >= RECORDING_SYNC_VERSION
        if progress.status == InvoiceStatus.PENDING and (
            recording or workflow.patched(SYNCING_FROM_FIRST_ATTEMPT_PATCH)
        ):
            progress.status = InvoiceStatus.SYNCING
            if not (recording and self._search_status() == InvoiceStatus.SYNCING.value):
                self._set_search_status()  # (a workflow started as `syncing` reads it already)
        request = SyncInvoiceInput(
            account_id=self._account_id,
            invoice_id=self._invoice_id,
            workflow_id=workflow.info().workflow_id,
            snapshot=snapshot,
            generation=progress.manual_retries,
            may_exist=may_exist,
            record_synced=recording,  # from version 1 the sync activity records the synced invoice too
        )
        try:
            result = await workflow.execute_activity_method(
                InvoiceSyncActivities.sync_invoice,
                request,
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
        if result.recorded:
            progress.status = payment_status(result.total_cents, result.balance_cents)
            self._set_search_status()
        else:
            await self._record(
                payment_status(result.total_cents, result.balance_cents),
                timeline=synced_timeline(workflow.info().workflow_id, snapshot.number, result.qbo_invoice_id),
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
        progress = self._progress
        before = (progress.status, progress.resume_status, progress.last_error, progress.retry_requested)
        # Paused here before the database reads `paused`, as `_record` does for every other status: a Retry the user
        # presses on seeing `paused` reaches a workflow that reads paused too, not one still reading `syncing` until
        # the activity's result comes back (its update was refused as "a sync is already under way").
        if progress.status != InvoiceStatus.PAUSED:
            progress.resume_status = resume_status
        progress.status = InvoiceStatus.PAUSED
        progress.last_error = reason
        result = await workflow.execute_activity_method(
            StoreActivities.pause_invoice,
            PauseInput(account_id=self._account_id, invoice_id=self._invoice_id, reason=reason),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY_POLICY,
        )
        if result.resume_now:
            # The connection came back (was adopted, reconnected) while we were failing: try again shortly,
            # without spending a retry (a Retry pressed meanwhile is this). Short: a user who just connected is
            # watching. The database never read `paused`.
            progress.status, progress.resume_status, progress.last_error, progress.retry_requested = before
            await workflow.sleep(RESUME_DELAY)
            return
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
        if observation.sync_token < progress.qbo_sync_token or (
            observation.sync_token == progress.qbo_sync_token
            and not observation.deleted
            and observation.source != OPERATOR_READ
        ):
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
        status = payment_status(observation.total_cents, observation.balance_cents)
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
        """Kept for senders of the signal (older API processes, scripts); the update of the same name says why it
        refuses, where this signal can only log it."""
        refused = self._why_not_retryable()
        if refused is not None:
            workflow.logger.info("retry_sync signal ignored: %s", refused)
            return
        self._progress.retry_requested = True

    @workflow.update(name="retry_sync")
    def retry(self, request: RetrySyncRequest | None = None) -> RetryAccepted:
        """Retry a failed sync now; for a paused invoice, check its connection again now."""
        progress = self._progress
        already = progress.retry_requested
        progress.retry_requested = True
        if progress.status == InvoiceStatus.PAUSED:
            return RetryAccepted(
                status=progress.status,
                already_requested=already,
                message="The paused invoice checks its QuickBooks connection again now; it syncs as soon as "
                "QuickBooks can be used.",
            )
        retry = progress.manual_retries + 1
        return RetryAccepted(
            status=progress.status,
            retry=retry,
            already_requested=already,
            message=f"Manual retry {retry} of the QuickBooks sync "
            + ("was already requested; it starts now." if already else "requested; it starts now."),
        )

    @retry.validator
    def _validate_retry(self, request: RetrySyncRequest | None = None) -> None:
        refused = self._why_not_retryable()
        if refused is not None:
            raise ValueError(refused)

    def _why_not_retryable(self) -> str | None:
        """Why a manual retry makes no sense now, in an operator's words (never personal data); None: it does."""
        progress = self._progress
        status = progress.status
        if progress.disconnect_mode is not None or status == InvoiceStatus.DISCONNECTED:
            return "QuickBooks was disconnected: this invoice is no longer synced."
        if status == InvoiceStatus.DELETED_IN_QUICKBOOKS:
            return "The invoice was deleted in QuickBooks: it is no longer followed, so there is nothing to retry."
        if status == InvoiceStatus.VOIDED or (progress.void_requested and status != InvoiceStatus.PAUSED):
            return "The invoice is voided (or being voided): there is nothing to sync."
        if status in (InvoiceStatus.PENDING, InvoiceStatus.SYNCING):
            return (
                f"A sync is already under way (status {status.value}): its automatic retries follow on their own; "
                "retry once it has failed."
            )
        if status in IN_QUICKBOOKS:
            return (
                f"The invoice is already in QuickBooks (status {status.value}): there is nothing to retry. To read "
                "its balance and status from QuickBooks again, use the reread_from_quickbooks update."
            )
        if status not in (InvoiceStatus.FAILED, InvoiceStatus.PAUSED):
            return f"Only a failed or paused sync can be retried; this invoice is {status.value}."
        return None

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
    def request_void(self, request: VoidRequest | None = None) -> VoidAccepted:
        self._progress.void_requested = True
        return VoidAccepted(status=self._progress.status)

    @request_void.validator
    def _validate_void(self, request: VoidRequest | None = None) -> None:
        if self._progress.status in FINAL_INVOICE_STATUSES:
            raise ValueError(
                f"The invoice is already {self._progress.status.value}: there is nothing to void."
            )

    @workflow.update
    async def reread_from_quickbooks(self, request: RereadRequest | None = None) -> RereadResult:
        """Read the invoice from QuickBooks now and apply what it holds (a payment, a void, a deletion that no
        webhook or sweep brought); answers once it is applied."""
        progress = self._progress
        realm_id, qbo_invoice_id = progress.realm_id, progress.qbo_invoice_id
        if realm_id is None or qbo_invoice_id is None:  # the validator refuses it; never a failed task
            raise ApplicationError(
                "The invoice is not in QuickBooks.", type="NotInQuickBooks", non_retryable=True
            )
        previous = (progress.status, progress.balance_cents)
        try:
            observation = await workflow.execute_activity_method(
                InvoiceSyncActivities.read_invoice,
                ReadInvoiceInput(
                    account_id=self._account_id, realm_id=realm_id, qbo_invoice_id=qbo_invoice_id
                ),
                start_to_close_timeout=REREAD_TIMEOUT,
                heartbeat_timeout=QBO_HEARTBEAT_TIMEOUT,
                retry_policy=REREAD_RETRY_POLICY,
            )
        except ActivityError as err:
            # The cause's message names codes and ids only (QuickBooks' own words stay in its encrypted details).
            cause = err.cause
            words = cause.message if isinstance(cause, FailureError) else "it did not answer"
            raise ApplicationError(
                f"QuickBooks could not be read: {words}", type="QuickBooksNotRead", non_retryable=True
            ) from err
        progress.pending_observations.append(observation)
        position = self._applied + len(progress.pending_observations)
        # Applied in order by the main loop; a void, a disconnect or a continue-as-new first leaves it queued.
        await workflow.wait_condition(
            lambda: (
                self._applied >= position
                or progress.status not in IN_QUICKBOOKS
                or progress.void_requested
                or progress.disconnect_mode is not None
                or should_continue_as_new()
            )
        )
        status, balance = progress.status, progress.balance_cents
        changed = (status, balance) != previous
        if self._applied < position:
            message = "Read from QuickBooks; it is applied after what the invoice is doing now."
        elif observation.deleted:
            message = "QuickBooks no longer has the invoice (deleted there): it is no longer followed."
        elif changed:
            message = f"Read from QuickBooks: the invoice is now {status.value} (it was {previous[0].value})."
        else:
            message = f"Read from QuickBooks: nothing changed, the invoice is {status.value}."
        return RereadResult(
            status=status,
            previous_status=previous[0],
            message=message,
            total_cents=progress.total_cents,
            balance_cents=balance,
            changed=changed,
        )

    @reread_from_quickbooks.validator
    def _validate_reread(self, request: RereadRequest | None = None) -> None:
        progress = self._progress
        status = progress.status
        if status in FINAL_INVOICE_STATUSES:
            raise ValueError(f"The invoice is {status.value}: QuickBooks is no longer followed for it.")
        if progress.void_requested or progress.disconnect_mode is not None:
            raise ValueError("The invoice is being voided or disconnected: its own steps read QuickBooks.")
        if status == InvoiceStatus.PAUSED:
            raise ValueError(
                "Syncing is paused (the connection cannot be used now): QuickBooks can be read again once it "
                "resumes."
            )
        if status not in IN_QUICKBOOKS or progress.qbo_invoice_id is None or progress.realm_id is None:
            raise ValueError(
                f"The invoice is not in QuickBooks (status {status.value}): there is nothing to read there yet"
                + ("; retry its sync with the retry_sync update." if status == InvoiceStatus.FAILED else ".")
            )

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
        await self._store(
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
            )
        )
        self._set_search_status()

    async def _store(self, record: InvoiceRecord) -> None:
        """Write the record to the read side: from version 1 as a local activity (in the workflow task, no activity
        task: a marker instead of three events; a write takes milliseconds, so the task is not held open long), once;
        if that fails, as an activity retried until it is written (a database away for long would otherwise grow
        the history with the worker's workflow-task renewals)."""
        if self._version >= RECORDING_SYNC_VERSION:
            try:
                await workflow.execute_local_activity_method(
                    StoreActivities.record_invoice,
                    record,
                    start_to_close_timeout=STORE_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
                return
            except LOCAL_ACTIVITY_FAILURES as err:
                workflow.logger.warning(
                    "invoice record not written at once (%s): retried", type(err).__name__
                )
        await workflow.execute_activity_method(
            StoreActivities.record_invoice,
            record,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY_POLICY,
        )

    def _search_status(self) -> str | None:
        return workflow.info().typed_search_attributes.get(search_attributes.SYNC_STATUS)

    def _set_search_status(self) -> None:
        updates = [search_attributes.SYNC_STATUS.value_set(self._progress.status.value)]
        if self._progress.realm_id:
            updates.append(search_attributes.REALM_ID.value_set(self._progress.realm_id))
        workflow.upsert_search_attributes(updates)
        self._show()

    def _show(self) -> None:
        """The current details in the Temporal UI: what the invoice is, where it stands, what it waits for."""
        progress = self._progress
        snapshot = self._snapshot
        status = progress.status
        in_quickbooks = None
        if progress.qbo_invoice_id is not None:
            in_quickbooks = f"invoice {progress.qbo_invoice_id} of company {progress.realm_id}"
            if progress.total_cents is not None and progress.balance_cents is not None:
                in_quickbooks += (
                    f", balance {_money(progress.balance_cents)} of {_money(progress.total_cents)} "
                    f"{descriptions.plain(snapshot.currency)}"
                )
        workflow.set_current_details(
            descriptions.details(
                descriptions.invoice_summary(snapshot.number, snapshot.client_name, self._account_id),
                (
                    "Status",
                    status.value
                    + (f" (manual retries: {progress.manual_retries})" if progress.manual_retries else ""),
                ),
                ("Waiting for", self._waiting_for()),
                (
                    "Last error",
                    descriptions.plain(progress.last_error, descriptions.MAX_TEXT)
                    if progress.last_error
                    else None,
                ),
                ("In QuickBooks", in_quickbooks),
            )
        )

    def _waiting_for(self) -> str:
        progress = self._progress
        status = progress.status
        if progress.disconnect_mode is not None:
            return "nothing: QuickBooks was disconnected, the invoice records what that did."
        if progress.void_requested and status != InvoiceStatus.PAUSED:
            return "QuickBooks to void the invoice."
        if status in (InvoiceStatus.PENDING, InvoiceStatus.SYNCING):
            policy = SYNC_RETRY_POLICY
            retries = [
                descriptions.seconds(
                    min(
                        policy.initial_interval * policy.backoff_coefficient**n,
                        policy.maximum_interval or timedelta.max,
                    )
                )
                for n in range((policy.maximum_attempts or 1) - 1)
            ]
            return (
                f"QuickBooks: the sync's attempt, and up to {len(retries)} automatic retries after "
                f"{', '.join(retries)} (the pending activity `sync_invoice` shows its attempt, next retry and last "
                "failure). Throttling is waited out and spends no retry."
            )
        if status == InvoiceStatus.FAILED:
            return "a manual retry (the platform's, or an operator's `retry_sync` update) or a void: nothing happens on its own."
        if status == InvoiceStatus.PAUSED:
            what = "the void" if progress.void_requested else "syncing"
            return (
                f"QuickBooks to be usable again before {what} goes on: a reconnect, the plan, or the company's "
                f"settings; checked on each of those and every {descriptions.seconds(PAUSE_RECHECK_INTERVAL)}."
            )
        if status == InvoiceStatus.PAID:
            return "a void or a disconnect (a payment removed in QuickBooks reopens it)."
        if status in IN_QUICKBOOKS:
            return "a payment in QuickBooks, a void, or a disconnect."
        return "nothing: the invoice is finished (its last platform events are being delivered)."

    def _timeline(self, kind: str, message: str, *, key: str = "") -> TimelineItem:
        return TimelineItem(
            kind=kind, message=message, dedupe_key=f"{workflow.info().workflow_id}/{kind}/{key}"
        )

    def _emit(self, event_type: str, *, key: str = "", **data: Any) -> None:
        """Start delivering an event to the platform without waiting for it (awaited before completing)."""
        progress = self._progress
        snapshot = self._snapshot
        # Counting changes no command: replay-safe without a patch.
        progress.events_emitted += 1
        event = PlatformEvent(
            event_id=f"{workflow.info().workflow_id}/{event_type}/{key}",
            type=event_type,
            account_id=self._account_id,
            invoice_id=self._invoice_id,
            occurred_at=workflow.now(),
            sequence=progress.events_emitted,
            chain=workflow.info().first_execution_run_id,
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

"""The connection workflow: one per account, the only writer of its QuickBooks tokens."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.change_sweep import ChangeSweepActivities
    from activities.company_check import CompanyCheckActivities
    from activities.connection import ConnectionActivities
    from activities.disconnect import DisconnectActivities
    from activities.health import HealthActivities
    from activities.operator_events import OperatorEventActivities
    from models.domain import (
        OPEN_INVOICE_STATUSES,
        USABLE_CONNECTION_STATUSES,
        ConnectionStatus,
        DisconnectMode,
        InvoiceStatus,
    )
    from workflows import descriptions, search_attributes
    from workflows.common import PlatformEventOutbox, should_continue_as_new
    from workflows.messages import (
        AdoptGrantInput,
        BeginDisconnectInput,
        CompanyCheckRequest,
        ConnectionChange,
        ConnectionInfo,
        ConnectionProgress,
        ConnectionRecord,
        ConnectionWorkflowInput,
        DisconnectAccepted,
        DisconnectRequest,
        GrantOutcome,
        GrantSignal,
        HealthCheckNowResult,
        HealthResult,
        NotificationItem,
        OperatorRequest,
        PlanChange,
        PlatformEvent,
        RefreshNowResult,
        RefreshRequest,
        RefreshResult,
        RefreshTokensInput,
        ReplayParkedEventsInput,
        ReplayParkedEventsRequest,
        ReplayParkedEventsResult,
        ReprocessDeliveryInput,
        ReprocessDeliveryRequest,
        ReprocessDeliveryResult,
        SignalInvoicesInput,
        SweepInput,
        SweepNowResult,
        SweepResult,
        TokenLifetimes,
        VoidForDisconnectInput,
    )

# Token activities run on their own task queue, so they are never starved by invoice activities
# that are themselves waiting for a refresh.
TOKEN_TASK_QUEUE_SUFFIX = "-tokens"  # noqa: S105  (a task queue name)
# Refresh this long before the access token (1 hour) expires.
REFRESH_AHEAD = timedelta(minutes=5)
TOKEN_ACTIVITY_TIMEOUT = timedelta(seconds=60)
TOKEN_HEARTBEAT_TIMEOUT = timedelta(seconds=15)
# Intuit being unreachable is retried until it answers; invalid_grant is an answer, not an error.
TOKEN_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=2)
)
# Sweeps and health checks run again at their next turn if they fail: a few attempts are enough.
QUICKBOOKS_CHECK_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=5), backoff_coefficient=2.0, maximum_attempts=3
)
QUICKBOOKS_CHECK_TIMEOUT = timedelta(minutes=10)
QUICKBOOKS_HEARTBEAT_TIMEOUT = timedelta(seconds=15)
FAN_OUT_TIMEOUT = timedelta(minutes=10)
# The operators' event actions only read and write the database (then signal the events workflow).
OPERATOR_EVENTS_TIMEOUT = timedelta(minutes=2)
OPERATOR_EVENTS_RETRY_POLICY = RetryPolicy(maximum_attempts=5)
# An operator names at most this many parked events in one replay (none: all of the company's).
MAX_REPLAYED_EVENT_IDS = 1000
FAN_OUT_HEARTBEAT = timedelta(seconds=30)
# Outcomes of this many recent authorizations are kept, for a callback that asks after one (`wait_for_grant`).
MAX_REMEMBERED_GRANTS = 20
# Disconnect & Void works through the invoices in batches; each batch is one activity (progress in history).
DISCONNECT_BATCH = 100
DISCONNECT_VOID_TIMEOUT = timedelta(hours=2)
# Connections started before the company check run it from their next adoption on (daily, it is part of the
# health check's activity). The SDK remembers a patch's answer for the whole run, and a replayed adoption of the
# old code answers "not patched": so each adoption has its own patch id (`_company_check_patched`).
COMPANY_CHECK_PATCH = "company-check"
# Checks asked for (API, Temporal UI) run at most this often; one asked for sooner waits, never dropped.
REQUESTED_CHECK_SPACING = timedelta(seconds=5)
# A grant is adopted once even when the callback's update for it arrives while it is being adopted (a patch id
# per grant, for the reason above).
ADOPT_ONCE_PATCH = "adopt-once"
# The connection's status (and company) are search attributes, kept current on every change. Connections started
# before publish from their next change on: a patch id per change in the run, for the reason above.
CONNECTION_STATUS_PATCH = "connection-status-attribute"
# Everything but what already ended: these invoice workflows are told when QuickBooks is disconnected.


def token_task_queue() -> str:
    return workflow.info().task_queue.removesuffix(TOKEN_TASK_QUEUE_SUFFIX) + TOKEN_TASK_QUEUE_SUFFIX


@workflow.defn
class ConnectionWorkflow:
    """Keeps one account's QuickBooks connection alive, healthy and honest, until it is disconnected.

    It adopts authorizations, refreshes the access token before it expires, warns ahead of the authorization's
    end (`expiring`), notices revocation (`expired`), checks the connection daily, sweeps for changes webhooks
    missed, pauses and resumes syncing with the plan, and disconnects (optionally voiding synced invoices).

    Id: `connection:{account_id}`, percent-encoded (signal-with-start from the OAuth callback).
    Signals:
      - `grant_authorized` (GrantSignal): a new authorization was stored encrypted; adopt it (connect/reconnect).
      - `plan_changed` (PlanChange): the account's plan gained or lost QuickBooks.
      - `check_company_settings` (CompanyCheckRequest): check the company's settings now (the user changed them,
        or chose tax codes); it also runs on connect and in the daily check.
    Updates:
      - `wait_for_grant` (GrantSignal) -> GrantOutcome: adopt the authorization and answer once it is adopted.
      - `refresh_access_token` (RefreshRequest) -> RefreshResult: an activity got a 401; one refresh serves all.
      - `disconnect` (DisconnectRequest) -> DisconnectAccepted: "disconnect_only" or "disconnect_and_void".
      Operators' actions (input `{}` or none; refused, in words, while the connection cannot be used):
      - `sweep_now` (OperatorRequest) -> SweepNowResult: the change-data-capture sweep, now.
      - `check_health_now` (OperatorRequest) -> HealthCheckNowResult: the daily check (company settings, tokens).
      - `refresh_tokens_now` (OperatorRequest) -> RefreshNowResult: refresh the access token now.
      - `replay_parked_events` (ReplayParkedEventsRequest: `{}` or `{"event_ids": [...]}`) ->
        ReplayParkedEventsResult: the company's parked events back to pending, processed by its events workflow.
      - `reprocess_webhook_delivery` (ReprocessDeliveryRequest: `{"delivery_id": 42}`) -> ReprocessDeliveryResult:
        read a kept webhook delivery again and process the company's events in it.
    Queries:
      - `status` -> ConnectionInfo (never tokens); `refresh_count` -> int; `caught_by_sweeps` -> int.
    """

    @workflow.init
    def __init__(self, request: ConnectionWorkflowInput) -> None:
        # From the input, before any handler runs: an update or signal delivered in the first task of a run (the
        # server hands a continued run what the previous one did not take) sees this run's connection.
        progress = request.progress or ConnectionProgress()
        self._account_id = request.account_id
        self._policy = request.policy
        self._connection: ConnectionInfo | None = progress.info
        # What the search attributes say now (set at start, carried over by continue-as-new); `_publish` updates them.
        current = workflow.info().typed_search_attributes
        self._published = (
            current.get(search_attributes.CONNECTION_STATUS),
            current.get(search_attributes.REALM_ID),
        )
        self._publishes = 0
        # The last thing that went wrong, in words, and when (shown in the Temporal UI; this run only).
        self._problem: tuple[datetime, str] | None = None
        self._deadlines = progress.deadlines
        self._refreshes = progress.refreshes
        self._caught = progress.caught_by_sweeps
        self._plan_entitled = progress.plan_entitled
        self._grant_outcomes = dict(progress.grant_outcomes)
        self._occurrences = progress.occurrences
        self._events_emitted = progress.events_emitted
        self._grants: list[str] = []
        for grant_id in [*request.pending_grants, *([request.grant_id] if request.grant_id else [])]:
            if grant_id not in self._grants:
                self._grants.append(grant_id)
        self._plan_change: PlanChange | None = None
        self._check_requested = progress.check_requested
        self._adopting: str | None = None
        self._last_requested_check: datetime | None = None
        self._disconnect: DisconnectRequest | None = None
        self._disconnect_started = False
        # Set when a refresh outside the main loop (an update) moved the deadlines the loop is waiting for.
        self._rescheduled = False
        # Set once this run is about to end (continue as new): handlers waiting for its future answer now.
        self._ending = False
        self._token_lock = asyncio.Lock()
        self._sweep_lock = asyncio.Lock()
        self._outbox = PlatformEventOutbox()

    @workflow.run
    async def run(self, request: ConnectionWorkflowInput) -> ConnectionInfo | None:
        for event in request.undelivered_events:
            self._outbox.send(event)

        while True:
            self._publish()
            if self._grants:
                await self._adopt(self._grants.pop(0))
            elif self._disconnect is not None:
                await self._disconnect_now(self._disconnect.mode)
                break
            elif self._plan_change is not None:
                change, self._plan_change = self._plan_change, None
                await self._apply_plan(change)
            elif self._check_requested:
                # Requests coalesce: however many arrive while a check runs, one more check follows it; and
                # checks on request are spaced, since each costs the company's calls that syncs share.
                if self._last_requested_check is not None:
                    wait = self._last_requested_check + REQUESTED_CHECK_SPACING - workflow.now()
                    if wait > timedelta(0):
                        await workflow.sleep(wait)
                self._check_requested = False
                if self._usable():
                    self._last_requested_check = workflow.now()
                    await self._check_company()
            elif should_continue_as_new():
                self._ending = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    ConnectionWorkflowInput(
                        account_id=self._account_id,
                        policy=self._policy,
                        pending_grants=list(self._grants),
                        undelivered_events=self._outbox.hand_over(),
                        progress=ConnectionProgress(
                            info=self._info,
                            refreshes=self._refreshes,
                            deadlines=self._deadlines,
                            plan_entitled=self._plan_entitled,
                            caught_by_sweeps=self._caught,
                            grant_outcomes=self._grant_outcomes,
                            occurrences=self._occurrences,
                            check_requested=self._check_requested,
                            events_emitted=self._events_emitted,
                        ),
                    )
                )
            else:
                await self._wait_and_do_what_is_due()

        # Disconnected: deliver what is left, unless the user connects again meanwhile. Then a fresh run adopts the
        # new authorization at once and takes over the deliveries (the platform may be down for days).
        await workflow.wait_condition(lambda: self._outbox.delivered() or bool(self._grants))
        self._ending = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._grants:
            workflow.continue_as_new(
                ConnectionWorkflowInput(
                    account_id=self._account_id,
                    policy=self._policy,
                    pending_grants=list(self._grants),
                    undelivered_events=self._outbox.hand_over(),
                    # A fresh connection, but the same chain: its events go on counting.
                    progress=ConnectionProgress(events_emitted=self._events_emitted),
                )
            )
        await self._outbox.drain()
        return self._info

    async def _wait_and_do_what_is_due(self) -> None:
        self._rescheduled = False
        try:
            await workflow.wait_condition(
                lambda: (
                    bool(self._grants)
                    or self._disconnect is not None
                    or self._plan_change is not None
                    or self._check_requested
                    or self._rescheduled
                    or should_continue_as_new()
                ),
                timeout=self._until_next_deadline(),
            )
            return
        except TimeoutError:
            pass
        if not self._usable():
            return
        now = workflow.now()
        deadlines = self._deadlines
        if deadlines.refresh_at is not None and deadlines.refresh_at <= now:
            async with self._token_lock:
                await self._refresh()
        if self._usable():
            await self._warn_if_expiring()
        if self._usable() and deadlines.health_at is not None and deadlines.health_at <= now:
            deadlines.health_at = now + timedelta(seconds=self._policy.health_check_interval_seconds)
            await self._check_health()
        if (
            self._usable()
            and self._plan_entitled
            and deadlines.cdc_at is not None
            and deadlines.cdc_at <= now
        ):
            deadlines.cdc_at = now + timedelta(seconds=self._policy.cdc_interval_seconds)
            await self._sweep()

    # --- Tokens ------------------------------------------------------------------------------------------

    async def _adopt(self, grant_id: str) -> None:
        self._adopting = grant_id
        try:
            await self._adopt_grant(grant_id)
        finally:
            self._adopting = None

    async def _adopt_grant(self, grant_id: str) -> None:
        async with self._token_lock:
            try:
                result = await workflow.execute_activity_method(
                    ConnectionActivities.adopt_grant,
                    AdoptGrantInput(account_id=self._account_id, grant_id=grant_id),
                    task_queue=token_task_queue(),
                    start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
                    retry_policy=TOKEN_RETRY_POLICY,
                )
            except ActivityError as err:
                workflow.logger.error("grant %s could not be adopted: %s", grant_id, err.cause)
                self._went_wrong(f"an authorization could not be adopted: {err.cause}")
                cause = err.cause
                refused = cause.type if isinstance(cause, ApplicationError) and cause.type else "NotAdopted"
                self._settle(grant_id, refused)
                if not self._grants:
                    # Nothing else is on its way: a connection still "connecting" goes back to where it was.
                    await workflow.execute_activity_method(
                        ConnectionActivities.settle_connecting,
                        self._account_id,
                        task_queue=token_task_queue(),
                        start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
                        retry_policy=TOKEN_RETRY_POLICY,
                    )
                return
            self._info = result.info
            self._schedule_from(result.lifetimes)
            # The callback waiting for this (read-your-writes) may answer now: the connection row is usable.
            self._settle(grant_id, None)
        now = workflow.now()
        # Catch up at once on what changed while the connection was down; check health on the usual rhythm.
        self._deadlines.cdc_at = now
        self._deadlines.health_at = now + timedelta(seconds=self._policy.health_check_interval_seconds)
        self._info = await self._record(
            ConnectionRecord(
                account_id=self._account_id,
                status=ConnectionStatus.CONNECTED,
                resolve_notification_kinds=["connection_expired", "connection_expiring"],
            )
        )
        await self._warn_if_expiring()
        if self._company_check_patched(f"adopt/{grant_id}"):
            # Before paused invoices go on: they read what it found (blocking findings keep them paused).
            await self._check_company(resume=False)
        await self._resume_paused_invoices()
        self._emit("connection.connected", str(self._require_info().token_version))

    async def _refresh(self) -> None:
        """Refresh the tokens (the caller holds the token lock)."""
        info = self._require_info()
        result = await workflow.execute_activity_method(
            ConnectionActivities.refresh_tokens,
            RefreshTokensInput(account_id=self._account_id, expected_version=info.token_version),
            task_queue=token_task_queue(),
            start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
            heartbeat_timeout=TOKEN_HEARTBEAT_TIMEOUT,
            retry_policy=TOKEN_RETRY_POLICY,
        )
        # The activity writes EXPIRED itself on invalid_grant; keep the status this workflow already knows.
        self._info = result.info
        self._schedule_from(result.lifetimes)
        if result.refreshed:
            self._refreshes += 1
        if result.expired:
            await self._expired(result.reason or "QuickBooks refused the connection's tokens.")

    def _schedule_from(self, lifetimes: TokenLifetimes | None) -> None:
        """Turn the tokens' remaining lifetimes into this workflow's own deadlines."""
        if lifetimes is None:
            return
        now = workflow.now()
        self._rescheduled = True
        self._deadlines.refresh_at = now + max(
            timedelta(seconds=lifetimes.access_seconds) - REFRESH_AHEAD, timedelta(0)
        )
        horizons = [
            seconds for seconds in (lifetimes.refresh_seconds, lifetimes.hard_seconds) if seconds is not None
        ]
        self._deadlines.horizon_at = now + timedelta(seconds=min(horizons)) if horizons else None

    async def _expired(self, reason: str) -> None:
        info = self._require_info()
        self._info = await self._record(
            ConnectionRecord(
                account_id=self._account_id,
                status=ConnectionStatus.EXPIRED,
                reason=reason,
                notification=NotificationItem(
                    kind="connection_expired",
                    message=f"QuickBooks connection expired: {reason} Reconnect QuickBooks to resume syncing.",
                    dedupe_key=f"{workflow.info().workflow_id}/expired/{info.token_version}",
                    action="reconnect",
                ),
                resolve_notification_kinds=["connection_expiring"],
            )
        )
        self._emit("connection.expired", str(info.token_version), reason=reason)

    async def _warn_if_expiring(self) -> None:
        """Amber ahead of the authorization's end: the user must reconnect before it lapses."""
        info = self._require_info()
        horizon = self._deadlines.horizon_at
        warning = timedelta(seconds=self._policy.expiry_warning_seconds)
        if info.status != ConnectionStatus.CONNECTED or horizon is None or horizon - warning > workflow.now():
            return
        days = max((horizon - workflow.now()).days, 0)
        reason = f"The QuickBooks authorization ends in {days} days; reconnect QuickBooks to keep syncing."
        self._info = await self._record(
            ConnectionRecord(
                account_id=self._account_id,
                status=ConnectionStatus.EXPIRING,
                reason=reason,
                notification=NotificationItem(
                    kind="connection_expiring",
                    message=f"Connection expires soon. {reason}",
                    dedupe_key=f"{workflow.info().workflow_id}/expiring/{info.token_version}/{horizon.date()}",
                    action="reconnect",
                ),
            )
        )
        self._emit("connection.expiring", str(horizon.date()), expires_at=horizon.isoformat())

    # --- Health and missed webhooks ---------------------------------------------------------------------

    async def _check_health(self) -> HealthResult:
        """The daily check (also run on an operator's request); what it found, a failure to run it included."""
        try:
            result = await workflow.execute_activity_method(
                HealthActivities.check_connection,
                self._account_id,
                start_to_close_timeout=QUICKBOOKS_CHECK_TIMEOUT,
                heartbeat_timeout=QUICKBOOKS_HEARTBEAT_TIMEOUT,
                retry_policy=QUICKBOOKS_CHECK_RETRY_POLICY,
            )
        except ActivityError as err:
            workflow.logger.warning("health check failed: %s", err.cause)
            self._went_wrong(f"the daily check failed: {err.cause}")
            return HealthResult(ok=False, reason=f"the check could not run: {err.cause}")
        if not result.ok:
            workflow.logger.warning("QuickBooks connection unhealthy: %s", result.reason)
            self._went_wrong(f"the daily check found the connection unhealthy: {result.reason}")
        elif result.unblocked and self._usable():
            # The daily check is also the company check: a block it lifted lets paused invoices go on.
            await self._resume_paused_invoices()
        return result

    @staticmethod
    def _company_check_patched(occurrence: str) -> bool:
        return workflow.patched(f"{COMPANY_CHECK_PATCH}/{occurrence}")

    async def _check_company(self, *, resume: bool = True) -> None:
        """Read the company's settings and store what they mean; paused invoices go on once nothing blocks."""
        try:
            result = await workflow.execute_activity_method(
                CompanyCheckActivities.check_company,
                self._account_id,
                start_to_close_timeout=QUICKBOOKS_CHECK_TIMEOUT,
                heartbeat_timeout=QUICKBOOKS_HEARTBEAT_TIMEOUT,
                retry_policy=QUICKBOOKS_CHECK_RETRY_POLICY,
            )
        except ActivityError as err:
            # The stored findings stand; syncs read the company themselves when none is stored.
            workflow.logger.warning(
                "company check failed; the next one runs with the daily check: %s", err.cause
            )
            self._went_wrong(f"the company check failed (the next runs with the daily check): {err.cause}")
            return
        if result.blocked_reason is not None:
            workflow.logger.info("syncing blocked by the company's settings")
            self._went_wrong(f"the company's settings block syncing: {result.blocked_reason}")
        if resume and result.unblocked:
            await self._resume_paused_invoices()

    async def _sweep(self) -> SweepResult | str:
        """The change sweep (also run on an operator's request): what it caught, or why it failed."""
        # One sweep at a time: the periodic one and an operator's move the same watermark.
        async with self._sweep_lock:
            try:
                result = await workflow.execute_activity_method(
                    ChangeSweepActivities.sweep_changes,
                    SweepInput(account_id=self._account_id),
                    start_to_close_timeout=QUICKBOOKS_CHECK_TIMEOUT,
                    heartbeat_timeout=QUICKBOOKS_HEARTBEAT_TIMEOUT,
                    retry_policy=QUICKBOOKS_CHECK_RETRY_POLICY,
                )
            except ActivityError as err:
                workflow.logger.warning("change sweep failed; the next one covers its window: %s", err.cause)
                self._went_wrong(f"the change sweep failed (the next one covers its window): {err.cause}")
                return f"the sweep failed: {err.cause}"
        self._caught += result.caught
        return result

    # --- Plan --------------------------------------------------------------------------------------------

    async def _apply_plan(self, change: PlanChange) -> None:
        if change.entitled == self._plan_entitled:
            return
        self._plan_entitled = change.entitled
        info = self._require_info()
        key = self._occurrence()
        if not change.entitled:
            await self._record(
                ConnectionRecord(
                    account_id=self._account_id,
                    status=info.status,
                    reason=info.status_reason,
                    notification=NotificationItem(
                        kind="plan_paused",
                        message="Your plan no longer includes QuickBooks, so syncing is paused. Upgrade to "
                        "Premium, or add the QuickBooks add-on to Pro, to resume.",
                        dedupe_key=f"{workflow.info().workflow_id}/plan_paused/{key}",
                        action="upgrade",
                    ),
                )
            )
            self._emit("connection.sync_paused", key, reason="plan")
            return
        await self._record(
            ConnectionRecord(
                account_id=self._account_id,
                status=info.status,
                reason=info.status_reason,
                resolve_notification_kinds=["plan_paused"],
            )
        )
        self._deadlines.cdc_at = workflow.now()
        if self._usable():
            await self._resume_paused_invoices()
        self._emit("connection.sync_resumed", key)

    async def _resume_paused_invoices(self) -> None:
        await self._signal_invoices([InvoiceStatus.PAUSED], ConnectionChange(usable=True))
        info = self._require_info()
        if info.realm_id is not None:
            # Webhook events that waited for a usable connection are processed now.
            await workflow.execute_activity_method(
                ConnectionActivities.drain_realm_events,
                info.realm_id,
                task_queue=token_task_queue(),
                start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
                retry_policy=TOKEN_RETRY_POLICY,
            )

    # --- Disconnect --------------------------------------------------------------------------------------

    async def _disconnect_now(self, mode: DisconnectMode) -> None:
        """Stop syncing; with Disconnect & Void first void every synced invoice; then revoke at Intuit (unless
        another account holds the same company) and forget the tokens."""
        started = await workflow.execute_activity_method(
            DisconnectActivities.begin_disconnect,
            BeginDisconnectInput(account_id=self._account_id, mode=mode),
            task_queue=token_task_queue(),
            start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
            retry_policy=TOKEN_RETRY_POLICY,
        )
        self._info = self._with_status(ConnectionStatus.DISCONNECTING)
        self._disconnect_started = True
        if mode == DisconnectMode.DISCONNECT_AND_VOID:
            remaining = started.to_void
            while remaining > 0:
                batch = await workflow.execute_activity_method(
                    DisconnectActivities.void_for_disconnect,
                    VoidForDisconnectInput(account_id=self._account_id, batch_size=DISCONNECT_BATCH),
                    start_to_close_timeout=DISCONNECT_VOID_TIMEOUT,
                    heartbeat_timeout=QUICKBOOKS_HEARTBEAT_TIMEOUT,
                    retry_policy=TOKEN_RETRY_POLICY,
                )
                # Invoices whose sync finished meanwhile join the remaining count and are voided too.
                if batch.voided + batch.failed == 0:
                    break
                remaining = batch.remaining
        async with self._token_lock:
            self._info = await workflow.execute_activity_method(
                DisconnectActivities.finish_disconnect,
                self._account_id,
                task_queue=token_task_queue(),
                start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
                retry_policy=TOKEN_RETRY_POLICY,
            )
        await self._signal_invoices(
            sorted(OPEN_INVOICE_STATUSES), ConnectionChange(usable=False, disconnect_mode=mode.value)
        )
        self._emit("connection.disconnected", f"{mode.value}/{self._occurrence()}", mode=mode.value)

    # --- Messages ----------------------------------------------------------------------------------------

    @workflow.signal
    def check_company_settings(self, request: CompanyCheckRequest) -> None:
        self._check_requested = True

    @workflow.signal
    def grant_authorized(self, signal: GrantSignal) -> None:
        self._take(signal.grant_id)

    @workflow.update
    async def wait_for_grant(self, signal: GrantSignal) -> GrantOutcome:
        """Adopt the authorization if not done yet, and answer once it is adopted (or refused). The OAuth
        callback waits on this, so the browser is told `connected` only when the connection reads connected."""
        self._take(signal.grant_id)
        # Never waits past this run: one that continues as new carries the grant over (and waits for handlers).
        await workflow.wait_condition(lambda: signal.grant_id in self._grant_outcomes or self._ending)
        if signal.grant_id not in self._grant_outcomes:
            return GrantOutcome(adopted=False, carried_over=True, info=self._info)
        refused = self._grant_outcomes[signal.grant_id]
        return GrantOutcome(adopted=refused is None, refused=refused, info=self._info)

    def _occurrence(self) -> str:
        """A key for something that may happen again (a plan change, a disconnect), unique for the account.

        Counted across continue-as-new; a connection that ended (disconnected) starts counting again in its next
        execution, whose token versions are all higher, so the version keeps the two apart."""
        self._occurrences += 1
        version = self._info.token_version if self._info is not None else 0
        return f"v{version}.n{self._occurrences}"

    def _take(self, grant_id: str) -> None:
        if grant_id in self._grants or grant_id in self._grant_outcomes:
            return
        # The callback's update (or the relay's signal) for the grant being adopted right now: adopting it a second
        # time would record it connected again, over what its adoption found meanwhile (a revocation: expired).
        if grant_id == self._adopting and workflow.patched(f"{ADOPT_ONCE_PATCH}/{grant_id}"):
            return
        self._grants.append(grant_id)

    def _settle(self, grant_id: str, refused: str | None) -> None:
        self._grant_outcomes[grant_id] = refused
        while len(self._grant_outcomes) > MAX_REMEMBERED_GRANTS:
            del self._grant_outcomes[next(iter(self._grant_outcomes))]

    @workflow.signal
    def plan_changed(self, change: PlanChange) -> None:
        self._plan_change = change

    @workflow.update
    async def refresh_access_token(self, request: RefreshRequest) -> RefreshResult:
        async with self._token_lock:
            info = self._require_info()
            if info.status in USABLE_CONNECTION_STATUSES and info.token_version <= request.seen_version:
                await self._refresh()
            info = self._require_info()
            return RefreshResult(
                token_version=info.token_version,
                usable=info.status in USABLE_CONNECTION_STATUSES,
                status=info.status,
            )

    @refresh_access_token.validator
    def _validate_refresh(self, request: RefreshRequest) -> None:
        if self._info is None:
            raise ValueError("the connection has no authorization yet")

    # --- Operators' actions (the Temporal Web UI's and CLI's updates; input `{}` or none) --------------------

    @workflow.update
    async def sweep_now(self, request: OperatorRequest | None = None) -> SweepNowResult:
        """Run the change-data-capture sweep now (payments and voids no webhook brought)."""
        result = await self._sweep()
        if isinstance(result, str):
            raise ApplicationError(
                f"The sweep did not complete: {result}", type="SweepFailed", non_retryable=True
            )
        return SweepNowResult(
            caught=result.caught,
            changed=result.changed,
            message=f"Swept QuickBooks' changes: {result.changed} invoice change(s) since the last sweep, "
            f"{result.caught} of them no webhook had brought.",
        )

    @sweep_now.validator
    def _validate_sweep_now(self, request: OperatorRequest | None = None) -> None:
        self._refuse_unless_usable("sweep")
        if not self._plan_entitled:
            raise ValueError(
                "The account's plan does not include QuickBooks, so syncing and the sweep are paused until it is "
                "upgraded."
            )

    @workflow.update
    async def check_health_now(self, request: OperatorRequest | None = None) -> HealthCheckNowResult:
        """Run the daily check now: the company's settings, and whether Intuit still honours the tokens."""
        result = await self._check_health()
        if not result.ok:
            return HealthCheckNowResult(
                ok=False,
                message=f"The connection is not healthy: {result.reason} (status {self._require_info().status}).",
            )
        resumed = result.unblocked and self._usable()
        return HealthCheckNowResult(
            ok=True,
            resumed_paused=resumed,
            message="The connection is healthy"
            + ("; nothing blocks syncing any more, so paused invoices go on." if resumed else "."),
        )

    @check_health_now.validator
    def _validate_check_health_now(self, request: OperatorRequest | None = None) -> None:
        self._refuse_unless_usable("check")

    @workflow.update
    async def refresh_tokens_now(self, request: OperatorRequest | None = None) -> RefreshNowResult:
        """Refresh the access token now (and store the rotated refresh token), whatever its expiry."""
        async with self._token_lock:
            if not self._usable():  # changed while the lock was held by another refresh or the disconnect
                info = self._require_info()
                raise ApplicationError(
                    f"The connection is {info.status} now: there are no tokens to refresh.",
                    type="NotRefreshed",
                    non_retryable=True,
                )
            before = self._refreshes
            await self._refresh()
            info = self._require_info()
        refreshed = self._refreshes > before
        if info.status == ConnectionStatus.EXPIRED:
            message = (
                f"Intuit refused the tokens: the connection is expired ({info.status_reason}); reconnect."
            )
        elif refreshed:
            message = f"Refreshed: token version {info.token_version}, the access token lasts an hour."
        else:
            message = "Not refreshed: another process rotated the tokens meanwhile; they are current."
        return RefreshNowResult(
            refreshed=refreshed,
            status=info.status,
            token_version=info.token_version,
            access_expires_at=info.access_expires_at,
            message=message,
        )

    @refresh_tokens_now.validator
    def _validate_refresh_tokens_now(self, request: OperatorRequest | None = None) -> None:
        self._refuse_unless_usable("refresh")

    @workflow.update
    async def replay_parked_events(
        self, request: ReplayParkedEventsRequest | None = None
    ) -> ReplayParkedEventsResult:
        """Process the company's parked events again (`{}`: all of them; `{"event_ids": [...]}`: those)."""
        asked = ReplayParkedEventsRequest() if request is None else request
        realm_id = self._require_info().realm_id
        assert realm_id is not None  # the validator refuses a connection without a company
        result: ReplayParkedEventsResult = await workflow.execute_activity_method(
            OperatorEventActivities.replay_parked_events,
            ReplayParkedEventsInput(realm_id=realm_id, event_ids=sorted(set(asked.event_ids))),
            start_to_close_timeout=OPERATOR_EVENTS_TIMEOUT,
            retry_policy=OPERATOR_EVENTS_RETRY_POLICY,
        )
        if result.replayed:
            result.message = (
                f"{result.replayed} parked event(s) of company {realm_id} are pending again; its events "
                "workflow processes them now (QboRealmId, WorkflowType 'QuickBooksEventsWorkflow')."
            )
        else:
            result.message = f"Company {realm_id} has no parked event" + (
                " among those asked for." if asked.event_ids else "."
            )
        if result.not_parked:
            shown = ", ".join(str(event_id) for event_id in result.not_parked[:20])
            result.message += f" Not parked events of this company (left as they are): {shown}" + (
                " and more." if len(result.not_parked) > 20 else "."
            )
        return result

    @replay_parked_events.validator
    def _validate_replay_parked_events(self, request: ReplayParkedEventsRequest | None = None) -> None:
        self._refuse_unless_usable("replay")
        ids = [] if request is None else request.event_ids
        if len(ids) > MAX_REPLAYED_EVENT_IDS:
            raise ValueError(
                f"At most {MAX_REPLAYED_EVENT_IDS} event ids at a time; send {{}} to replay every parked event."
            )
        if any(
            isinstance(event_id, bool) or not isinstance(event_id, int) or event_id < 1 for event_id in ids
        ):
            raise ValueError(
                'event_ids are the positive ids of quickbooks_event rows, e.g. {"event_ids": [412]}.'
            )

    @workflow.update
    async def reprocess_webhook_delivery(self, request: ReprocessDeliveryRequest) -> ReprocessDeliveryResult:
        """Read a kept webhook delivery again with this release's parser and process this company's events in it
        (`{"delivery_id": 42}`); events stored before are not stored twice."""
        realm_id = self._require_info().realm_id
        assert realm_id is not None  # the validator refuses a connection without a company
        result: ReprocessDeliveryResult = await workflow.execute_activity_method(
            OperatorEventActivities.reprocess_webhook_delivery,
            ReprocessDeliveryInput(realm_id=realm_id, delivery_id=request.delivery_id),
            start_to_close_timeout=OPERATOR_EVENTS_TIMEOUT,
            retry_policy=OPERATOR_EVENTS_RETRY_POLICY,
        )
        if not result.found:
            raise ApplicationError(
                f"No webhook delivery {request.delivery_id} is kept.",
                type="DeliveryUnknown",
                non_retryable=True,
            )
        words = [
            f"Delivery {request.delivery_id} read again: {result.read} event(s) of company {realm_id}, "
            f"{result.stored} new (processed now), {result.duplicates} stored before."
        ]
        if result.unreadable:
            words.append(f"{result.unreadable} event(s) still cannot be read: {result.error}.")
        if result.other_companies:
            words.append(
                f"It also holds events of {result.other_companies} other company(ies): send this update to their "
                "connections."
            )
        result.message = " ".join(words)
        return result

    @reprocess_webhook_delivery.validator
    def _validate_reprocess_webhook_delivery(self, request: ReprocessDeliveryRequest) -> None:
        self._refuse_unless_usable("reprocess")
        delivery_id = request.delivery_id
        if isinstance(delivery_id, bool) or not isinstance(delivery_id, int) or delivery_id < 1:
            raise ValueError(
                'delivery_id is the positive id of a quickbooks_webhook_delivery row, e.g. {"delivery_id": 42}.'
            )

    def _refuse_unless_usable(self, action: str) -> None:
        """Refuse an operator's action that needs a usable connection, saying what to do instead."""
        info = self._info
        if info is None or info.status in (ConnectionStatus.NOT_CONNECTED, ConnectionStatus.CONNECTING):
            raise ValueError("The connection has no adopted authorization yet: connect QuickBooks first.")
        if self._disconnect is not None or info.status in (
            ConnectionStatus.DISCONNECTING,
            ConnectionStatus.DISCONNECTED,
        ):
            raise ValueError(
                f"QuickBooks is disconnected (or being disconnected): there is nothing to {action}."
            )
        if info.status == ConnectionStatus.EXPIRED:
            raise ValueError(
                "The connection expired (Intuit refused its tokens): nothing can reach QuickBooks until the user "
                "reconnects QuickBooks."
            )
        if info.status not in USABLE_CONNECTION_STATUSES:
            raise ValueError(f"The connection is {info.status}: QuickBooks cannot be used now.")

    @workflow.update
    async def disconnect(self, request: DisconnectRequest) -> DisconnectAccepted:
        """Accepted once syncing has stopped (status `disconnecting`); the rest continues in the background."""
        self._disconnect = request
        await workflow.wait_condition(lambda: self._disconnect_started)
        return DisconnectAccepted(mode=request.mode)

    @disconnect.validator
    def _validate_disconnect(self, request: DisconnectRequest) -> None:
        if self._disconnect is not None:
            raise ValueError(f"already disconnecting ({self._disconnect.mode.value})")
        if self._info is None or self._info.status in (
            ConnectionStatus.DISCONNECTED,
            ConnectionStatus.NOT_CONNECTED,
        ):
            raise ValueError("QuickBooks is not connected")
        if (
            request.mode == DisconnectMode.DISCONNECT_AND_VOID
            and self._info.status == ConnectionStatus.EXPIRED
        ):
            raise ValueError(
                "the connection expired, so nothing can be voided in QuickBooks: reconnect first, or disconnect only"
            )

    @workflow.query
    def status(self) -> ConnectionInfo | None:
        return self._info

    @workflow.query
    def refresh_count(self) -> int:
        return self._refreshes

    @workflow.query
    def caught_by_sweeps(self) -> int:
        return self._caught

    # --- Helpers -----------------------------------------------------------------------------------------

    @property
    def _info(self) -> ConnectionInfo | None:
        return self._connection

    @_info.setter
    def _info(self, info: ConnectionInfo | None) -> None:
        # Every change of the connection goes through here, so the search attributes never lag behind it.
        self._connection = info
        self._publish()

    def _shown_status(self) -> ConnectionStatus:
        """The status the API shows: the connection's own, or, before it has one, whether one is being adopted."""
        if self._connection is not None:
            return self._connection.status
        if self._grants or self._adopting is not None:
            return ConnectionStatus.CONNECTING
        return ConnectionStatus.NOT_CONNECTED

    def _went_wrong(self, words: str) -> None:
        self._problem = (workflow.now(), words)
        self._show()

    def _show(self) -> None:
        """The current details in the Temporal UI: which company, the status, what is due next, what it waits for."""
        info = self._connection
        status = self._shown_status()
        summary = descriptions.connection_summary(
            self._account_id, info.company_name if info else None, info.realm_id if info else None
        )
        shown = status.value
        if info is not None and info.status_reason:
            shown += f": {descriptions.plain(info.status_reason, descriptions.MAX_TEXT)}"
        deadlines = self._deadlines
        due = []
        if self._usable():
            for label, moment in (
                ("token refresh", deadlines.refresh_at),
                ("change sweep", deadlines.cdc_at if self._plan_entitled else None),
                ("daily check", deadlines.health_at),
                ("authorization ends", deadlines.horizon_at),
            ):
                if moment is not None:
                    due.append(f"{label} at {descriptions.at(moment)}")
        problem = None
        if self._problem is not None:
            moment, words = self._problem
            problem = f"{descriptions.at(moment)}: {descriptions.plain(words, descriptions.MAX_TEXT)}"
        workflow.set_current_details(
            descriptions.details(
                summary,
                ("Status", shown),
                (
                    "Syncing",
                    None if self._plan_entitled else "paused: the account's plan does not include QuickBooks",
                ),
                ("Next", " · ".join(due)),
                ("Waiting for", self._waiting_for(status)),
                ("Last problem", problem),
            )
        )

    def _waiting_for(self, status: ConnectionStatus) -> str:
        if self._adopting is not None or (self._grants and status != ConnectionStatus.DISCONNECTING):
            return "the new authorization to be adopted (the user just connected)."
        if self._disconnect is not None and status != ConnectionStatus.DISCONNECTED:
            mode = self._disconnect.mode
            if mode == DisconnectMode.DISCONNECT_AND_VOID:
                return (
                    "Disconnect & Void: the synced invoices to be voided in QuickBooks, then the revocation."
                )
            return "the disconnect: the authorization to be revoked at Intuit."
        waits = {
            ConnectionStatus.NOT_CONNECTED: "an authorization (the user connects QuickBooks).",
            ConnectionStatus.CONNECTING: "the new authorization to be adopted (the user just connected).",
            ConnectionStatus.CONNECTED: "the next thing due, a disconnect, a plan change or a reconnect.",
            ConnectionStatus.EXPIRING: "the user to reconnect QuickBooks before the authorization ends.",
            ConnectionStatus.EXPIRED: "the user to reconnect QuickBooks; syncing is paused until then.",
            ConnectionStatus.DISCONNECTING: "the disconnect to finish.",
            ConnectionStatus.DISCONNECTED: "nothing: its last platform events are being delivered (or a new connection).",
        }
        return waits[status]

    def _publish(self) -> None:
        """Upsert `QboConnectionStatus` and `QboRealmId` when they changed (a no-op otherwise); show the details."""
        self._show()
        status = self._shown_status().value
        realm_id = self._connection.realm_id if self._connection is not None else None
        realm_id = realm_id or self._published[1]
        if (status, realm_id) == self._published:
            return
        self._publishes += 1
        if not workflow.patched(f"{CONNECTION_STATUS_PATCH}/{self._publishes}"):
            return
        self._published = (status, realm_id)
        updates = [search_attributes.CONNECTION_STATUS.value_set(status)]
        if realm_id is not None:
            updates.append(search_attributes.REALM_ID.value_set(realm_id))
        workflow.upsert_search_attributes(updates)

    async def _record(self, record: ConnectionRecord) -> ConnectionInfo:
        return await workflow.execute_activity_method(
            ConnectionActivities.record_connection,
            record,
            task_queue=token_task_queue(),
            start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
            retry_policy=TOKEN_RETRY_POLICY,
        )

    async def _signal_invoices(self, statuses: list[InvoiceStatus], change: ConnectionChange) -> None:
        await workflow.execute_activity_method(
            ConnectionActivities.signal_invoices,
            SignalInvoicesInput(account_id=self._account_id, statuses=statuses, change=change),
            task_queue=token_task_queue(),
            start_to_close_timeout=FAN_OUT_TIMEOUT,
            heartbeat_timeout=FAN_OUT_HEARTBEAT,
            retry_policy=TOKEN_RETRY_POLICY,
        )

    def _until_next_deadline(self) -> timedelta | None:
        if not self._usable():
            return None  # nothing to do until an authorization (or a disconnect) arrives
        deadlines = self._deadlines
        candidates: list[datetime] = [
            at for at in (deadlines.refresh_at, deadlines.health_at) if at is not None
        ]
        if self._plan_entitled and deadlines.cdc_at is not None:
            candidates.append(deadlines.cdc_at)
        info = self._require_info()
        if info.status == ConnectionStatus.CONNECTED and deadlines.horizon_at is not None:
            candidates.append(deadlines.horizon_at - timedelta(seconds=self._policy.expiry_warning_seconds))
        if not candidates:
            return None
        return max(min(candidates) - workflow.now(), timedelta(seconds=1))

    def _usable(self) -> bool:
        return self._info is not None and self._info.status in USABLE_CONNECTION_STATUSES

    def _with_status(self, status: ConnectionStatus) -> ConnectionInfo:
        info = self._require_info()
        return ConnectionInfo(
            account_id=info.account_id,
            status=status,
            realm_id=info.realm_id,
            token_version=info.token_version,
            connected_at=info.connected_at,
            access_expires_at=info.access_expires_at,
            refresh_expires_at=info.refresh_expires_at,
            refresh_hard_expires_at=info.refresh_hard_expires_at,
            company_name=info.company_name,
        )

    def _emit(self, event_type: str, key: str, **data: str | int | bool | None) -> None:
        info = self._require_info()
        # Counting changes no command: replay-safe without a patch.
        self._events_emitted += 1
        self._outbox.send(
            PlatformEvent(
                event_id=f"{workflow.info().workflow_id}/{event_type}/{key}",
                type=event_type,
                account_id=self._account_id,
                occurred_at=workflow.now(),
                data={"status": info.status.value, "realm_id": info.realm_id, **data},
                sequence=self._events_emitted,
                chain=workflow.info().first_execution_run_id,
            )
        )

    def _require_info(self) -> ConnectionInfo:
        assert self._info is not None
        return self._info

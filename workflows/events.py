"""The events workflow: one per QuickBooks company, processes stored webhook (and CDC) events in order."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from workflows import descriptions
    from workflows.common import should_continue_as_new
    from workflows.messages import ProcessEventsInput, ProcessEventsResult, RealmEventsInput

# With nothing to do for this long, the workflow completes; the next event starts it again.
IDLE_TIMEOUT = timedelta(minutes=10)
PROCESS_TIMEOUT = timedelta(minutes=30)
PROCESS_HEARTBEAT = timedelta(seconds=15)
PROCESS_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=2)
)


@workflow.defn
class QuickBooksEventsWorkflow:
    """Turns a company's stored QuickBooks events into signals to invoice workflows, one batch at a time.

    Id: `quickbooks-events:{realm_id}` (signal-with-start by the webhook route, CDC sweeps and reconnects).
    Signals:
      - `events_arrived`: new events are stored; process them.
    Queries:
      - `processed` -> int: events processed by this workflow (across continue-as-new).
    """

    def __init__(self) -> None:
        self._pending = False
        self._processed = 0

    @workflow.run
    async def run(self, request: RealmEventsInput) -> int:
        self._processed = request.processed_before
        # Every run starts with one pass: a start, or a continue-as-new, may carry unprocessed events.
        self._pending = True
        while True:
            self._show(
                request.realm_id,
                f"new events; it completes at {descriptions.at(workflow.now() + IDLE_TIMEOUT)} if none arrive",
            )
            try:
                await workflow.wait_condition(lambda: self._pending, timeout=IDLE_TIMEOUT)
            except TimeoutError:
                if not self._pending:
                    break
            self._pending = False
            self._show(
                request.realm_id, "the stored events to be processed (the pending activity shows any failure)"
            )
            result: ProcessEventsResult = await workflow.execute_activity_method(
                EventActivities.process_pending_events,
                ProcessEventsInput(realm_id=request.realm_id),
                start_to_close_timeout=PROCESS_TIMEOUT,
                heartbeat_timeout=PROCESS_HEARTBEAT,
                retry_policy=PROCESS_RETRY_POLICY,
            )
            self._processed += result.processed
            if result.more_pending:
                self._pending = True
            if should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    RealmEventsInput(realm_id=request.realm_id, processed_before=self._processed)
                )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._processed

    def _show(self, realm_id: str, waiting_for: str) -> None:
        workflow.set_current_details(
            descriptions.details(
                descriptions.events_summary(realm_id),
                ("Processed", str(self._processed)),
                ("Waiting for", waiting_for),
            )
        )

    @workflow.signal
    def events_arrived(self) -> None:
        self._pending = True

    @workflow.query
    def processed(self) -> int:
        return self._processed

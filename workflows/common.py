"""What the workflows share: the outbox of platform events and when to continue as new."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.notify import PlatformEventActivities
    from workflows.messages import PlatformEvent

# Outbound events to the platform are retried with backoff for three days, then given up (and logged).
PLATFORM_EVENT_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=5), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=10)
)
PLATFORM_EVENT_TIMEOUT = timedelta(seconds=30)
PLATFORM_EVENT_SCHEDULE_TO_CLOSE = timedelta(days=3)
# Continue as new well before Temporal's history limits.
MAX_HISTORY_EVENTS = 5_000


def should_continue_as_new() -> bool:
    info = workflow.info()
    return info.is_continue_as_new_suggested() or info.get_current_history_length() > MAX_HISTORY_EVENTS


class PlatformEventOutbox:
    """Starts event deliveries without waiting for them.

    A workflow that completes `drain`s them first. One that continues as new `hand_over`s what is still undelivered
    to its next run instead: Temporal retries a delivery for up to three days, and waiting for it there would stop
    the lifecycle (voids, payments, refreshes) for as long as the platform is down. The platform drops the
    duplicate that a cancelled attempt may still deliver by the event id.
    """

    def __init__(self) -> None:
        self._deliveries: list[tuple[PlatformEvent, workflow.ActivityHandle[None]]] = []

    def send(self, event: PlatformEvent) -> None:
        # An event carried over from an earlier run keeps the rest of its three days, counted from when it happened.
        left = PLATFORM_EVENT_SCHEDULE_TO_CLOSE - (workflow.now() - event.occurred_at)
        if left <= timedelta(0):
            workflow.logger.warning(
                "platform event %s given up: not delivered within its window", event.event_id
            )
            return
        self._deliveries.append(
            (
                event,
                workflow.start_activity_method(
                    PlatformEventActivities.deliver_platform_event,
                    event,
                    start_to_close_timeout=PLATFORM_EVENT_TIMEOUT,
                    schedule_to_close_timeout=left,
                    retry_policy=PLATFORM_EVENT_RETRY_POLICY,
                ),
            )
        )

    def delivered(self) -> bool:
        """Whether every delivery started has ended (delivered, or given up)."""
        return all(delivery.done() for _, delivery in self._deliveries)

    async def drain(self) -> None:
        for event, delivery in self._deliveries:
            try:
                await delivery
            except ActivityError:
                workflow.logger.warning("platform event %s not delivered within its window", event.event_id)
        self._deliveries.clear()

    def hand_over(self) -> list[PlatformEvent]:
        """The events not delivered yet, their deliveries here cancelled: the next run sends them again."""
        undelivered = []
        for event, delivery in self._deliveries:
            if not delivery.done():
                delivery.cancel()
                undelivered.append(event)
        self._deliveries.clear()
        return undelivered

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
    """Starts event deliveries without waiting for them; `drain` awaits them before completing or continuing."""

    def __init__(self) -> None:
        self._deliveries: list[workflow.ActivityHandle[None]] = []

    def send(self, event: PlatformEvent) -> None:
        self._deliveries.append(
            workflow.start_activity_method(
                PlatformEventActivities.deliver_platform_event,
                event,
                start_to_close_timeout=PLATFORM_EVENT_TIMEOUT,
                schedule_to_close_timeout=PLATFORM_EVENT_SCHEDULE_TO_CLOSE,
                retry_policy=PLATFORM_EVENT_RETRY_POLICY,
            )
        )

    async def drain(self) -> None:
        for delivery in self._deliveries:
            try:
                await delivery
            except ActivityError:
                workflow.logger.warning("a platform event could not be delivered within its retry window")
        self._deliveries.clear()

"""Redelivery of a kept platform event, asked for through the API (POST .../events/{event_id}/redeliver)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.notify import PlatformEventActivities
    from workflows.common import (
        PLATFORM_EVENT_RETRY_POLICY,
        PLATFORM_EVENT_SCHEDULE_TO_CLOSE,
        PLATFORM_EVENT_TIMEOUT,
    )
    from workflows.messages import RedeliverPlatformEvent


@workflow.defn
class PlatformEventRedeliveryWorkflow:
    """Delivers one kept event again, with the same id and body and a fresh signature, retried like the first
    delivery (for up to three days). Id `platform-event-redelivery:{event_id}`: a redelivery asked for while one
    runs joins it. No signals, updates or queries; each attempt's outcome is recorded with the event (the API
    lists it)."""

    @workflow.run
    async def run(self, request: RedeliverPlatformEvent) -> bool:
        try:
            await workflow.execute_activity_method(
                PlatformEventActivities.redeliver_platform_event,
                request,
                start_to_close_timeout=PLATFORM_EVENT_TIMEOUT,
                schedule_to_close_timeout=PLATFORM_EVENT_SCHEDULE_TO_CLOSE,
                retry_policy=PLATFORM_EVENT_RETRY_POLICY,
            )
        except ActivityError:
            workflow.logger.warning("platform event %s not redelivered within its window", request.event_id)
            return False
        return True

"""Client-side handles on the workflows: what the API and the activities call to start or signal them."""

from __future__ import annotations

from temporalio.client import Client

from workflows.ids import realm_events_workflow_id
from workflows.messages import RealmEventsInput


async def start_realm_events(temporal: Client, realm_id: str, task_queue: str) -> None:
    """Signal-with-start the company's events workflow (the webhook route and reconnects use this)."""
    await temporal.start_workflow(
        "QuickBooksEventsWorkflow",
        RealmEventsInput(realm_id=realm_id),
        id=realm_events_workflow_id(realm_id),
        task_queue=task_queue,
        start_signal="events_arrived",
    )

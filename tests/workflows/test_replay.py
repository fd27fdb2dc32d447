"""The workflow code still replays the recorded histories: a change that breaks determinism fails here.

Changes to running logic go behind `workflow.patched(...)` or a new workflow version (the invoice workflow's input
carries one); record a history of the new behaviour with `scripts/record_histories.py SUFFIX`, beside the old ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

import temporal_support
from settings import Settings
from workflows.connection import ConnectionWorkflow
from workflows.events import QuickBooksEventsWorkflow
from workflows.invoice import InvoiceWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert {path.stem for path in HISTORIES} >= {
        "invoice_paid_void_refused",
        "connection_connected_refreshed",
        "events_payments",
        # The invoice workflow's version 1 (a local first attempt that records itself, local store writes).
        "invoice_paid_void_refused_v1",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=[InvoiceWorkflow, ConnectionWorkflow, QuickBooksEventsWorkflow],
        data_converter=temporal_support.data_converter(Settings(_env_file=None)),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None

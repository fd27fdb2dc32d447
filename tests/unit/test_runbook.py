"""docs/operations.md names only updates, queries and search attributes that exist."""

from __future__ import annotations

import re
from pathlib import Path

from temporalio.workflow import _Definition

from workflows import search_attributes
from workflows.connection import ConnectionWorkflow
from workflows.events import QuickBooksEventsWorkflow
from workflows.invoice import InvoiceWorkflow

RUNBOOK = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
WORKFLOWS = {cls.__name__: _Definition.must_from_class(cls) for cls in (InvoiceWorkflow, ConnectionWorkflow, QuickBooksEventsWorkflow)}  # fmt: skip


def test_every_update_the_runbook_names_is_registered_on_its_workflow() -> None:
    rows = re.findall(r"^\| (\w+Workflow) \| `(\w+)` \|", RUNBOOK, re.MULTILINE)
    assert len(rows) >= 6
    for workflow_type, update in rows:
        assert update in WORKFLOWS[workflow_type].updates, (workflow_type, update)
    updates = {name for definition in WORKFLOWS.values() for name in definition.updates}
    queries = {name for definition in WORKFLOWS.values() for name in definition.queries}
    for name in re.findall(r"update execute .*?--name (\w+)", RUNBOOK, re.DOTALL):
        assert name in updates, name
    for name in re.findall(r"query --name (\w+)", RUNBOOK):
        assert name in queries, name
    # Every operator's update of the workflows is in the runbook's table.
    named = {update for _, update in rows}
    internal = {"wait_for_grant", "refresh_access_token", "disconnect"}  # the API's and activities' own
    assert updates - internal <= named


def test_the_runbook_queries_only_search_attributes_that_exist() -> None:
    known = {key.name for key in search_attributes.ALL} | {"WorkflowType", "ExecutionStatus"}
    used = set(re.findall(r"\b(Qbo\w+|WorkflowType|ExecutionStatus) (?:=|IN)", RUNBOOK))
    assert used and used <= known, used - known
    assert {key.name for key in search_attributes.ALL} <= set(re.findall(r"`(Qbo\w+)`", RUNBOOK))

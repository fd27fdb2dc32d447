"""Workflow ids are injective: no two different business keys give one id, whatever characters they hold."""

from __future__ import annotations

import itertools

from workflows.ids import connection_workflow_id, invoice_workflow_id, realm_events_workflow_id

# Every character that could act as a separator or an escape, plus ordinary ones.
ALPHABET = ["a", "1", "-", "_", ".", ":", "%", "/", "3A", " "]


def keys(max_length: int) -> list[str]:
    return [
        "".join(chars)
        for length in range(1, max_length + 1)
        for chars in itertools.product(ALPHABET, repeat=length)
    ]


def test_the_pair_from_the_report_gives_two_ids() -> None:
    assert invoice_workflow_id("acme", "corp-17") != invoice_workflow_id("acme-corp", "17")
    assert invoice_workflow_id("acme:corp", "17") != invoice_workflow_id("acme", "corp:17")


def test_invoice_ids_are_injective_over_every_short_pair() -> None:
    parts = keys(2)
    seen: dict[str, tuple[str, str]] = {}
    for account, invoice in itertools.product(parts, repeat=2):
        workflow_id = invoice_workflow_id(account, invoice)
        assert seen.setdefault(workflow_id, (account, invoice)) == (account, invoice), workflow_id


def test_ids_of_different_kinds_never_meet() -> None:
    parts = keys(3)
    invoices = {invoice_workflow_id(a, b) for a, b in itertools.product(keys(2), repeat=2)}
    connections = {connection_workflow_id(part) for part in parts}
    realms = {realm_events_workflow_id(part) for part in parts}
    assert len(connections) == len(realms) == len(parts)
    assert not invoices & connections and not invoices & realms and not connections & realms


def test_dedupe_keys_appended_to_an_id_stay_apart() -> None:
    # Timeline, notification and event keys are `<workflow id>/<kind>/<key>`: the id itself never holds `/`.
    for account, invoice in itertools.product(keys(2), repeat=2):
        assert "/" not in invoice_workflow_id(account, invoice)

"""The invoices the benchmarks send: the platform's send payload and the same invoice as a workflow snapshot."""

from __future__ import annotations

from typing import Any

from workflows.messages import InvoiceLine, InvoiceSnapshot

ISSUE_DATE = "2026-11-24"
DUE_DATE = "2026-12-24"
# (description, quantity, unit price in cents): 225.50 USD in all.
LINES = [("Architecture review", "1.5", 12000), ("Travel", "1", 4550)]


def client_of(index: int, clients: int) -> tuple[str, str]:
    """Invoices go to the clients in turn, so each of the first `clients` invoices has a new client."""
    number = index % clients
    return f"Client {number:03d}", f"client{number:03d}@example.com"


def invoice_number(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}"


def send_payload(
    number: str, client_name: str, client_email: str, *, currency: str = "USD", tax_rate: str | None = None
) -> dict[str, Any]:
    """The body of `POST /v1/accounts/{account}/invoices/{invoice}/send`; with `tax_rate`, on the first line."""
    lines: list[dict[str, Any]] = [
        {"description": description, "quantity": quantity, "unit_price_cents": cents}
        for description, quantity, cents in LINES
    ]
    if tax_rate is not None:
        lines[0]["tax_rate_percent"] = tax_rate
    return {
        "number": number,
        "client": {"name": client_name, "email": client_email},
        "currency": currency,
        "issue_date": ISSUE_DATE,
        "due_date": DUE_DATE,
        "lines": lines,
    }


def snapshot(number: str, client_name: str, client_email: str) -> InvoiceSnapshot:
    """The same invoice as the engine's workflow sees it (what `invoice_body` maps to a QuickBooks Invoice)."""
    return InvoiceSnapshot(
        number=number,
        client_name=client_name,
        client_email=client_email,
        currency="USD",
        issue_date=ISSUE_DATE,
        due_date=DUE_DATE,
        lines=[InvoiceLine(description, quantity, cents) for description, quantity, cents in LINES],
    )

"""QuickBooks calls per invoice, counted in the emulator's request log (Accounting API calls only).

Invoices are sent one at a time to a new company, and each is counted from its send until the engine is idle
again (Intuit's webhooks delivered and processed): the company's first invoice (new client, no service item
yet), the first invoice for another new client (item remembered), and steady state (customer and item
remembered). A full lifecycle is counted too: send -> synced -> a payment of the whole balance recorded in
QuickBooks -> Intuit's webhooks -> paid; the payment itself is made through the emulator's admin API (the user
in QuickBooks), which is not an API call of the engine's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.harness import THROTTLED, Stack, log, median, served, summarize_calls
from bench.workload import send_payload


@dataclass
class Counted:
    calls: dict[str, int]

    @property
    def total(self) -> int:
        return sum(count for kind, count in self.calls.items() if kind != THROTTLED)


@dataclass
class Lifecycle:
    sync: Counted
    payment: Counted

    @property
    def total(self) -> int:
        return self.sync.total + self.payment.total


# The editions counted: a US company without tax, and a Canadian one (a global edition) whose invoices carry
# 13% HST on one line and a zero-rated code on the other.
EDITIONS = {"US": ("USD", None), "CA": ("CAD", "13")}


@dataclass
class QboCallsResult:
    samples: int
    country: str = "US"
    connect: Counted | None = None
    first_in_company: Counted | None = None
    new_client: Counted | None = None
    steady: list[Counted] = field(default_factory=list)
    lifecycles: list[Lifecycle] = field(default_factory=list)

    @property
    def steady_median(self) -> float:
        return median([counted.total for counted in self.steady])

    @property
    def lifecycle_median(self) -> tuple[float, float, float]:
        return (
            median([item.sync.total for item in self.lifecycles]),
            median([item.payment.total for item in self.lifecycles]),
            median([item.total for item in self.lifecycles]),
        )


async def counted(stack: Stack, realm_id: str, action: Callable[[], Awaitable[None]]) -> Counted:
    """The calls made to the company from the action's start until the engine is idle again."""
    after_seq = await stack.last_seq(realm_id)
    await action()
    await stack.settle()
    entries = await stack.qbo_requests(realm_id, after_seq)
    calls = summarize_calls(entries)
    assert sum(calls.values()) - calls.get(THROTTLED, 0) == len(served(entries))
    return Counted(calls)


async def run(stack: Stack, *, samples: int, country: str = "US") -> QboCallsResult:
    result = QboCallsResult(samples, country)
    currency, tax_rate = EDITIONS[country]
    async with stack.running_worker():
        account_id, realm_id = await stack.connected_account(f"calls-{country.lower()}", country=country)
        # Connecting: the callback's CompanyInfo, the company check, the first change sweep.
        result.connect = Counted(summarize_calls(await stack.qbo_requests(realm_id, 0)))
        sequence = 0

        def send_and_sync(client: str) -> Callable[[], Awaitable[None]]:
            nonlocal sequence
            sequence += 1
            invoice_id = f"calls-{sequence}"
            payload = send_payload(
                f"C-{sequence:05d}",
                f"Calls {client}",
                f"{client}@example.com",
                currency=currency,
                tax_rate=tax_rate,
            )

            async def act() -> None:
                await stack.send_invoice(account_id, invoice_id, payload)
                await stack.wait_for_invoice(account_id, invoice_id, "synced")

            return act

        result.first_in_company = await counted(stack, realm_id, send_and_sync("first"))
        result.new_client = await counted(stack, realm_id, send_and_sync("second"))
        for _ in range(samples):
            result.steady.append(await counted(stack, realm_id, send_and_sync("first")))
        for _ in range(samples):
            invoice_id = f"calls-{sequence + 1}"
            sync = await counted(stack, realm_id, send_and_sync("second"))

            async def pay(invoice_id: str = invoice_id) -> None:
                invoice = await stack.invoice(account_id, invoice_id)
                await stack.pay_in_quickbooks(realm_id, invoice["quickbooks"]["invoice_id"])
                await stack.wait_for_invoice(account_id, invoice_id, "paid")

            result.lifecycles.append(Lifecycle(sync, await counted(stack, realm_id, pay)))
        log(
            f"QuickBooks calls ({country}): connect {result.connect.total}, first in company {result.first_in_company.total}, new client "
            f"{result.new_client.total}, steady {[item.total for item in result.steady]}, lifecycle "
            f"{[item.total for item in result.lifecycles]}"
        )
    return result


def describe(result: QboCallsResult) -> dict[str, Any]:
    return {
        "country": result.country,
        "connect": result.connect.calls if result.connect else None,
        "first_in_company": result.first_in_company.calls if result.first_in_company else None,
        "new_client": result.new_client.calls if result.new_client else None,
        "steady": [item.calls for item in result.steady],
        "lifecycle": [{"sync": item.sync.calls, "payment": item.payment.calls} for item in result.lifecycles],
    }

"""Bad input never gets a 500: every refusal is a 4xx with a stable code, and nothing is half-written."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from models.tables import Account, InvoiceSync
from tests.api.test_accounts_auth_errors import assert_error
from tests.e2e.test_payments_and_webhooks import signed
from tests.engine import Engine, invoice_payload, running_engine
from tests.support import Emulator, free_port

# QuickBooks amounts hold 15 digits in 10.5 format: at most 9,999,999,999.99 in cents.
LARGEST_AMOUNT_CENTS = 999_999_999_999


async def send(engine: Engine, account: str, invoice_id: str, payload: dict[str, Any]) -> httpx.Response:
    return await engine.api.post(f"/v1/accounts/{account}/invoices/{invoice_id}/send", json=payload)


def line(quantity: Any = "1", unit_price_cents: int = 100, description: str = "Work") -> dict[str, Any]:
    return {"description": description, "quantity": quantity, "unit_price_cents": unit_price_cents}


async def assert_not_recorded(engine: Engine, account: str, invoice_id: str) -> None:
    response = await engine.api.get(f"/v1/accounts/{account}/invoices/{invoice_id}")
    assert_error(response, 404, "invoice_not_found")


async def test_quantities_too_large_for_quickbooks_are_refused(engine: Engine) -> None:
    account = await engine.create_account()
    for quantity, unit_price in [
        ("1e15", 10**12),  # the product overflowed the decimal context: a 500
        ("1E+15", 100),
        (1e300, 1),
        ("10000000000", 1),  # 11 digits before the point: more than QuickBooks' Qty holds
    ]:
        response = await send(engine, account, "inv-q", invoice_payload(lines=[line(quantity, unit_price)]))
        error = assert_error(response, 422, "invalid_request")
        assert "quantity" in error["message"]
    await assert_not_recorded(engine, account, "inv-q")


async def test_amounts_up_to_quickbooks_limits_are_kept_exactly_and_beyond_them_refused(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    # The largest invoice QuickBooks can hold: far beyond a 32-bit column (21,474,836.47).
    largest = invoice_payload(lines=[line("1", LARGEST_AMOUNT_CENTS)])
    response = await send(engine, account, "inv-largest", largest)
    assert response.status_code == 202, response.text
    assert response.json()["invoice"]["total_cents"] == LARGEST_AMOUNT_CENTS
    stored = await engine.invoice(account, "inv-largest")
    assert (stored["total_cents"], stored["balance_cents"]) == (LARGEST_AMOUNT_CENTS, LARGEST_AMOUNT_CENTS)

    for payload in [
        invoice_payload(lines=[line("1", LARGEST_AMOUNT_CENTS + 1)]),  # a unit price
        invoice_payload(lines=[line("2", LARGEST_AMOUNT_CENTS // 2 + 1)]),  # a line's amount
        invoice_payload(lines=[line("1", LARGEST_AMOUNT_CENTS // 2 + 1)] * 2),  # the invoice's total
    ]:
        response = await send(engine, account, "inv-too-much", payload)
        error = assert_error(response, 422, "invalid_request")
        assert "9,999,999,999.99" in error["message"] or str(LARGEST_AMOUNT_CENTS) in error["message"]
    await assert_not_recorded(engine, account, "inv-too-much")


async def test_huge_offsets_and_limits_on_lists_are_refused(engine: Engine) -> None:
    account = await engine.create_account()
    for query in (
        "offset=100000000000000000000",
        "offset=9223372036854775808",
        "limit=100000000000000000000",
    ):
        response = await engine.api.get(f"/v1/accounts/{account}/invoices?{query}")
        assert_error(response, 422, "invalid_request")
    response = await engine.api.get(f"/v1/accounts/{account}/notifications?limit=100000000000000000000")
    assert_error(response, 422, "invalid_request")
    # The largest offset allowed answers an empty page.
    largest = await engine.api.get(f"/v1/accounts/{account}/invoices?offset=2147483647")
    assert largest.status_code == 200, largest.text
    assert largest.json() == {"invoices": [], "next_offset": None}


async def test_nul_characters_are_refused_in_every_text_field(engine: Engine) -> None:
    """PostgreSQL cannot store NUL; lone surrogates cannot even be encoded. Both are refused up front."""
    account = await engine.create_account()
    for bad in ("a\x00b", "a\ud800b"):
        for payload in [
            invoice_payload(number=f"INV-{bad}"),
            invoice_payload(client_name=f"Ada {bad}"),
            invoice_payload(client_email=f"ada{bad}@example.com"),
            invoice_payload(lines=[line(description=f"Work {bad}")]),
            invoice_payload(lines=[line(quantity=f"1{bad}")]),
            invoice_payload(currency=f"U{bad}"),
        ]:
            response = await engine.api.post(
                f"/v1/accounts/{account}/invoices/inv-nul/send",
                content=httpx_json(payload),
                headers={"Content-Type": "application/json"},
            )
            assert_error(response, 422, "invalid_request")
            assert "\x00" not in response.text
    await assert_not_recorded(engine, account, "inv-nul")
    for path in (
        f"/v1/accounts/{account}%00/invoices",
        f"/v1/accounts/{account}/invoices/inv%00",
        f"/v1/accounts/{account}/invoices?status=paid%00",
        f"/v1/accounts/{account}/notifications?include_resolved=true%00",
    ):
        assert_error(await engine.api.get(path), 422, "invalid_request")


def httpx_json(payload: dict[str, Any]) -> bytes:
    """JSON as a client may send it: json.dumps writes NUL and lone surrogates as \\u escapes."""
    return json.dumps(payload).encode()


async def test_concurrent_puts_create_one_account(engine: Engine) -> None:
    for _ in range(5):
        account = f"race-{uuid.uuid4().hex[:10]}"
        responses = await asyncio.gather(
            *(
                engine.api.put(f"/v1/accounts/{account}", json={"plan": plan, "quickbooks_addon": True})
                for plan in ["premium", "pro", "free", "premium"] * 2
            )
        )
        assert [response.status_code for response in responses] == [200] * 8, [r.text for r in responses]
        async with engine.sessions() as session:
            rows = (await session.exec(select(Account).where(Account.id == account))).all()
        assert len(rows) == 1


async def test_an_invoice_too_large_for_temporal_is_refused_before_anything_is_stored(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    # 3 MB of descriptions: more than a Temporal payload holds (2 MB), so its workflow could never start.
    huge = invoice_payload(lines=[line(description="x" * 4000)] * 750)
    response = await send(engine, account, "inv-huge", huge)
    assert_error(response, 413, "payload_too_large")
    # Within the request limit, but its snapshot would crowd a Temporal payload.
    large = invoice_payload(lines=[line(description="y" * 4000)] * 100)
    response = await send(engine, account, "inv-large", large)
    error = assert_error(response, 413, "invoice_too_large")
    assert "KiB" in error["message"]
    for invoice_id in ("inv-huge", "inv-large"):
        await assert_not_recorded(engine, account, invoice_id)
    async with engine.sessions() as session:
        assert (await session.exec(select(InvoiceSync).where(InvoiceSync.account_id == account))).all() == []
    # An ordinary invoice still goes through.
    response = await send(engine, account, "inv-ok", invoice_payload())
    assert response.status_code == 202, response.text


async def test_every_json_route_bounds_its_request_body(engine: Engine, http: httpx.AsyncClient) -> None:
    account = await engine.create_account()
    big = b'{"plan": "premium", "padding": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    for method, path in [
        ("PUT", f"/v1/accounts/{account}"),
        ("POST", f"/v1/accounts/{account}/quickbooks/disconnect"),
        ("POST", f"/v1/accounts/{account}/invoices/inv-1/send"),
    ]:
        response = await engine.api.request(
            method, path, content=big, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 413, "payload_too_large")

        # Without a Content-Length (chunked), the limit still holds.
        async def chunks() -> Any:
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        response = await engine.api.request(
            method, path, content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_error(response, 413, "payload_too_large")


async def test_a_database_that_does_not_answer_gives_503_with_retry_after(
    dev_env: WorkflowEnvironment, emulator: Emulator, task_queue: str, http: httpx.AsyncClient
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/qbo_sync"
    async with running_engine(
        env=dev_env, database_url=nowhere, emulator=emulator, task_queue=task_queue, with_worker=False
    ) as engine:
        for method, path, body in [
            ("GET", "/v1/accounts/acct-1", None),
            ("PUT", "/v1/accounts/acct-1", {"plan": "premium"}),
            ("GET", "/v1/accounts/acct-1/invoices", None),
            ("POST", "/v1/accounts/acct-1/invoices/inv-1/send", invoice_payload()),
            ("GET", "/v1/accounts/acct-1/notifications", None),
        ]:
            response = await engine.api.request(method, path, json=body)
            assert_error(response, 503, "temporarily_unavailable")
            assert int(response.headers["retry-after"]) > 0
            assert "password" not in response.text and "127.0.0.1" not in response.text
        # Intuit retries a 503, so nothing it sent is lost while the database is away.
        webhook = b'{"eventNotifications": []}'
        response = await http.post(
            f"{engine.api_url}/webhooks/quickbooks", content=webhook, headers=signed(webhook)
        )
        assert_error(response, 503, "temporarily_unavailable")
        ready = await http.get(f"{engine.api_url}/readyz")
        assert_error(ready, 503, "not_ready")


async def test_ids_as_long_as_allowed_work_everywhere(engine: Engine) -> None:
    """Ids may be 64 characters of [A-Za-z0-9_.:-]; a `:` is three once percent-encoded in workflow ids, so the
    dedupe keys built from them outgrew their column (a 500 on PostgreSQL)."""
    account = ":" * 63 + uuid.uuid4().hex[:1]
    invoice_id = ":" * 64
    await engine.create_account(account)
    response = await send(engine, account, invoice_id, invoice_payload())
    assert response.status_code == 202, response.text
    again = await send(engine, account, invoice_id, invoice_payload())
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert await engine.timeline(account, invoice_id) == [
        "Sent. Not synced: QuickBooks was not connected when this invoice was sent."
    ]
    voided = await engine.api.post(f"/v1/accounts/{account}/invoices/{invoice_id}/void")
    assert voided.status_code == 202, voided.text
    assert (await engine.timeline(account, invoice_id))[-1] == "Voided. It was never synced to QuickBooks."
    # The workflows' activities write such keys too.
    await engine.connect(account)
    synced_id = ":" * 63 + "s"
    response = await send(engine, account, synced_id, invoice_payload(number="LONG-IDS-1"))
    assert response.status_code == 202, response.text
    await engine.wait_for_invoice(account, synced_id, "synced")
    assert len(await engine.timeline(account, synced_id)) >= 2


async def test_the_web_apps_unknown_paths_and_methods_answer_the_apis_json_errors(engine: Engine) -> None:
    for path in (
        "/app/no-such-file.js",
        "/app/../settings.py",
        "/app/%2e%2e/settings.py",
        "/app/web/../../.env",
    ):
        response = await engine.api.get(path)
        assert response.status_code == 404, (path, response.status_code)
        assert response.headers["content-type"].startswith("application/json"), path
        assert response.json()["error"]["code"], path
        assert "TOKEN" not in response.text and "secret" not in response.text.lower(), path
    posted = await engine.api.post("/app/", content=b"x")
    assert posted.status_code == 405 and posted.json()["error"]["code"]

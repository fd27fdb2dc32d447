"""The admin API: configuration, companies, user actions in QuickBooks, clock, request log, state file."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from pathlib import Path

import pytest

from tests.emulator.helpers import (
    REDIRECT_URI,
    Connection,
    EmulatorHandle,
    StartEmulator,
    admin_ok,
    coded_line,
    connect,
    eventually,
    refresh,
    tax_code_id,
)


async def test_health(emulator: EmulatorHandle) -> None:
    assert await admin_ok(emulator, "GET", "/__admin/health") == {"status": "ok"}


async def test_config_update_returns_the_effective_config_without_secrets(
    emulator_factory: StartEmulator,
) -> None:
    emulator = await emulator_factory()

    config = await admin_ok(
        emulator,
        "PUT",
        "/__admin/config",
        {"webhook_url": "http://127.0.0.1:9/hook", "webhook_format": "cloudevents", "webhook_retry_scale": 0.5,
         "redirect_uris": ["http://127.0.0.1/a", "http://127.0.0.1/b"], "rate_limit_per_minute": 42,
         "concurrency_limit": 3, "verifier_token": "new-token"},
    )  # fmt: skip

    assert config["webhook_url"] == "http://127.0.0.1:9/hook"
    assert config["webhook_format"] == "cloudevents" and config["webhook_retry_scale"] == 0.5
    assert config["redirect_uris"] == ["http://127.0.0.1/a", "http://127.0.0.1/b"]
    assert (config["rate_limit_per_minute"], config["concurrency_limit"]) == (42, 3)
    assert config["client_id"] == "test-client-id"
    assert "client_secret" not in config and "verifier_token" not in config
    assert "test-client-secret" not in json.dumps(config) and "new-token" not in json.dumps(config)
    page = await emulator.admin.get(
        "/connect/oauth2",
        params={"client_id": "test-client-id", "response_type": "code", "scope": "com.intuit.quickbooks.accounting",
                "redirect_uri": "http://127.0.0.1/b", "state": "s"},
    )  # fmt: skip
    assert page.status_code == 200


@pytest.mark.parametrize("body", [{"webhook_format": "xml"}, {"rate_limit_per_minute": 0}, {"nonsense": 1}])
async def test_invalid_config_is_refused(emulator: EmulatorHandle, body: dict[str, object]) -> None:
    response = await emulator.admin.put("/__admin/config", json=body)

    assert response.status_code == 422


async def test_companies_are_created_listed_and_dumped(emulator: EmulatorHandle) -> None:
    created = await admin_ok(emulator, "POST", "/__admin/companies", {"name": "Dumped Co"}, status=201)
    realm_id = created["realm_id"]

    listed = await admin_ok(emulator, "GET", "/__admin/companies")
    dump = await emulator.company(realm_id)
    missing = await emulator.admin.get("/__admin/companies/0000000000000000")

    assert re.fullmatch(r"[1-9]\d{15}", realm_id)
    assert realm_id in [company["realm_id"] for company in listed["companies"]]
    assert dump["name"] == "Dumped Co"
    assert set(dump) >= {
        "customers",
        "items",
        "accounts",
        "invoices",
        "payments",
        "deleted",
        "authorizations",
    }
    assert [item["Name"] for item in dump["items"]] == ["Services", "Hours"]
    assert dump["authorizations"] == []
    assert missing.status_code == 404


async def test_bank_match_payment_pays_an_invoice_in_full_or_in_part(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    base = f"/__admin/companies/{conn.realm_id}"

    partial = await admin_ok(conn.emulator, "POST", f"{base}/payments",
                             {"invoice_id": invoice["Id"], "amount": "12.34"}, status=201)  # fmt: skip
    rest = await admin_ok(
        conn.emulator, "POST", f"{base}/payments", {"invoice_id": invoice["Id"]}, status=201
    )

    assert partial["payment"]["TotalAmt"] == 12.34
    assert rest["payment"]["TotalAmt"] == 87.66
    paid = await conn.read("Invoice", invoice["Id"])
    assert paid["Balance"] == 0
    assert {link["TxnId"] for link in paid["LinkedTxn"]} == {partial["payment_id"], rest["payment_id"]}


async def test_bank_match_payment_refuses_overpayment_and_unknown_invoices(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    base = f"/__admin/companies/{conn.realm_id}"

    too_much = await conn.emulator.admin.post(
        f"{base}/payments", json={"invoice_id": invoice["Id"], "amount": "100.01"}
    )
    unknown = await conn.emulator.admin.post(f"{base}/payments", json={"invoice_id": "4242", "amount": "1"})

    assert too_much.status_code == 400
    assert too_much.json()["fault"]["Fault"]["Error"][0]["code"] == "6000"
    assert unknown.status_code == 404


async def test_user_actions_void_and_delete_as_in_the_quickbooks_ui(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 100)
    base = f"/__admin/companies/{conn.realm_id}"
    first = await admin_ok(
        conn.emulator, "POST", f"{base}/payments", {"invoice_id": invoice["Id"]}, status=201
    )

    refused = await conn.emulator.admin.post(f"{base}/invoices/{invoice['Id']}/void")
    voided_payment = await admin_ok(conn.emulator, "POST", f"{base}/payments/{first['payment_id']}/void")
    second = await admin_ok(
        conn.emulator, "POST", f"{base}/payments", {"invoice_id": invoice["Id"]}, status=201
    )
    deleted = await admin_ok(conn.emulator, "POST", f"{base}/payments/{second['payment_id']}/delete")
    voided_invoice = await admin_ok(conn.emulator, "POST", f"{base}/invoices/{invoice['Id']}/void")

    assert refused.status_code == 400
    assert voided_payment["payment"]["TotalAmt"] == 0
    assert deleted["payment"]["status"] == "Deleted"
    assert voided_invoice["invoice"]["PrivateNote"] == "Voided"
    dump = await conn.emulator.company(conn.realm_id)
    assert dump["deleted"] == [
        {"entity": "Payment", "Id": second["payment_id"], "deleted_at": dump["deleted"][0]["deleted_at"]}
    ]


async def test_clock_moves_forward_only(emulator: EmulatorHandle) -> None:
    before = await admin_ok(emulator, "GET", "/__admin/clock")

    after = await admin_ok(emulator, "POST", "/__admin/clock", {"advance_seconds": 3600})
    backwards = await emulator.admin.post("/__admin/clock", json={"advance_seconds": -5})

    assert after["offset_seconds"] == before["offset_seconds"] + 3600
    assert after["now"] > before["now"]
    assert backwards.status_code == 422


async def test_request_log_lists_api_and_oauth_calls_with_their_outcome(conn: Connection) -> None:
    start = (await admin_ok(conn.emulator, "GET", "/__admin/requests"))["requests"][-1]["seq"]
    await conn.post("customer", {"DisplayName": "Logged"}, {"requestid": "log-1", "minorversion": "75"})
    await conn.get("customer/999")
    await refresh(conn.emulator, conn.refresh_token)

    entries = (await admin_ok(conn.emulator, "GET", f"/__admin/requests?since_seq={start}"))["requests"]
    mine = await admin_ok(
        conn.emulator, "GET", f"/__admin/requests?since_seq={start}&realm_id={conn.realm_id}"
    )

    created, missing, refreshed = [entry for entry in entries if entry["realm_id"] in (conn.realm_id, None)][
        -3:
    ]
    assert (created["method"], created["path"], created["status"]) == ("POST", conn.path("customer"), 200)
    assert created["requestid"] == "log-1" and created["replay"] is False
    assert "minorversion=75" in created["query"]
    assert (missing["status"], missing["fault_code"]) == (400, "610")
    assert (refreshed["path"], refreshed["grant_type"], refreshed["realm_id"]) == (
        "/oauth2/v1/tokens/bearer", "refresh_token", None,
    )  # fmt: skip
    assert [entry["seq"] for entry in mine["requests"]] == [created["seq"], missing["seq"]]
    assert all(entry["seq"] > start for entry in entries)


async def test_import_refuses_unknown_entities(conn: Connection) -> None:
    response = await conn.emulator.admin.post(
        f"/__admin/companies/{conn.realm_id}/import", json={"Vendor": [{"Id": "1"}]}
    )

    assert response.status_code == 400


# --- the state file ---------------------------------------------------------------------------------------


async def stop(emulator: EmulatorHandle, sig: signal.Signals = signal.SIGTERM) -> None:
    emulator.process.send_signal(sig)
    await asyncio.to_thread(emulator.process.wait, 10)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """Where the emulator under test keeps its state file."""
    return tmp_path / "state.json"


async def with_state_file(emulator_factory: StartEmulator, state: Path, *options: str) -> EmulatorHandle:
    return await emulator_factory("--redirect-uri", REDIRECT_URI, "--state-file", str(state), *options)


def reconnected(conn: Connection, emulator: EmulatorHandle) -> Connection:
    """The same company and tokens, on another emulator process."""
    return Connection(emulator, conn.realm_id, conn.access_token, conn.refresh_token)


async def test_restart_keeps_data_tokens_requestids_and_the_clock(
    emulator_factory: StartEmulator, state: Path
) -> None:
    first = await with_state_file(emulator_factory, state)
    conn = await connect(first)
    customer = await conn.customer("Survivor")
    requestid = str(uuid.uuid4())
    created = await conn.post("invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [
        {"DetailType": "SalesItemLineDetail", "Amount": 5, "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}]},
        {"requestid": requestid})  # fmt: skip
    await admin_ok(first, "POST", "/__admin/clock", {"advance_seconds": 120})
    await stop(first)

    second = await with_state_file(emulator_factory, state)
    again = reconnected(conn, second)

    assert (await again.read("Customer", customer["Id"]))["DisplayName"] == "Survivor"
    replay = await again.post("invoice", {"CustomerRef": {"value": customer["Id"]}}, {"requestid": requestid})
    assert replay.content == created.content
    assert (await refresh(second, conn.refresh_token)).status_code == 200
    assert (await admin_ok(second, "GET", "/__admin/clock"))["offset_seconds"] >= 120
    assert (await again.customer("Next"))["Id"] == "2"


async def test_changes_reach_the_state_file_soon_even_if_the_process_is_killed(
    emulator_factory: StartEmulator, state: Path
) -> None:
    first = await with_state_file(emulator_factory, state, "--save-debounce-seconds", "0.1")
    conn = await connect(first)
    await conn.customer("Saved Before The Crash")

    def contains_the_customer() -> bool:
        return state.exists() and "Saved Before The Crash" in state.read_text()

    async def saved() -> bool:
        return await asyncio.to_thread(contains_the_customer)

    await eventually(saved)
    await stop(first, signal.SIGKILL)
    second = await with_state_file(emulator_factory, state)
    again = reconnected(conn, second)

    assert (await again.read("Customer", "1"))["DisplayName"] == "Saved Before The Crash"
    assert await asyncio.to_thread(lambda: list(state.parent.iterdir())) == [
        state
    ]  # no temporary files left behind


async def test_a_canadian_company_survives_a_restart(emulator_factory: StartEmulator, state: Path) -> None:
    first = await with_state_file(emulator_factory, state)
    conn = await connect(first, country="CA", multicurrency=True,
                         preferences={"AccountingInfoPrefs": {"BookCloseDate": "2026-01-31"}})  # fmt: skip
    hst = await tax_code_id(conn, "HST ON")
    customer = await conn.customer(CurrencyRef={"value": "USD"})
    invoice = await conn.ok(
        "invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [coded_line(6698.22, hst)]}
    )
    await stop(first)

    second = await with_state_file(emulator_factory, state)
    again = reconnected(conn, second)

    assert (await again.read("Invoice", invoice["Id"]))["TxnTaxDetail"]["TotalTax"] == 870.77
    assert await tax_code_id(again, "HST ON") == hst
    dump = await second.company(conn.realm_id)
    assert (dump["country"], dump["home_currency"], dump["multicurrency"]) == ("CA", "CAD", True)
    assert dump["preferences"]["AccountingInfoPrefs"]["BookCloseDate"] == "2026-01-31"
    assert [row["Code"] for row in dump["currencies"]] == ["USD"]
    fresh = await again.ok(
        "invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [coded_line(1, hst)]}
    )
    assert int(fresh["Id"]) > int(invoice["Id"])
    assert (await again.customer("Missing Code")).get("DefaultTaxCodeRef") is None


async def test_a_state_file_from_before_editions_loads_as_a_us_company(
    emulator_factory: StartEmulator, state: Path
) -> None:
    first = await with_state_file(emulator_factory, state)
    conn = await connect(first)
    await stop(first)
    data = json.loads(state.read_text())
    for company in data["companies"]:
        del company["country"]
        for table in ("TaxCode", "TaxRate", "CompanyCurrency"):
            del company["entities"][table]
    state.write_text(json.dumps(data))

    second = await with_state_file(emulator_factory, state)
    again = reconnected(conn, second)

    assert (await second.company(conn.realm_id))["country"] == "US"
    assert sorted(row["Id"] for row in (await again.query("select * from TaxCode")).json()["QueryResponse"]["TaxCode"]) == [
        "NON", "TAX",
    ]  # fmt: skip
    customer = await again.customer()
    assert (await again.invoice(customer["Id"], 10))["Line"][0]["SalesItemLineDetail"]["TaxCodeRef"] == {
        "value": "NON"
    }

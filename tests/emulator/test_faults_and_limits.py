"""Injected faults (before/after, latency, token endpoint) and Intuit's throttling (rate and concurrency)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.emulator.helpers import (
    REDIRECT_URI,
    Connection,
    EmulatorHandle,
    StartEmulator,
    admin_ok,
    connect,
    eventually,
    fault_of,
    refresh,
)


async def inject(emulator: EmulatorHandle, **spec: Any) -> dict[str, Any]:
    result: dict[str, Any] = await admin_ok(emulator, "POST", "/__admin/faults", spec, status=201)
    return result


async def last_request(conn: Connection) -> dict[str, Any]:
    log = await admin_ok(conn.emulator, "GET", f"/__admin/requests?realm_id={conn.realm_id}")
    entry: dict[str, Any] = log["requests"][-1]
    return entry


def invoice_body(customer_id: str) -> dict[str, Any]:
    return {
        "CustomerRef": {"value": customer_id},
        "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 10,
                  "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": 10}}],
    }  # fmt: skip


# --- injected faults --------------------------------------------------------------------------------------


async def test_before_fault_answers_with_the_error_without_doing_the_write(conn: Connection) -> None:
    customer = await conn.customer()
    fault = await inject(conn.emulator, method="POST", path_contains="/invoice", realm_id=conn.realm_id,
                         status=500, fault_code="10000", fault_type="SystemFault", message="Boom")  # fmt: skip

    failed = await conn.post("invoice", invoice_body(customer["Id"]))
    retried = await conn.post("invoice", invoice_body(customer["Id"]))

    assert failed.status_code == 500
    assert failed.json()["Fault"]["type"] == "SystemFault"
    assert fault_of(failed)["code"] == "10000"
    assert retried.status_code == 200
    assert retried.json()["Invoice"]["Id"] == "1"  # the failed call never took an Id
    log = (await admin_ok(conn.emulator, "GET", f"/__admin/requests?realm_id={conn.realm_id}"))["requests"]
    assert [e["injected_fault"] for e in log if e["method"] == "POST" and "/invoice" in e["path"]] == [
        fault["id"],
        None,
    ]
    assert [e["fault_code"] for e in log if "/invoice" in e["path"]] == ["10000", None]


async def test_after_fault_commits_the_write_and_loses_the_answer_so_a_requestid_retry_replays(
    conn: Connection,
) -> None:
    customer = await conn.customer()
    await inject(conn.emulator, method="POST", path_contains="/invoice", realm_id=conn.realm_id, status=503,
                 apply="after")  # fmt: skip
    requestid = str(uuid.uuid4())

    lost = await conn.post("invoice", invoice_body(customer["Id"]), {"requestid": requestid})
    retried = await conn.post("invoice", invoice_body(customer["Id"]), {"requestid": requestid})

    assert lost.status_code == 503
    assert retried.status_code == 200
    assert (await last_request(conn))["replay"] is True
    assert retried.json()["Invoice"]["Id"] == "1"
    count = (await conn.query("select count(*) from Invoice")).json()["QueryResponse"]["totalCount"]
    assert count == 1


@pytest.mark.parametrize("apply", ["before", "after"])
async def test_latency_only_faults_delay_a_normal_answer(conn: Connection, apply: str) -> None:
    await inject(
        conn.emulator,
        path_contains="/query",
        realm_id=conn.realm_id,
        status=None,
        latency_ms=300,
        apply=apply,
    )

    answer = await conn.query("select * from Customer")

    assert answer.status_code == 200
    assert (await last_request(conn))["duration_ms"] >= 300


async def test_injected_429_and_401_use_intuits_real_bodies(conn: Connection) -> None:
    await inject(conn.emulator, realm_id=conn.realm_id, status=429)
    await inject(conn.emulator, realm_id=conn.realm_id, status=401)

    throttled = await conn.query("select * from Customer")
    unauthorized = await conn.query("select * from Customer")

    assert throttled.status_code == 429
    assert throttled.headers["content-type"].startswith("text/xml")
    assert 'code="3001"' in throttled.text and "retry-after" not in throttled.headers
    assert unauthorized.status_code == 401
    assert unauthorized.json()["fault"]["error"][0]["code"] == "3200"
    assert unauthorized.headers["www-authenticate"] == 'Bearer realm="Intuit", error="invalid_token"'
    assert (await conn.query("select * from Customer")).status_code == 200


async def test_faults_match_by_realm_method_and_count_and_can_be_listed_and_cleared(conn: Connection) -> None:
    other = await connect(conn.emulator)
    await inject(conn.emulator, count=2, method="GET", realm_id=conn.realm_id, status=502)
    await inject(conn.emulator, count=5, realm_id=conn.realm_id, path_contains="/nothing-matches", status=500)

    posted = await conn.post("customer", {"DisplayName": "Not A GET"})
    others = await other.query("select * from Customer")
    first = await conn.query("select * from Customer")
    pending = (await admin_ok(conn.emulator, "GET", "/__admin/faults"))["faults"]
    second = await conn.query("select * from Customer")
    third = await conn.query("select * from Customer")
    cleared = await admin_ok(conn.emulator, "DELETE", "/__admin/faults")

    assert posted.status_code == 200 and others.status_code == 200
    assert [first.status_code, second.status_code, third.status_code] == [502, 502, 200]
    assert sorted(fault["count"] for fault in pending if fault["realm_id"] == conn.realm_id) == [1, 5]
    assert cleared["cleared"] >= 1
    assert all(
        f["realm_id"] != conn.realm_id
        for f in (await admin_ok(conn.emulator, "GET", "/__admin/faults"))["faults"]
    )


async def test_lost_refresh_response_leaves_the_old_refresh_token_usable(conn: Connection) -> None:
    await inject(conn.emulator, path_contains="/oauth2/v1/tokens/bearer", status=500, apply="after")

    lost = await refresh(conn.emulator, conn.refresh_token)
    recovered = await refresh(conn.emulator, conn.refresh_token)

    assert lost.status_code == 500 and lost.json()["error"] == "server_error"
    assert recovered.status_code == 200
    (grant,) = (await conn.emulator.company(conn.realm_id))["authorizations"]
    assert grant["refresh_tokens"] == 3  # the original, the lost one, and the recovered one
    log = (await admin_ok(conn.emulator, "GET", "/__admin/requests"))["requests"]
    token_calls = [entry for entry in log if entry["path"] == "/oauth2/v1/tokens/bearer"][-2:]
    assert [(entry["grant_type"], entry["status"]) for entry in token_calls] == [
        ("refresh_token", 500),
        ("refresh_token", 200),
    ]


async def test_injected_token_endpoint_error_can_carry_an_oauth_error_code(conn: Connection) -> None:
    await inject(conn.emulator, path_contains="/tokens/bearer", status=400, oauth_error="invalid_grant",
                 message="Token invalid")  # fmt: skip

    answer = await refresh(conn.emulator, conn.refresh_token)

    assert answer.status_code == 400
    assert answer.json() == {"error_description": "Token invalid", "error": "invalid_grant"}


async def test_admin_calls_are_never_affected_by_faults(conn: Connection) -> None:
    await inject(conn.emulator, path_contains="/__admin", status=500)

    assert (await conn.emulator.admin.get("/__admin/health")).status_code == 200
    await admin_ok(conn.emulator, "DELETE", "/__admin/faults")


# --- throttling -------------------------------------------------------------------------------------------


async def test_more_than_the_per_minute_limit_gets_the_xml_throttle_fault(
    emulator_factory: StartEmulator,
) -> None:
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI, "--rate-limit-per-minute", "5")
    conn = await connect(emulator)
    other = await connect(emulator)

    answers = [await conn.query("select * from Customer") for _ in range(6)]

    assert [answer.status_code for answer in answers] == [200] * 5 + [429]
    throttled = answers[-1]
    assert throttled.headers["content-type"].startswith("text/xml")
    assert "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>" in throttled.text
    assert "<Detail>The request limit was reached.  Try again later</Detail>" in throttled.text
    assert "retry-after" not in throttled.headers
    assert (await other.query("select * from Customer")).status_code == 200
    for _ in range(10):
        assert (await emulator.admin.get(f"/__admin/companies/{conn.realm_id}")).status_code == 200
    log = (await admin_ok(emulator, "GET", f"/__admin/requests?realm_id={conn.realm_id}"))["requests"]
    assert log[-1]["fault_code"] == "3001"


async def test_throttle_retry_after_option_adds_the_header(emulator_factory: StartEmulator) -> None:
    emulator = await emulator_factory(
        "--redirect-uri", REDIRECT_URI, "--rate-limit-per-minute", "1", "--throttle-retry-after", "7"
    )
    conn = await connect(emulator)

    await conn.query("select * from Customer")
    throttled = await conn.query("select * from Customer")

    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "7"


async def test_the_rate_limit_can_be_changed_at_run_time(emulator_factory: StartEmulator) -> None:
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI)
    conn = await connect(emulator)

    config = await admin_ok(emulator, "PUT", "/__admin/config", {"rate_limit_per_minute": 2})
    answers = [(await conn.query("select * from Customer")).status_code for _ in range(3)]

    assert config["rate_limit_per_minute"] == 2
    assert answers == [200, 200, 429]


async def test_more_than_the_concurrency_limit_in_flight_gets_429(emulator_factory: StartEmulator) -> None:
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI, "--concurrency-limit", "2")
    conn = await connect(emulator)
    await inject(emulator, count=2, path_contains="/query", status=None, latency_ms=1500)

    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=10) as client:
        slow = [
            asyncio.create_task(
                client.get(conn.path("query"), params={"query": "select * from Item"}, headers=conn.headers())
            )
            for _ in range(2)
        ]

        async def both_in_flight() -> bool:
            throttle = await admin_ok(emulator, "GET", "/__admin/throttle")
            return bool(throttle["realms"].get(conn.realm_id, {}).get("in_flight") == 2)

        await eventually(both_in_flight)
        third = await conn.get(f"companyinfo/{conn.realm_id}")
        finished = await asyncio.gather(*slow)

    assert third.status_code == 429 and 'code="3001"' in third.text
    assert [answer.status_code for answer in finished] == [200, 200]
    assert (await conn.get(f"companyinfo/{conn.realm_id}")).status_code == 200
    throttle = (await admin_ok(emulator, "GET", "/__admin/throttle"))["realms"][conn.realm_id]
    # Three were under way at once from the caller's side, the refused one included; one was refused.
    assert (throttle["max_in_flight_seen"], throttle["refused"], throttle["in_flight"]) == (3, 1, 0)


async def test_two_hundred_concurrent_requests_are_all_answered(emulator_factory: StartEmulator) -> None:
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI, "--concurrency-limit", "1000")
    connections = [await connect(emulator) for _ in range(4)]

    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=30) as client:

        async def create(index: int) -> int:
            conn = connections[index % len(connections)]
            response = await client.post(
                conn.path("customer"), json={"DisplayName": f"Load {index}"}, headers=conn.headers()
            )
            return response.status_code

        statuses = await asyncio.gather(*(create(i) for i in range(200)))

    assert statuses == [200] * 200
    total = 0
    for conn in connections:
        total += (await conn.query("select count(*) from Customer")).json()["QueryResponse"]["totalCount"]
    assert total == 200

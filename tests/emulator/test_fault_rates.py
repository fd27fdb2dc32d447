"""Faults for chaos runs: rates drawn from a seeded generator, dropped connections, answers later than the client
waits, webhook drops by rate, and the counts that tell injected faults from Intuit's own throttling."""

from __future__ import annotations

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
    webhook_receiver,
)
from tests.emulator.test_faults_and_limits import inject, invoice_body


async def statuses_of_queries(conn: Connection, calls: int) -> list[int]:
    return [(await conn.query("select * from Item")).status_code for _ in range(calls)]


async def requests_of(conn: Connection) -> list[dict[str, Any]]:
    log = await admin_ok(conn.emulator, "GET", f"/__admin/requests?realm_id={conn.realm_id}")
    entries: list[dict[str, Any]] = log["requests"]
    return entries


async def invoice_count(conn: Connection) -> int:
    answer = await conn.query("select count(*) from Invoice")
    count: int = answer.json()["QueryResponse"]["totalCount"]
    return count


async def test_a_rate_fault_hits_that_share_of_calls_and_the_same_seed_draws_the_same_calls(
    conn: Connection,
) -> None:
    await admin_ok(conn.emulator, "PUT", "/__admin/faults/seed", {"seed": 7})
    fault = await inject(conn.emulator, realm_id=conn.realm_id, path_contains="/query", status=503, rate=0.3)
    first = await statuses_of_queries(conn, 40)
    await admin_ok(conn.emulator, "PUT", "/__admin/faults/seed", {"seed": 7})
    second = await statuses_of_queries(conn, 40)
    state = await admin_ok(conn.emulator, "GET", "/__admin/faults")
    await admin_ok(conn.emulator, "DELETE", "/__admin/faults")

    assert first == second
    assert set(first) == {200, 503} and 4 <= first.count(503) <= 20
    (listed,) = [f for f in state["faults"] if f["id"] == fault["id"]]
    assert listed["injected"] == 2 * first.count(503) and listed["effect"] == "503_before"
    assert state["seed"] == 7 and state["injected"]["503_before"] >= 2 * first.count(503)
    # Cleared, it fires no more; what it injected is still counted.
    assert await statuses_of_queries(conn, 5) == [200] * 5
    after = await admin_ok(conn.emulator, "GET", "/__admin/faults")
    assert after["injected"]["503_before"] == state["injected"]["503_before"]


async def test_rates_of_matching_faults_add_up_with_one_draw_per_call(conn: Connection) -> None:
    await inject(conn.emulator, realm_id=conn.realm_id, path_contains="/query", status=500, rate=0.5)
    await inject(conn.emulator, realm_id=conn.realm_id, path_contains="/query", status=502, rate=0.5)
    statuses = await statuses_of_queries(conn, 20)
    await admin_ok(conn.emulator, "DELETE", "/__admin/faults")

    assert set(statuses) == {500, 502}


async def test_a_counted_fault_goes_before_a_rate_fault(conn: Connection) -> None:
    await inject(conn.emulator, realm_id=conn.realm_id, path_contains="/query", status=500, rate=1.0)
    await inject(conn.emulator, realm_id=conn.realm_id, path_contains="/query", status=429, count=1)
    statuses = await statuses_of_queries(conn, 2)
    await admin_ok(conn.emulator, "DELETE", "/__admin/faults")

    assert statuses == [429, 500]


@pytest.mark.parametrize("rate", [0, 1.5])
async def test_a_rate_outside_zero_to_one_is_refused(emulator: EmulatorHandle, rate: float) -> None:
    answer = await emulator.admin.post("/__admin/faults", json={"rate": rate})
    assert answer.status_code == 422


async def test_a_dropped_connection_after_the_write_commits_it_and_a_requestid_retry_replays(
    conn: Connection,
) -> None:
    customer = await conn.customer()
    await inject(conn.emulator, realm_id=conn.realm_id, method="POST", path_contains="/invoice",
                 drop_connection=True, apply="after")  # fmt: skip
    requestid = str(uuid.uuid4())

    with pytest.raises(httpx.RemoteProtocolError):
        await conn.post("invoice", invoice_body(customer["Id"]), {"requestid": requestid})
    retried = await conn.post("invoice", invoice_body(customer["Id"]), {"requestid": requestid})

    assert retried.status_code == 200 and await invoice_count(conn) == 1
    dropped, replayed = [e for e in await requests_of(conn) if e["method"] == "POST"][-2:]
    assert (dropped["status"], dropped["interrupted"]) == (None, "dropped")
    assert dropped["injected_fault"] is not None and replayed["replay"] is True


async def test_a_dropped_connection_before_the_write_does_not_do_it(conn: Connection) -> None:
    customer = await conn.customer()
    await inject(conn.emulator, realm_id=conn.realm_id, method="POST", path_contains="/invoice",
                 drop_connection=True)  # fmt: skip

    with pytest.raises(httpx.RemoteProtocolError):
        await conn.post("invoice", invoice_body(customer["Id"]))

    assert await invoice_count(conn) == 0


@pytest.mark.parametrize(("apply", "committed"), [("after", 1), ("before", 0)])
async def test_an_answer_later_than_the_client_waits_frees_its_slot_when_the_client_gives_up(
    conn: Connection, apply: str, committed: int
) -> None:
    customer = await conn.customer()
    # After: the write is done and its answer comes too late. Before: an error nobody waits for.
    await inject(conn.emulator, realm_id=conn.realm_id, method="POST", path_contains="/invoice",
                 status=500, latency_ms=5000, apply=apply)  # fmt: skip

    async with httpx.AsyncClient(base_url=conn.emulator.base_url, timeout=0.5) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post(
                conn.path("invoice"), json=invoice_body(customer["Id"]), headers=conn.headers()
            )

    async def logged() -> dict[str, Any] | None:
        posts = [e for e in await requests_of(conn) if e["method"] == "POST" and "/invoice" in e["path"]]
        return posts[-1] if posts else None

    entry = await eventually(logged)
    assert (entry["status"], entry["interrupted"]) == (None, "client_gone")
    assert entry["duration_ms"] < 3000
    throttle = await admin_ok(conn.emulator, "GET", "/__admin/throttle")
    assert throttle["realms"][conn.realm_id]["in_flight"] == 0
    assert await invoice_count(conn) == committed


async def test_totals_tell_the_429s_of_intuits_limits_from_injected_ones(
    emulator_factory: StartEmulator,
) -> None:
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI, "--rate-limit-per-minute", "2")
    conn = await connect(emulator)
    await inject(emulator, realm_id=conn.realm_id, status=429)

    statuses = await statuses_of_queries(conn, 4)
    totals = (await admin_ok(emulator, "GET", f"/__admin/requests/totals?realm_id={conn.realm_id}"))["totals"]

    # The injected 429 comes after admission: it counts toward the minute, like any answered call.
    assert statuses == [429, 200, 429, 429]
    assert totals["requests"] == 4 and totals["status_429"] == 3
    assert totals["injected"] == 1 and totals["throttled_not_injected"] == 2
    everything = (await admin_ok(emulator, "GET", "/__admin/requests/totals"))["totals"]
    assert everything["requests"] >= 4  # the OAuth calls of connecting, under no realm, too


async def test_webhook_drops_by_rate_are_drawn_per_event_and_counted(emulator_factory: StartEmulator) -> None:
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI, "--fault-seed", "3")
    async with webhook_receiver() as receiver:
        await admin_ok(emulator, "PUT", "/__admin/config", {"webhook_url": receiver.url,
                                                           "webhook_batch_seconds": 0.05})  # fmt: skip
        conn = await connect(emulator)
        await admin_ok(emulator, "POST", "/__admin/faults", {"kind": "webhook_drop", "rate": 0.5}, status=201)
        for n in range(20):
            await conn.customer(f"Rated {n}")
        state = await admin_ok(emulator, "GET", "/__admin/faults")
        dropped = state["injected"]["webhook_drop"]
        assert state["seed"] == 3 and 3 <= dropped <= 17

        async def delivered() -> int | None:
            log = (await admin_ok(emulator, "GET", "/__admin/webhooks"))["deliveries"]
            events = sum(len(entry["events"]) for entry in log if entry["status"] == 200)
            return events if events == 20 - dropped else None

        await eventually(delivered)

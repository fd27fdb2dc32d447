"""`requestid`: one effect per (company, requestid), and the first answer replayed byte for byte."""

from __future__ import annotations

import uuid

from tests.emulator.helpers import Connection, admin_ok, connect, fault_of


def rid() -> str:
    return str(uuid.uuid4())


async def test_replayed_create_returns_the_original_response_without_creating_twice(conn: Connection) -> None:
    requestid = rid()
    body = {"DisplayName": "Once Only"}

    first = await conn.post("customer", body, {"requestid": requestid, "minorversion": "75"})
    await admin_ok(conn.emulator, "POST", "/__admin/clock", {"advance_seconds": 3})
    second = await conn.post("customer", body, {"requestid": requestid, "minorversion": "75"})

    assert first.status_code == second.status_code == 200
    assert second.content == first.content  # including the original `time`
    count = (await conn.query("select count(*) from Customer")).json()["QueryResponse"]["totalCount"]
    assert count == 1
    log = (await admin_ok(conn.emulator, "GET", f"/__admin/requests?realm_id={conn.realm_id}"))["requests"]
    writes = [entry for entry in log if entry["requestid"] == requestid]
    assert [entry["replay"] for entry in writes] == [False, True]


async def test_a_replay_returns_the_original_error_even_if_the_call_would_now_succeed(
    conn: Connection,
) -> None:
    existing = await conn.customer("Taken Name")
    requestid = rid()
    refused = await conn.post("customer", {"DisplayName": "Taken Name"}, {"requestid": requestid})
    await conn.ok(
        "customer", {"Id": existing["Id"], "SyncToken": "0", "sparse": True, "DisplayName": "Freed"}
    )

    replay = await conn.post("customer", {"DisplayName": "Taken Name"}, {"requestid": requestid})

    assert fault_of(refused)["code"] == "6240"
    assert replay.status_code == 400 and replay.content == refused.content
    found = (await conn.query("select * from Customer where DisplayName = 'Taken Name'")).json()
    assert found["QueryResponse"] == {}


async def test_a_replayed_void_does_not_void_twice(conn: Connection) -> None:
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)
    requestid = rid()
    params = {"operation": "void", "requestid": requestid}

    first = await conn.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, params)
    second = await conn.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, params)

    assert first.content == second.content
    assert (await conn.read("Invoice", invoice["Id"]))["SyncToken"] == "1"


async def test_a_replay_with_a_different_body_still_gets_the_first_answer(conn: Connection) -> None:
    requestid = rid()

    first = await conn.post("customer", {"DisplayName": "First Body"}, {"requestid": requestid})
    second = await conn.post("customer", {"DisplayName": "Second Body"}, {"requestid": requestid})

    assert second.content == first.content
    assert (await conn.query("select * from Customer where DisplayName = 'Second Body'")).json()[
        "QueryResponse"
    ] == {}


async def test_requestids_are_scoped_to_the_company(conn: Connection) -> None:
    other = await connect(conn.emulator)
    requestid = rid()

    mine = await conn.post("customer", {"DisplayName": "Same Request"}, {"requestid": requestid})
    theirs = await other.post("customer", {"DisplayName": "Same Request"}, {"requestid": requestid})

    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["Customer"]["Id"] == theirs.json()["Customer"]["Id"] == "1"
    assert theirs.content != mine.content


async def test_requestid_longer_than_50_characters_is_a_validation_fault(conn: Connection) -> None:
    too_long = await conn.post("customer", {"DisplayName": "Long Id"}, {"requestid": "r" * 51})
    just_fits = await conn.post("customer", {"DisplayName": "Long Id"}, {"requestid": "r" * 50})

    assert too_long.status_code == 400
    assert too_long.json()["Fault"]["type"] == "ValidationFault"
    assert just_fits.status_code == 200

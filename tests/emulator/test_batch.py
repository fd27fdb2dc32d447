"""POST /batch: independent items answered in one 200, per-item faults, void options, and its own limit."""

from __future__ import annotations

from tests.emulator.helpers import REDIRECT_URI, Connection, StartEmulator, connect


async def test_batch_answers_each_item_on_its_own(conn: Connection) -> None:
    customer = await conn.customer("Batch Customer")
    invoice = await conn.invoice(customer["Id"], 100)
    paid = await conn.invoice(customer["Id"], 50)
    payment = await conn.payment(customer["Id"], paid["Id"], 50)

    response = await conn.post(
        "batch",
        {"BatchItemRequest": [
            {"bId": "bid1", "operation": "create", "Customer": {"DisplayName": "Batch Customer"}},
            {"bId": "bid2", "operation": "void", "Invoice": {"Id": invoice["Id"], "SyncToken": "0"}},
            {"bId": "bid3", "operation": "update", "optionsData": "void",
             "Payment": {"Id": payment["Id"], "SyncToken": "0", "sparse": True}},
            {"bId": "bid4", "Query": "select * from Customer where DisplayName = 'Batch Customer'"},
            {"bId": "bid5", "operation": "create", "Customer": {"DisplayName": "Fresh From Batch"}},
        ]},
        {"minorversion": "75"},
    )  # fmt: skip

    assert response.status_code == 200
    items = {item["bId"]: item for item in response.json()["BatchItemResponse"]}
    assert items["bid1"]["Fault"]["Error"][0]["code"] == "6240"
    assert items["bid1"]["Fault"]["type"] == "ValidationFault"
    assert items["bid2"]["Invoice"]["PrivateNote"] == "Voided"
    assert items["bid3"]["Payment"]["TotalAmt"] == 0
    assert items["bid4"]["QueryResponse"]["Customer"][0]["Id"] == customer["Id"]
    assert items["bid5"]["Customer"]["DisplayName"] == "Fresh From Batch"
    assert (await conn.read("Invoice", paid["Id"]))["Balance"] == 50


async def test_batch_accepts_at_most_30_items(conn: Connection) -> None:
    items = [{"bId": f"b{n}", "Query": "select * from Item"} for n in range(31)]

    response = await conn.post("batch", {"BatchItemRequest": items})

    assert response.status_code == 400
    assert response.json()["Fault"]["Error"][0]["code"] == "6000"


async def test_batch_calls_have_their_own_per_minute_limit(emulator_factory: StartEmulator) -> None:
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI, "--batch-rate-limit-per-minute", "2")
    conn = await connect(emulator)
    body = {"BatchItemRequest": [{"bId": "q", "Query": "select * from Item"}]}

    statuses = [(await conn.post("batch", body)).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert (await conn.query("select * from Item")).status_code == 200


async def test_discovery_document_points_at_the_emulator(conn: Connection) -> None:
    response = await conn.emulator.admin.get("/.well-known/openid_configuration")

    document = response.json()
    assert document["authorization_endpoint"] == f"{conn.emulator.base_url}/connect/oauth2"
    assert document["token_endpoint"] == f"{conn.emulator.base_url}/oauth2/v1/tokens/bearer"
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_post", "client_secret_basic"]

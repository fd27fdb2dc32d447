"""The query language (GET and POST /query) and change data capture (GET /cdc)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.emulator.helpers import Connection, admin_ok, fault_of

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00")


async def rows(conn: Connection, statement: str, entity: str) -> list[dict[str, Any]]:
    response = await conn.query(statement)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["QueryResponse"].get(entity, [])
    return found


async def names(conn: Connection, statement: str) -> list[str]:
    return [row["DisplayName"] for row in await rows(conn, statement, "Customer")]


async def import_customers(conn: Connection, count: int, prefix: str = "Bulk") -> None:
    now = (await admin_ok(conn.emulator, "GET", "/__admin/clock"))["now"]
    customers = [
        {"Id": str(1000 + n), "DisplayName": f"{prefix} {n:04d}", "FullyQualifiedName": f"{prefix} {n:04d}",
         "Active": True, "SyncToken": "0", "MetaData": {"CreateTime": now, "LastUpdatedTime": now}}
        for n in range(count)
    ]  # fmt: skip
    await admin_ok(
        conn.emulator, "POST", f"/__admin/companies/{conn.realm_id}/import", {"Customer": customers}
    )


@pytest.fixture
async def shop(conn: Connection) -> Connection:
    """A company with a few customers to query."""
    await conn.customer("Bill's Windsurf Shop", PrimaryEmailAddr={"Address": "Surf@Intuit.com"})
    await conn.customer("Cool Cars", PrimaryEmailAddr={"Address": "cool@cars.com"})
    await conn.customer("amy's bird sanctuary")
    gone = await conn.customer("Zed Closed")
    await conn.ok("customer", {"Id": gone["Id"], "SyncToken": "0", "sparse": True, "Active": False})
    return conn


async def test_select_returns_the_recorded_envelope(shop: Connection) -> None:
    response = await shop.query("select * from Customer")

    body = response.json()
    assert set(body) == {"QueryResponse", "time"} and TIME.fullmatch(body["time"])
    page = body["QueryResponse"]
    assert set(page) == {"Customer", "startPosition", "maxResults"}
    assert page["startPosition"] == 1 and page["maxResults"] == len(page["Customer"]) == 3


async def test_no_match_is_an_empty_query_response(shop: Connection) -> None:
    response = await shop.query("select * from Customer where DisplayName = 'Nobody'")

    assert set(response.json()) == {"QueryResponse", "time"}
    assert response.json()["QueryResponse"] == {}


async def test_count_returns_total_count_only(shop: Connection) -> None:
    response = await shop.query("SELECT COUNT(*) FROM Customer")

    assert response.json()["QueryResponse"] == {"totalCount": 3}


async def test_customers_come_back_by_fully_qualified_name_and_active_only(shop: Connection) -> None:
    assert await names(shop, "select * from Customer") == [
        "amy's bird sanctuary",
        "Bill's Windsurf Shop",
        "Cool Cars",
    ]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Active = false", ["Zed Closed"]),
        (
            "Active IN (true, false)",
            ["amy's bird sanctuary", "Bill's Windsurf Shop", "Cool Cars", "Zed Closed"],
        ),
        ("DisplayName = 'Bill\\'s Windsurf Shop'", ["Bill's Windsurf Shop"]),
        ("displayname = 'BILL\\'S WINDSURF SHOP'", ["Bill's Windsurf Shop"]),
        ("DisplayName LIKE 'C%'", ["Cool Cars"]),
        ("DisplayName LIKE '%s%'", ["amy's bird sanctuary", "Bill's Windsurf Shop", "Cool Cars"]),
        ("DisplayName LIKE '%Shop'", ["Bill's Windsurf Shop"]),
        ("DisplayName IN ('Cool Cars', 'Nobody')", ["Cool Cars"]),
        ("PrimaryEmailAddr = 'Surf@Intuit.com'", ["Bill's Windsurf Shop"]),
        ("DisplayName > 'B' AND DisplayName < 'D'", ["Bill's Windsurf Shop", "Cool Cars"]),
        ("DisplayName >= 'Cool Cars'", ["Cool Cars"]),
        ("DisplayName <= 'amy\\'s bird sanctuary'", ["amy's bird sanctuary"]),
    ],
)
async def test_where_operators(shop: Connection, where: str, expected: list[str]) -> None:
    assert sorted(await names(shop, f"select * from Customer where {where}")) == sorted(expected)  # noqa: S608 - a QuickBooks query, not SQL


async def test_keywords_entities_and_properties_are_case_insensitive(shop: Connection) -> None:
    found = await rows(shop, "sElEcT * FrOm customer WhErE DISPLAYNAME = 'Cool Cars' OrDeRbY id", "Customer")

    assert [row["DisplayName"] for row in found] == ["Cool Cars"]


async def test_dotted_metadata_and_reference_properties_filter(conn: Connection) -> None:
    first = await conn.customer()
    second = await conn.customer()
    await conn.invoice(first["Id"], 10)
    await admin_ok(conn.emulator, "POST", "/__admin/clock", {"advance_seconds": 5})
    later = await conn.invoice(second["Id"], 250)
    since = later["MetaData"]["LastUpdatedTime"]

    by_customer = await rows(conn, f"select * from Invoice where CustomerRef = '{second['Id']}'", "Invoice")  # noqa: S608 - a QuickBooks query, not SQL
    recent = f"select * from Invoice where MetaData.LastUpdatedTime >= '{since}'"  # noqa: S608 - not SQL
    by_time = await rows(conn, recent, "Invoice")
    by_balance = await rows(conn, "select * from Invoice where Balance > '100'", "Invoice")

    assert [row["Id"] for row in by_customer] == [later["Id"]]
    assert [row["Id"] for row in by_time] == [later["Id"]]
    assert [row["Id"] for row in by_balance] == [later["Id"]]


async def test_transactions_default_to_newest_change_first_and_orderby_overrides(conn: Connection) -> None:
    customer = await conn.customer()
    ids = [(await conn.invoice(customer["Id"], amount))["Id"] for amount in (30, 10, 20)]
    await conn.ok("invoice", {"Id": ids[0], "SyncToken": "0", "sparse": True, "PrivateNote": "touched"})

    default = [row["Id"] for row in await rows(conn, "select * from Invoice", "Invoice")]
    by_total = await rows(conn, "select * from Invoice orderby TotalAmt desc, Id", "Invoice")

    assert default == [ids[0], ids[2], ids[1]]
    assert [row["TotalAmt"] for row in by_total] == [30, 20, 10]


async def test_invoice_pages_carry_total_count(conn: Connection) -> None:
    customer = await conn.customer()
    await conn.invoice(customer["Id"], 10)

    page = (await conn.query("select * from Invoice")).json()["QueryResponse"]

    assert page["totalCount"] == page["maxResults"] == 1


async def test_paging_is_one_based_with_either_clause_order(conn: Connection) -> None:
    await import_customers(conn, 12)

    first = await names(conn, "select * from Customer STARTPOSITION 1 MAXRESULTS 5")
    second = await names(conn, "select * from Customer MAXRESULTS 5 STARTPOSITION 6")
    last = (await conn.query("select * from Customer startposition 11 maxresults 5")).json()["QueryResponse"]
    beyond = (await conn.query("select * from Customer startposition 13 maxresults 5")).json()[
        "QueryResponse"
    ]

    assert first == [f"Bulk {n:04d}" for n in range(5)]
    assert second == [f"Bulk {n:04d}" for n in range(5, 10)]
    assert (last["startPosition"], last["maxResults"]) == (11, 2)
    assert beyond == {}


async def test_maxresults_defaults_to_100_and_is_capped_at_1000(conn: Connection) -> None:
    await import_customers(conn, 1005)

    default = (await conn.query("select * from Customer")).json()["QueryResponse"]
    capped = (await conn.query("select * from Customer maxresults 5000")).json()["QueryResponse"]

    assert default["maxResults"] == len(default["Customer"]) == 100
    assert capped["maxResults"] == 1000


@pytest.mark.parametrize("content_type", ["application/text", "text/plain"])
async def test_post_query_takes_the_raw_statement(shop: Connection, content_type: str) -> None:
    response = await shop.emulator.admin.post(
        shop.path("query"),
        content="select * from Customer where DisplayName = 'Cool Cars'",
        headers={**shop.headers(), "Content-Type": content_type},
    )

    assert [row["DisplayName"] for row in response.json()["QueryResponse"]["Customer"]] == ["Cool Cars"]


@pytest.mark.parametrize(
    ("statement", "code", "detail"),
    [
        (
            "select * from Customer where Notes = 'x'",
            "4001",
            "QueryValidationError: property 'Notes' is not queryable",
        ),
        ("select * from Customer orderby PrintOnCheckName", "4001", "not sortable"),
        ("select * from Invoice where Foo.Bar = '1'", "4001", "property 'Foo.Bar' is not queryable"),
        ("select * from Customer where", "4000", "QueryParserError"),
        ("select * from Customer where DisplayName != 'x'", "4000", "QueryParserError"),
        ("select * from Customer where Active = true OR Active = false", "4000", "QueryParserError"),
        ("select * from Customer where DisplayName = 'unterminated", "4000", "QueryParserError"),
        ("delete from Customer", "4000", "QueryParserError"),
        ("select * from Customer where Balance > 'lots'", "4001", "QueryValidationError"),
    ],
)
async def test_query_faults(shop: Connection, statement: str, code: str, detail: str) -> None:
    response = await shop.query(statement)

    assert response.status_code == 400
    assert fault_of(response)["code"] == code
    assert detail in fault_of(response)["Detail"]


# --- CDC --------------------------------------------------------------------------------------------------


async def now_of(conn: Connection) -> str:
    clock = await admin_ok(conn.emulator, "GET", "/__admin/clock")
    return str(clock["now"])


async def cdc(conn: Connection, entities: str, since: str) -> Any:
    response = await conn.get("cdc", {"entities": entities, "changedSince": since, "minorversion": "75"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_cdc_returns_changes_per_entity_with_deleted_stubs_last(conn: Connection) -> None:
    start = await now_of(conn)
    customer = await conn.customer()
    kept = await conn.invoice(customer["Id"], 10)
    removed = await conn.invoice(customer["Id"], 20)
    await conn.post("invoice", {"Id": removed["Id"], "SyncToken": "0"}, {"operation": "delete"})

    body = await cdc(conn, "Invoice,Payment,Customer", start)

    assert set(body) == {"CDCResponse", "time"}
    (block,) = body["CDCResponse"]
    invoices, payments, customers = block["QueryResponse"]
    assert [item["Id"] for item in invoices["Invoice"]] == [kept["Id"], removed["Id"]]
    assert invoices["Invoice"][0]["DocNumber"] == kept["DocNumber"]
    stub = invoices["Invoice"][1]
    assert set(stub) == {"domain", "status", "Id", "MetaData"}
    assert (stub["domain"], stub["status"], set(stub["MetaData"])) == ("QBO", "Deleted", {"LastUpdatedTime"})
    assert (invoices["startPosition"], invoices["maxResults"]) == (1, 2)
    assert payments == {}
    assert [item["Id"] for item in customers["Customer"]] == [customer["Id"]]


async def test_cdc_only_reports_what_changed_since_the_given_time(conn: Connection) -> None:
    customer = await conn.customer()
    await conn.invoice(customer["Id"], 10)
    await admin_ok(conn.emulator, "POST", "/__admin/clock", {"advance_seconds": 5})
    since = await now_of(conn)
    paid = await conn.invoice(customer["Id"], 10)
    await conn.payment(customer["Id"], paid["Id"], 10)

    body = await cdc(conn, "Invoice,Payment", since)

    invoices, payments = body["CDCResponse"][0]["QueryResponse"]
    assert [item["Id"] for item in invoices["Invoice"]] == [paid["Id"]]
    assert len(payments["Payment"]) == 1


async def test_cdc_reports_voided_invoices_and_inactive_customers_as_normal_objects(conn: Connection) -> None:
    since = await now_of(conn)
    customer = await conn.customer()
    invoice = await conn.invoice(customer["Id"], 10)
    await conn.ok("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, {"operation": "void"})
    await conn.ok("customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Active": False})

    invoices, customers = (await cdc(conn, "Invoice,Customer", since))["CDCResponse"][0]["QueryResponse"]

    assert invoices["Invoice"][0]["PrivateNote"] == "Voided" and invoices["Invoice"][0]["TotalAmt"] == 0
    assert customers["Customer"][0]["Active"] is False


async def test_cdc_refuses_a_look_back_of_more_than_30_days(conn: Connection) -> None:
    clock = datetime.fromisoformat(await now_of(conn))
    too_old = (clock - timedelta(days=31)).isoformat()

    response = await conn.get("cdc", {"entities": "Invoice", "changedSince": too_old})

    assert response.status_code == 400
    assert "older than fixed days is not supported" in fault_of(response)["Detail"]


async def test_cdc_returns_at_most_1000_objects(conn: Connection) -> None:
    since = (datetime.fromisoformat(await now_of(conn)) - timedelta(minutes=1)).isoformat()
    await import_customers(conn, 1100)

    body = await cdc(conn, "Customer", since)

    assert body["CDCResponse"][0]["QueryResponse"][0]["maxResults"] == 1000

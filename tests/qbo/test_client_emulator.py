"""QboClient against the real emulator over HTTP: entities, query, CDC, voids, idempotency, errors."""

# QuickBooks query statements built with qbo.client.quote, not SQL.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from qbo.client import QboClient, quote
from qbo.errors import (
    QboAuthenticationError,
    QboDuplicateDocNumber,
    QboDuplicateName,
    QboNotFound,
    QboServerError,
    QboStaleObject,
    QboThrottled,
    QboUnavailable,
    QboValidationError,
)
from qbo.limits import RealmLimiter
from tests.qbo.helpers import (
    REDIRECT_URI,
    Company,
    EmulatorFactory,
    FixedTokens,
    RefreshingTokens,
    connect,
    create_customer,
    create_invoice,
    new_request_id,
    unique,
)
from tests.support import free_port


async def test_create_read_and_sparse_update_a_customer(company: Company) -> None:
    client = company.client()
    name = unique("Ada Lovelace")
    created = await client.create(
        "Customer",
        {"DisplayName": name, "PrimaryEmailAddr": {"Address": "ada@example.com"}},
        request_id=new_request_id(),
    )
    assert created["DisplayName"] == name
    assert created["SyncToken"] == "0"
    read = await client.read("Customer", created["Id"])
    assert read["PrimaryEmailAddr"] == {"Address": "ada@example.com"}
    updated = await client.update(
        "Customer",
        {"Id": read["Id"], "SyncToken": read["SyncToken"], "sparse": True, "Notes": "Prefers email"},
        request_id=new_request_id(),
    )
    assert updated["Notes"] == "Prefers email"
    assert updated["SyncToken"] == "1"
    # Sparse: what was not sent stays as it was.
    assert (await client.read("Customer", created["Id"]))["PrimaryEmailAddr"] == {
        "Address": "ada@example.com"
    }


async def test_every_call_carries_minorversion_and_writes_carry_requestid(company: Company) -> None:
    client = company.client()
    since = await company.last_seq()
    write_id = new_request_id()
    customer = await client.create("Customer", {"DisplayName": unique("Versioned")}, request_id=write_id)
    await client.read("Customer", customer["Id"])
    await client.query("SELECT * FROM Customer")
    entries = await company.requests(since)
    assert [entry["method"] for entry in entries] == ["POST", "GET", "GET"]
    assert all("minorversion=75" in entry["query"] for entry in entries)
    assert entries[0]["requestid"] == write_id


async def test_requestid_replay_returns_the_same_entity(company: Company) -> None:
    client = company.client()
    write_id = new_request_id()
    body = {"DisplayName": unique("Replayed")}
    first = await client.create("Customer", body, request_id=write_id)
    second = await client.create("Customer", body, request_id=write_id)
    assert second["Id"] == first["Id"]
    assert second == first
    matches = await client.query(f"SELECT * FROM Customer WHERE DisplayName = {quote(body['DisplayName'])}")
    assert len(matches) == 1
    entries = [entry for entry in await company.requests() if entry["requestid"] == write_id]
    assert [entry["replay"] for entry in entries] == [False, True]


async def test_requestid_longer_than_50_characters_is_refused_before_sending(company: Company) -> None:
    with pytest.raises(ValueError, match="50"):
        await company.client().create("Customer", {"DisplayName": "x"}, request_id="r" * 51)


async def test_query_with_apostrophes_and_backslashes(company: Company) -> None:
    client = company.client()
    names = [unique("Bill's Windsurf Shop"), unique("O'Brien \\ Sons"), unique("trailing\\")]
    for name in names:
        await create_customer(client, name)
    for name in names:
        rows = await client.query(f"SELECT * FROM Customer WHERE DisplayName = {quote(name)}")
        assert [row["DisplayName"] for row in rows] == [name]


async def test_query_without_matches_is_an_empty_list(company: Company) -> None:
    rows = await company.client().query("SELECT * FROM Customer WHERE DisplayName = 'Nobody at all'")
    assert rows == []


async def test_query_all_pages_across_startposition(company: Company) -> None:
    client = company.client()
    prefix = unique("Paged")
    names = sorted(f"{prefix} {index:02d}" for index in range(7))
    for name in names:
        await create_customer(client, name)
    since = await company.last_seq()
    statement = f"SELECT * FROM Customer WHERE DisplayName LIKE {quote(prefix + '%')} ORDERBY DisplayName"
    rows = await client.query_all(statement, page_size=3)
    assert [row["DisplayName"] for row in rows] == names
    pages = [entry["query"] for entry in await company.requests(since)]
    assert len(pages) == 3
    for page, start in zip(pages, (1, 4, 7), strict=True):
        assert f"STARTPOSITION+{start}+MAXRESULTS+3" in page
    assert (
        await client.count(f"SELECT COUNT(*) FROM Customer WHERE DisplayName LIKE {quote(prefix + '%')}") == 7
    )
    with pytest.raises(ValueError, match="STARTPOSITION"):
        await client.query_all(f"{statement} MAXRESULTS 5")


async def test_query_all_stops_on_an_exactly_full_last_page_with_an_empty_one(company: Company) -> None:
    client = company.client()
    prefix = unique("Even")
    for index in range(4):
        await create_customer(client, f"{prefix} {index}")
    rows = await client.query_all(
        f"SELECT * FROM Customer WHERE DisplayName LIKE {quote(prefix + '%')}", page_size=2
    )
    assert len(rows) == 4


async def test_long_statements_are_posted(company: Company) -> None:
    client = company.client()
    target = await create_customer(client)
    decoys = ", ".join(quote(f"Decoy customer number {index}") for index in range(60))
    statement = f"SELECT * FROM Customer WHERE DisplayName IN ({decoys}, {quote(target['DisplayName'])})"
    assert len(statement) > 1000
    since = await company.last_seq()
    rows = await client.query(statement)
    assert [row["Id"] for row in rows] == [target["Id"]]
    (entry,) = await company.requests(since)
    assert (entry["method"], entry["path"].rsplit("/", 1)[-1]) == ("POST", "query")


async def test_count_of_nothing_is_zero(company: Company) -> None:
    assert await company.client().count("SELECT COUNT(*) FROM Customer WHERE DisplayName = 'Nobody'") == 0


async def test_cdc_returns_changes_deletions_and_the_server_time(company: Company) -> None:
    client = company.client()
    info = await client.company_info()
    clock = (await company.emulator.admin.get("/__admin/clock")).json()
    emulator_now = datetime.fromisoformat(clock["now"])
    # A "+" offset must reach QuickBooks as %2B, not as a space.
    since = (emulator_now - timedelta(minutes=5)).astimezone(timezone(timedelta(hours=2)))
    customer = await create_customer(client)
    kept = await create_invoice(client, customer["Id"], 120.0)
    doomed = await create_invoice(client, customer["Id"], 80.0)
    stub = await client.delete("Invoice", doomed["Id"], doomed["SyncToken"], request_id=new_request_id())
    assert (stub["status"], stub["Id"]) == ("Deleted", doomed["Id"])

    result = await client.cdc(["Invoice", "Customer", "Payment"], since)

    assert [row["Id"] for row in result.entities["Invoice"]] == [kept["Id"]]
    assert [row["Id"] for row in result.entities["Customer"]] == [customer["Id"]]
    assert result.entities["Payment"] == []
    assert result.deleted["Invoice"] == [doomed["Id"]]
    assert result.deleted["Customer"] == []
    assert result.server_time.tzinfo is not None
    assert result.object_count == 3
    assert not result.may_be_truncated
    assert abs(result.server_time - emulator_now) < timedelta(minutes=5)
    assert info["CompanyName"]


async def test_cdc_needs_an_aware_datetime(company: Company) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await company.client().cdc(["Invoice"], datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


async def test_void_invoice(company: Company) -> None:
    client = company.client()
    customer = await create_customer(client)
    invoice = await create_invoice(client, customer["Id"], 250.0, PrivateNote="March work")
    voided = await client.void_invoice(invoice["Id"], invoice["SyncToken"], request_id=new_request_id())
    assert voided["Id"] == invoice["Id"]
    assert voided["TotalAmt"] == 0
    assert voided["Balance"] == 0
    assert voided["PrivateNote"].startswith("Voided")
    assert int(voided["SyncToken"]) > int(invoice["SyncToken"])
    # A voided invoice stays readable.
    assert (await client.read("Invoice", invoice["Id"]))["TotalAmt"] == 0


async def test_void_payment_restores_the_invoice_balance(company: Company) -> None:
    client = company.client()
    customer = await create_customer(client)
    invoice = await create_invoice(client, customer["Id"], 300.0)
    payment = await client.create(
        "Payment",
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": 120.0,
            "Line": [{"Amount": 120.0, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
        },
        request_id=new_request_id(),
    )
    assert (await client.read("Invoice", invoice["Id"]))["Balance"] == 180.0
    since = await company.last_seq()
    voided = await client.void_payment(payment["Id"], payment["SyncToken"], request_id=new_request_id())
    assert voided["Id"] == payment["Id"]
    assert voided["TotalAmt"] == 0
    assert (await client.read("Invoice", invoice["Id"]))["Balance"] == 300.0
    (entry, _) = await company.requests(since)
    assert "operation=update" in entry["query"] and "include=void" in entry["query"]


async def test_stale_sync_token(company: Company) -> None:
    client = company.client()
    customer = await create_customer(client)
    await client.update(
        "Customer",
        {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "one"},
        request_id=new_request_id(),
    )
    with pytest.raises(QboStaleObject) as caught:
        await client.update(
            "Customer",
            {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "two"},
            request_id=new_request_id(),
        )
    assert caught.value.code == "5010"
    assert caught.value.intuit_tid


async def test_update_needs_id_and_sync_token(company: Company) -> None:
    with pytest.raises(ValueError, match="SyncToken"):
        await company.client().update("Customer", {"Id": "1", "sparse": True}, request_id=new_request_id())


async def test_unknown_id_is_not_found(company: Company) -> None:
    client = company.client()
    with pytest.raises(QboNotFound) as caught:
        await client.read("Invoice", "987654321")
    assert caught.value.status == 400
    assert caught.value.code == "610"


async def test_deleted_invoice_is_not_found(company: Company) -> None:
    client = company.client()
    invoice = await create_invoice(client, (await create_customer(client))["Id"])
    await client.delete("Invoice", invoice["Id"], invoice["SyncToken"], request_id=new_request_id())
    with pytest.raises(QboNotFound):
        await client.read("Invoice", invoice["Id"])


async def test_duplicate_name(company: Company) -> None:
    client = company.client()
    name = unique("Twin")
    await create_customer(client, name)
    with pytest.raises(QboDuplicateName) as caught:
        await create_customer(client, name)
    assert caught.value.code == "6240"


async def test_duplicate_doc_number(company: Company) -> None:
    client = company.client()
    customer = await create_customer(client)
    await create_invoice(client, customer["Id"], DocNumber="INV-1001")
    with pytest.raises(QboDuplicateDocNumber):
        await create_invoice(client, customer["Id"], DocNumber="INV-1001")


async def test_other_validation_faults(company: Company) -> None:
    client = company.client()
    with pytest.raises(QboValidationError) as caught:
        await client.query("SELECT * FROM Customer WHERE")
    assert caught.value.code == "4000"


async def test_server_error_is_raised_without_retrying(company: Company) -> None:
    client = company.client()
    await company.inject(status=500, path_contains="/companyinfo/")
    since = await company.last_seq()
    with pytest.raises(QboServerError) as caught:
        await client.company_info()
    assert caught.value.status == 500
    assert caught.value.code == "10000"
    assert len(await company.requests(since)) == 1
    # The fault was used up: the next call works.
    assert (await client.company_info())["CompanyName"]


async def test_server_error_after_a_committed_write_then_replay_with_the_same_requestid(
    company: Company,
) -> None:
    client = company.client()
    await company.inject(status=503, method="POST", path_contains="/customer", apply="after")
    write_id = new_request_id()
    body = {"DisplayName": unique("Committed")}
    with pytest.raises(QboServerError):
        await client.create("Customer", body, request_id=write_id)
    created = await client.create("Customer", body, request_id=write_id)
    assert created["DisplayName"] == body["DisplayName"]
    assert (
        len(await client.query(f"SELECT * FROM Customer WHERE DisplayName = {quote(body['DisplayName'])}"))
        == 1
    )


async def test_timeout_is_unavailable_with_timed_out(company: Company) -> None:
    client = company.client(timeout=0.3)
    await company.inject(status=None, latency_ms=2000, path_contains="/companyinfo/")
    with pytest.raises(QboUnavailable) as caught:
        await client.company_info()
    assert caught.value.timed_out is True
    assert caught.value.status is None


async def test_connection_refused_is_unavailable_without_timed_out(company: Company) -> None:
    client = company.client(api_base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(QboUnavailable) as caught:
        await client.company_info()
    assert caught.value.timed_out is False


async def test_401_refreshes_once_through_the_token_source_and_retries(company: Company) -> None:
    stale = "x" * 40  # a well-formed but unknown token: the gateway answers 401
    tokens = RefreshingTokens(company.oauth, company.tokens, first_access_token=stale)
    client = company.client(tokens=tokens)
    since = await company.last_seq()
    info = await client.company_info()
    assert info["CompanyName"]
    assert tokens.rejected == [stale]
    assert [entry["status"] for entry in await company.requests(since)] == [401, 200]


async def test_a_second_401_is_an_authentication_error(company: Company) -> None:
    tokens = FixedTokens("y" * 40, after_refresh="z" * 40)
    client = company.client(tokens=tokens)
    with pytest.raises(QboAuthenticationError) as caught:
        await client.company_info()
    assert caught.value.status == 401
    assert caught.value.code == "3200"
    assert tokens.rejected == ["y" * 40]
    assert "z" * 40 not in str(caught.value)


async def test_injected_401_is_handled_like_an_expired_token(company: Company) -> None:
    tokens = RefreshingTokens(company.oauth, company.tokens)
    client = company.client(tokens=tokens)
    await company.inject(status=401, path_contains="/companyinfo/")
    assert (await client.company_info())["CompanyName"]
    assert tokens.rejected == [company.tokens.access_token]


async def test_throttling_is_waited_out_with_on_wait(company: Company) -> None:
    client = company.client()
    await company.inject(status=429, count=2, path_contains="/companyinfo/")
    since = await company.last_seq()
    assert (await client.company_info())["CompanyName"]
    assert len(company.waits) == 2
    assert all(0 < wait <= 0.2 for wait in company.waits)
    assert [entry["status"] for entry in await company.requests(since)] == [429, 429, 200]


async def test_retry_after_is_honoured_when_sent(emulator_factory: EmulatorFactory) -> None:
    # Intuit reportedly sends no Retry-After; an emulator started with one checks the client obeys it.
    emulator = await emulator_factory("--redirect-uri", REDIRECT_URI, "--throttle-retry-after", "1")
    async with httpx.AsyncClient(timeout=10) as http:
        company = await connect(emulator, http)
        client = company.client(backoff_initial=30.0)
        await company.inject(status=429, path_contains="/companyinfo/")
        assert (await client.company_info())["CompanyName"]
    assert company.waits == [1.0]


@pytest.mark.parametrize(("status", "fault_code"), [(429, None), (403, "3001")], ids=["429", "old-style 403"])
async def test_a_throttled_attempt_does_not_use_up_the_minute(
    company: Company, status: int, fault_code: str | None
) -> None:
    # Nothing leaves this limiter's hour-long window during the test: with 2 calls allowed, a throttled attempt
    # that still counted would keep the second call waiting for an hour.
    limiter = RealmLimiter(per_minute=2, window_seconds=3600)
    client = company.client(limiter=limiter)
    await company.inject(status=status, fault_code=fault_code, path_contains="/companyinfo/")
    since = await company.last_seq()
    assert (await asyncio.wait_for(client.company_info(), 10))["CompanyName"]
    assert (await asyncio.wait_for(client.company_info(), 10))["CompanyName"]
    assert [entry["status"] for entry in await company.requests(since)] == [status, 200, 200]
    # Both answered calls count: the window is full now.
    third = asyncio.create_task(client.company_info())
    await asyncio.sleep(0.5)
    assert not third.done() and limiter.waiting(company.realm_id) == 1
    third.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await third


async def test_old_style_403_throttle_is_waited_out_too(company: Company) -> None:
    client = company.client()
    await company.inject(status=403, fault_code="3001", path_contains="/companyinfo/")
    assert (await client.company_info())["CompanyName"]
    assert len(company.waits) == 1


async def test_throttling_beyond_max_throttle_wait_raises(company: Company) -> None:
    client = company.client(max_throttle_wait=0.3)
    await company.inject(status=429, count=50, path_contains="/companyinfo/")
    with pytest.raises(QboThrottled) as caught:
        await client.company_info()
    assert caught.value.status == 429
    assert caught.value.code == "3001"
    assert 1 <= len(company.waits) < 50
    assert sum(company.waits) <= 0.3


async def test_a_403_authorization_fault_is_not_retried(company: Company) -> None:
    from qbo.errors import QboAuthorizationError

    client = company.client()
    await company.inject(status=403, path_contains="/companyinfo/")
    with pytest.raises(QboAuthorizationError):
        await client.company_info()
    assert company.waits == []


async def test_a_token_for_another_company_is_refused(company: Company) -> None:
    from qbo.errors import QboAuthorizationError

    other = company.client(realm_id=await company.emulator.create_company())
    with pytest.raises(QboAuthorizationError) as caught:
        await other.company_info()
    assert caught.value.code == "3100"


async def test_the_limiter_keeps_30_concurrent_calls_under_intuits_limit(company: Company) -> None:
    # Each call holds the emulator's in-flight slot for 150 ms, so 30 unlimited calls would overlap.
    await company.inject(status=None, latency_ms=150, count=30, path_contains="/companyinfo/")
    since = await company.last_seq()
    client = company.client(limiter=RealmLimiter(max_in_flight=10), max_throttle_wait=0)
    results = await asyncio.gather(*(client.company_info() for _ in range(30)))
    assert len(results) == 30
    statuses = [entry["status"] for entry in await company.requests(since)]
    assert statuses == [200] * 30


async def test_without_the_limit_the_same_burst_is_throttled(company: Company) -> None:
    # The control for the test above: proves that 30 overlapping calls do exceed Intuit's limit.
    await company.inject(status=None, latency_ms=150, count=30, path_contains="/companyinfo/")
    client = company.client(limiter=RealmLimiter(max_in_flight=100), max_throttle_wait=0)
    results = await asyncio.gather(*(client.company_info() for _ in range(30)), return_exceptions=True)
    assert any(isinstance(result, QboThrottled) for result in results)


async def test_logs_name_the_call_but_never_the_token(
    company: Company, caplog: pytest.LogCaptureFixture
) -> None:
    client = company.client()
    with caplog.at_level(logging.DEBUG, logger="qbo"):
        await client.query(f"SELECT * FROM Customer WHERE DisplayName = {quote('secret@example.com')}")
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("qbo")]
    assert any(f"GET /v3/company/{company.realm_id}/query -> 200 intuit_tid=" in line for line in lines)
    assert not any(company.tokens.access_token in line for line in lines)
    assert not any("secret@example.com" in line for line in lines)


async def test_client_refuses_odd_entity_names_and_ids() -> None:
    client = QboClient(
        realm_id="1",
        api_base_url="http://127.0.0.1:1",
        tokens=FixedTokens("a", "b"),
        http=None,  # type: ignore[arg-type]  # never reached: arguments are checked first
        limiter=RealmLimiter(),
    )
    with pytest.raises(ValueError, match="entity"):
        await client.read("invoice/1?x=", "1")
    with pytest.raises(ValueError, match="id"):
        await client.read("Invoice", "1/../2")
    with pytest.raises(ValueError, match="realm"):
        QboClient(
            realm_id="1/../2",
            api_base_url="http://127.0.0.1:1",
            tokens=FixedTokens("a", "b"),
            http=None,  # type: ignore[arg-type]
            limiter=RealmLimiter(),
        )

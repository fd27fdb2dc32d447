"""The platform API's contract: tokens scoped to accounts, plans, and JSON errors with stable codes."""

from __future__ import annotations

import httpx

from tests.engine import SERVICE_TOKEN, Engine, invoice_payload


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, str] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


async def test_routes_need_a_bearer_token(engine: Engine, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{engine.api_url}/v1/accounts/a1/invoices")
    assert_error(response, 401, "unauthorized")
    response = await http.get(
        f"{engine.api_url}/v1/accounts/a1/invoices", headers={"Authorization": "Bearer not-the-token"}
    )
    assert_error(response, 401, "unauthorized")


async def test_another_accounts_token_is_refused(engine: Engine, http: httpx.AsyncClient) -> None:
    mine = await engine.api.put("/v1/accounts/acct-mine", json={"plan": "premium"})
    theirs = await engine.api.put("/v1/accounts/acct-theirs", json={"plan": "premium"})
    my_token = mine.json()["api_token"]
    assert my_token and my_token != theirs.json()["api_token"]
    headers = {"Authorization": f"Bearer {my_token}"}

    own = await http.get(f"{engine.api_url}/v1/accounts/acct-mine", headers=headers)
    assert own.status_code == 200 and own.json()["account_id"] == "acct-mine"
    assert own.json()["api_token"] is None  # only the service token's holder is handed account tokens

    for method, path in [
        ("GET", "/v1/accounts/acct-theirs"),
        ("GET", "/v1/accounts/acct-theirs/invoices"),
        ("POST", "/v1/accounts/acct-theirs/quickbooks/connect"),
        ("PUT", "/v1/accounts/acct-theirs"),
    ]:
        response = await http.request(
            method,
            f"{engine.api_url}{path}",
            headers=headers,
            json={"plan": "free"} if method == "PUT" else None,
        )
        assert_error(response, 403, "forbidden")
    still = await engine.api.get("/v1/accounts/acct-theirs")
    assert still.json()["plan"] == "premium"


async def test_free_and_pro_without_addon_cannot_connect(engine: Engine) -> None:
    free = await engine.create_account(plan="free")
    response = await engine.api.post(f"/v1/accounts/{free}/quickbooks/connect")
    error = assert_error(response, 403, "plan_required")
    assert "Upgrade" in error["message"]

    pro = await engine.create_account(plan="pro", addon=False)
    response = await engine.api.post(f"/v1/accounts/{pro}/quickbooks/connect")
    error = assert_error(response, 403, "plan_required")
    assert "add-on" in error["message"]

    pro_addon = await engine.create_account(plan="pro", addon=True)
    response = await engine.api.post(f"/v1/accounts/{pro_addon}/quickbooks/connect")
    assert response.status_code == 200
    assert response.json()["authorization_url"].startswith(f"{engine.api_url}/oauth/quickbooks/start?")


async def test_unknown_account_and_invoice_are_404_with_codes(engine: Engine) -> None:
    assert_error(await engine.api.get("/v1/accounts/nobody"), 404, "account_not_found")
    account = await engine.create_account()
    assert_error(await engine.api.get(f"/v1/accounts/{account}/invoices/nope"), 404, "invoice_not_found")
    assert_error(await engine.api.get("/v1/nothing-here"), 404, "not_found")


async def test_invalid_invoices_are_refused_with_what_is_wrong(engine: Engine) -> None:
    account = await engine.create_account()
    cases = [
        invoice_payload(number="INV-" + "9" * 30),
        invoice_payload(client_email="not-an-email"),
        invoice_payload(lines=[]),
        invoice_payload(lines=[{"description": "x", "quantity": "-1", "unit_price_cents": 100}]),
        invoice_payload(due_date="2026-01-01"),
        invoice_payload(currency="usd"),
    ]
    for payload in cases:
        response = await engine.api.post(f"/v1/accounts/{account}/invoices/inv-bad/send", json=payload)
        error = assert_error(response, 422, "invalid_request")
        assert "The request is not valid" in error["message"]
    too_long = await engine.api.post(
        f"/v1/accounts/{account}/invoices/inv-bad/send", json=invoice_payload(number="INV-" + "9" * 30)
    )
    assert "21 characters" in too_long.json()["error"]["message"]
    not_json = await engine.api.post(
        f"/v1/accounts/{account}/invoices/inv-bad/send",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert_error(not_json, 422, "invalid_request")
    # Nothing was recorded for the refused sends.
    assert_error(await engine.api.get(f"/v1/accounts/{account}/invoices/inv-bad"), 404, "invoice_not_found")


async def test_secrets_never_appear_in_errors(engine: Engine) -> None:
    response = await engine.api.post("/v1/accounts/a/invoices/i/send", json={"number": SERVICE_TOKEN})
    assert SERVICE_TOKEN not in response.text


async def test_openapi_schema_lists_every_platform_route(engine: Engine) -> None:
    schema = (await engine.api.get("/openapi.json")).json()
    paths = set(schema["paths"])
    for path in [
        "/v1/accounts/{account_id}",
        "/v1/accounts/{account_id}/quickbooks/connect",
        "/v1/accounts/{account_id}/quickbooks/connection",
        "/v1/accounts/{account_id}/invoices/{invoice_id}/send",
        "/v1/accounts/{account_id}/invoices/{invoice_id}/void",
        "/v1/accounts/{account_id}/invoices/{invoice_id}/quickbooks/retry",
        "/v1/accounts/{account_id}/invoices/{invoice_id}",
        "/v1/accounts/{account_id}/invoices",
        "/v1/accounts/{account_id}/invoices/{invoice_id}/timeline",
        "/v1/accounts/{account_id}/notifications",
        "/webhooks/quickbooks",
        "/oauth/quickbooks/start",
        "/oauth/quickbooks/callback",
    ]:
        assert path in paths, path

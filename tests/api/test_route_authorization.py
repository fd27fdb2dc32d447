"""Every route against the README's table of who may call it: service token, own account token, another account's
token, garbage, none."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.engine import SERVICE_TOKEN, Engine, invoice_payload
from tests.support import ROOT

_ROW = re.compile(r"^\| `(GET|POST|PUT|DELETE|PATCH) (/[^`]*)` \| ([A-Za-z, ]+) \|")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    who: frozenset[str]

    @property
    def is_account_route(self) -> bool:
        return "{account_id}" in self.path


def documented_routes() -> list[Route]:
    """The rows of the README's API table: `| \\`METHOD /path\\` | who | what |`."""
    routes = []
    for line in (ROOT / "README.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            method, path, who = match.groups()
            routes.append(Route(method, path, frozenset(part.strip() for part in who.split(","))))
    return routes


ROUTES = documented_routes()


def test_the_readme_table_is_there_and_names_known_callers() -> None:
    assert len(ROUTES) >= 15
    for route in ROUTES:
        assert route.who <= {"service", "account", "Intuit", "browser", "anyone"}, route
        assert not ({"account"} <= route.who and not route.is_account_route), route


async def test_every_route_of_the_openapi_document_is_in_the_table(engine: Engine) -> None:
    schema = (await engine.api.get("/openapi.json")).json()
    documented = {(route.method, route.path) for route in ROUTES}
    for path, operations in schema["paths"].items():
        for method in operations:
            assert (method.upper(), path) in documented, (
                f"{method.upper()} {path} is not in README's API table"
            )


def body_for(route: Route) -> dict[str, Any] | None:
    if route.path.endswith("/send"):
        return invoice_payload(number="AUTH-1")
    if route.path.endswith("/disconnect"):
        return {"mode": "disconnect_only"}
    if route.method == "PUT":
        return {"plan": "premium"}
    return None


@dataclass
class Accounts:
    own: str
    own_token: str
    other_token: str


@pytest.fixture
async def accounts(engine: Engine) -> Accounts:
    own, other = f"own-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    tokens = []
    for account in (own, other):
        created = await engine.api.put(f"/v1/accounts/{account}", json={"plan": "premium"})
        assert created.status_code == 200, created.text
        tokens.append(created.json()["api_token"])
    return Accounts(own=own, own_token=tokens[0], other_token=tokens[1])


async def call(
    engine: Engine, route: Route, account: str, token: str | None, http: httpx.AsyncClient
) -> httpx.Response:
    path = (
        route.path.replace("{account_id}", account)
        .replace("{invoice_id}", "inv-auth")
        .replace("{event_id}", "evt_" + "0" * 32)
    )
    headers = {} if token is None else {"Authorization": token if " " in token else f"Bearer {token}"}
    return await http.request(
        route.method,
        f"{engine.api_url}{path}",
        json=body_for(route),
        headers=headers,
        follow_redirects=False,
    )


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")


@pytest.mark.parametrize("route", ROUTES, ids=[f"{route.method} {route.path}" for route in ROUTES])
async def test_route_answers_each_caller_as_the_table_says(
    engine: Engine, accounts: Accounts, http: httpx.AsyncClient, route: Route
) -> None:
    bearer_routes = {"service", "account"} & route.who
    if not bearer_routes:
        # Intuit's, the browser's and public routes never ask for a bearer token, and none stands in for theirs.
        for token in (None, SERVICE_TOKEN, accounts.own_token):
            response = await call(engine, route, accounts.own, token, http)
            assert response.status_code != 403, response.text
            if route.who == {"Intuit"}:
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "invalid_signature"
        return

    allowed = await call(engine, route, accounts.own, SERVICE_TOKEN, http)
    assert allowed.status_code not in (401, 403), allowed.text
    if allowed.status_code >= 400:
        # The route exists and answered for itself (e.g. `invoice_not_found`), not the router's 404/405.
        assert allowed.json()["error"]["code"] not in ("not_found", "method_not_allowed"), allowed.text

    own = await call(engine, route, accounts.own, accounts.own_token, http)
    if "account" in route.who:
        assert own.status_code not in (401, 403), own.text
    else:
        assert_refused(own, 403)

    if route.is_account_route:
        assert_refused(await call(engine, route, accounts.own, accounts.other_token, http), 403)
    for garbage in (
        "garbage",
        "qbs_acct_b3du.forged",
        f"{accounts.own_token}x",
        SERVICE_TOKEN[:-1],
        "Basic x",
    ):
        assert_refused(await call(engine, route, accounts.own, garbage, http), 401)
    assert_refused(await call(engine, route, accounts.own, None, http), 401)


async def test_an_account_token_cannot_change_its_own_plan(engine: Engine, http: httpx.AsyncClient) -> None:
    account = await engine.create_account(plan="free")
    token = (await engine.api.put(f"/v1/accounts/{account}", json={"plan": "free"})).json()["api_token"]
    response = await http.put(
        f"{engine.api_url}/v1/accounts/{account}",
        json={"plan": "premium"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_refused(response, 403)
    still = (await engine.api.get(f"/v1/accounts/{account}")).json()
    assert (still["plan"], still["quickbooks_available"]) == ("free", False)
    refused = await engine.api.post(f"/v1/accounts/{account}/quickbooks/connect")
    assert refused.json()["error"]["code"] == "plan_required"

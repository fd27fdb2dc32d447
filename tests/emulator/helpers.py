"""Helpers for the emulator's own tests: OAuth round trips, API calls, polling, a webhook receiver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# What tests/conftest.py starts every emulator with.
CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"
VERIFIER_TOKEN = "test-verifier-token"
# The redirect URI the session emulator registers.
REDIRECT_URI = "http://127.0.0.1/callback"
ACCOUNTING = "com.intuit.quickbooks.accounting"

T = TypeVar("T")


class EmulatorHandle(Protocol):
    """The handle tests/conftest.py's emulator fixtures return."""

    base_url: str
    process: subprocess.Popen[bytes]
    admin: httpx.AsyncClient

    async def create_company(self, name: str | None = None) -> str: ...

    async def company(self, realm_id: str) -> dict[str, Any]: ...


StartEmulator = Callable[..., Awaitable[EmulatorHandle]]


def basic_auth(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Polls until `check` returns something other than None/False, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def authorization_code(
    emulator: EmulatorHandle, realm_id: str, *, redirect_uri: str = REDIRECT_URI, state: str = "state-1"
) -> str:
    response = await emulator.admin.post(
        f"/__admin/companies/{realm_id}/authorize",
        json={"client_id": CLIENT_ID, "redirect_uri": redirect_uri, "state": state, "scope": ACCOUNTING},
    )
    assert response.status_code == 200, response.text
    return query_of(response.json()["redirect_url"])["code"]


async def token_request(
    emulator: EmulatorHandle,
    form: dict[str, str],
    *,
    auth: str | None = None,
    hard_expiry: bool = False,
) -> httpx.Response:
    headers = {"Accept": "application/json", "Authorization": auth or basic_auth()}
    if hard_expiry:
        headers["x-include-refresh-token-hard-expires-in"] = "true"
    return await emulator.admin.post("/oauth2/v1/tokens/bearer", data=form, headers=headers)


async def exchange(
    emulator: EmulatorHandle, code: str, *, redirect_uri: str = REDIRECT_URI, hard_expiry: bool = False
) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    return await token_request(emulator, form, hard_expiry=hard_expiry)


async def refresh(
    emulator: EmulatorHandle, refresh_token: str, *, hard_expiry: bool = False
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await token_request(emulator, form, hard_expiry=hard_expiry)


@dataclass
class Connection:
    """A company this app is connected to, with a client that calls its Accounting API."""

    emulator: EmulatorHandle
    realm_id: str
    access_token: str
    refresh_token: str

    def path(self, resource: str) -> str:
        return f"/v3/company/{self.realm_id}/{resource.lstrip('/')}"

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.access_token}", "Accept": "application/json"}

    async def get(
        self, resource: str, params: dict[str, str] | None = None, token: str | None = None
    ) -> httpx.Response:
        return await self.emulator.admin.get(self.path(resource), params=params, headers=self.headers(token))

    async def post(
        self, resource: str, body: Any = None, params: dict[str, str] | None = None, token: str | None = None
    ) -> httpx.Response:
        return await self.emulator.admin.post(
            self.path(resource), json=body, params=params, headers=self.headers(token)
        )

    async def query(self, statement: str) -> httpx.Response:
        return await self.get("query", {"query": statement, "minorversion": "75"})

    async def ok(
        self, resource: str, body: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """POSTs and returns the object in the answer, failing the test on any fault."""
        response = await self.post(resource, body, params)
        assert response.status_code == 200, response.text
        payload: dict[str, Any] = response.json()
        key = next(k for k in payload if k != "time")
        result: dict[str, Any] = payload[key]
        return result

    async def read(self, entity: str, entity_id: str) -> dict[str, Any]:
        response = await self.get(f"{entity.lower()}/{entity_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()[entity]
        return result

    # Shortcuts for the objects most tests need.
    async def customer(self, name: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"DisplayName": name or f"Customer {uuid.uuid4().hex[:8]}", **fields}
        return await self.ok("customer", body)

    async def invoice(self, customer_id: str, *amounts: float, **fields: Any) -> dict[str, Any]:
        lines = [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": amount,
                "Description": f"Work {index}",
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": amount},
            }
            for index, amount in enumerate(amounts or (100,), start=1)
        ]
        return await self.ok("invoice", {"CustomerRef": {"value": customer_id}, "Line": lines, **fields})

    async def payment(
        self, customer_id: str, invoice_id: str, amount: float, **fields: Any
    ) -> dict[str, Any]:
        body = {
            "CustomerRef": {"value": customer_id},
            "TotalAmt": amount,
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]}],
            **fields,
        }
        return await self.ok("payment", body)


async def new_company(emulator: EmulatorHandle, name: str | None = None, **options: Any) -> str:
    """A company made through the admin API with the emulator's own defaults (a US company, QuickBooks'
    settings) unless `options` (country, multicurrency, home_currency, preferences) say otherwise."""
    body = {"name": name or f"Test Co {uuid.uuid4().hex[:6]}", **options}
    response = await emulator.admin.post("/__admin/companies", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["realm_id"])


async def connect(emulator: EmulatorHandle, name: str | None = None, **options: Any) -> Connection:
    """Creates a company, authorizes it as a user would, and exchanges the code for tokens."""
    realm_id = await new_company(emulator, name, **options)
    code = await authorization_code(emulator, realm_id)
    response = await exchange(emulator, code)
    assert response.status_code == 200, response.text
    tokens = response.json()
    return Connection(emulator, realm_id, tokens["access_token"], tokens["refresh_token"])


async def admin_ok(
    emulator: EmulatorHandle, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    response = await emulator.admin.request(method, path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def fault_of(response: httpx.Response) -> dict[str, Any]:
    """The first error of a JSON Fault envelope."""
    error: dict[str, Any] = response.json()["Fault"]["Error"][0]
    return error


def coded_line(amount: float, tax_code: str | None = None, **detail: Any) -> dict[str, Any]:
    """A sales line on the Services item, with the tax code given (by Id) if any."""
    sales: dict[str, Any] = {"ItemRef": {"value": "1"}, **detail}
    if tax_code is not None:
        sales["TaxCodeRef"] = {"value": tax_code}
    return {"DetailType": "SalesItemLineDetail", "Amount": amount, "SalesItemLineDetail": sales}


async def tax_code_id(conn: Connection, name: str) -> str:
    """Tax code ids differ per company: look them up by name, as a client of Intuit must."""
    escaped = name.replace("'", "\\'")
    response = await conn.query(f"select * from TaxCode where Name = '{escaped}'")  # noqa: S608 - not SQL
    assert response.status_code == 200, response.text
    return str(response.json()["QueryResponse"]["TaxCode"][0]["Id"])


# --- a webhook receiver -------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class WebhookReceiver:
    """A real HTTP endpoint on 127.0.0.1 that records each POST and answers with the next planned status.

    `plan` lists the answers for the first POSTs (an int status, or "hang" to never answer in time); after
    that every POST gets 200.
    """

    plan: list[int | str] = field(default_factory=list)
    hang_seconds: float = 5.0
    received: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(
            Received({k.lower(): v for k, v in request.headers.items()}, body, time.monotonic())
        )
        answer = self.plan.pop(0) if self.plan else 200
        if answer == "hang":
            await asyncio.sleep(self.hang_seconds)
            return Response(status_code=200)
        return Response(status_code=int(answer))

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async def enough() -> list[Received] | None:
            return self.received if len(self.received) >= count else None

        return await eventually(enough, timeout)


@contextlib.asynccontextmanager
async def webhook_receiver(plan: list[int | str] | None = None) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(plan=list(plan or []))
    app = Starlette(routes=[Route("/webhooks", receiver.handle, methods=["POST"])])
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, timeout=5)
    receiver.url = f"http://127.0.0.1:{port}/webhooks"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)

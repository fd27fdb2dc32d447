"""Helpers for the qbo integration tests: a connected company on the emulator and a refreshing TokenSource."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from qbo.client import QboClient, request_id
from qbo.environments import endpoints_for
from qbo.limits import RealmLimiter
from qbo.oauth import QboOAuth, TokenSet
from tests.support import TEST_CLIENT_ID, TEST_CLIENT_SECRET, Emulator

# The redirect URI the session emulator registers (tests/conftest.py).
REDIRECT_URI = "http://127.0.0.1/callback"
ACCOUNTING = "com.intuit.quickbooks.accounting"

# The `emulator_factory` fixture of tests/conftest.py: starts an emulator with extra command-line options.
EmulatorFactory = Callable[..., Awaitable[Emulator]]


def oauth_for(
    emulator: Emulator, http: httpx.AsyncClient | None, *, client_secret: str = TEST_CLIENT_SECRET
) -> QboOAuth:
    return QboOAuth(
        client_id=TEST_CLIENT_ID,
        client_secret=client_secret,
        redirect_uri=REDIRECT_URI,
        endpoints=endpoints_for("emulator", emulator.base_url),
        http=http,
        timeout=10,
    )


async def consent(emulator: Emulator, realm_id: str, state: str = "state-1") -> str:
    """The user clicks "Connect" in the emulator's consent page; returns the callback's code."""
    response = await emulator.admin.post(
        f"/__admin/companies/{realm_id}/authorize",
        json={"client_id": TEST_CLIENT_ID, "redirect_uri": REDIRECT_URI, "state": state, "scope": ACCOUNTING},
    )
    response.raise_for_status()
    query = parse_qs(urlsplit(response.json()["redirect_url"]).query)
    assert query["state"] == [state]
    assert query["realmId"] == [realm_id]
    return str(query["code"][0])


class RefreshingTokens:
    """A TokenSource like the engine's: refreshes through Intuit's OAuth and keeps the newest tokens."""

    def __init__(self, oauth: QboOAuth, tokens: TokenSet, *, first_access_token: str | None = None) -> None:
        self.oauth = oauth
        self.tokens = tokens
        self.rejected: list[str] = []
        self._first = first_access_token

    async def access_token(self) -> str:
        if self._first is not None:
            return self._first
        return self.tokens.access_token

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        self.rejected.append(rejected)
        self._first = None
        self.tokens = await self.oauth.refresh(self.tokens.refresh_token)
        return self.tokens.access_token


class FixedTokens:
    """A TokenSource whose refresh hands out another (possibly useless) token."""

    def __init__(self, token: str, after_refresh: str) -> None:
        self.token = token
        self.after_refresh = after_refresh
        self.rejected: list[str] = []

    async def access_token(self) -> str:
        return self.token

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        self.rejected.append(rejected)
        return self.after_refresh


@dataclass
class Company:
    """A company connected through the real OAuth flow, and a way to build clients for it."""

    emulator: Emulator
    realm_id: str
    http: httpx.AsyncClient
    oauth: QboOAuth
    tokens: TokenSet
    waits: list[float] = field(default_factory=list)

    def client(self, **overrides: Any) -> QboClient:
        options: dict[str, Any] = {
            "realm_id": self.realm_id,
            "api_base_url": self.emulator.base_url,
            "tokens": RefreshingTokens(self.oauth, self.tokens),
            "http": self.http,
            "limiter": RealmLimiter(),
            "on_wait": self.record_wait,
            # Short backoffs keep throttling tests fast; the behaviour is the same.
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
        }
        options.update(overrides)
        return QboClient(**options)

    async def record_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def inject(self, **spec: Any) -> None:
        """Arms a fault for this company's API calls only (other tests share the emulator)."""
        response = await self.emulator.admin.post("/__admin/faults", json={"realm_id": self.realm_id, **spec})
        assert response.status_code == 201, response.text

    async def requests(self, since_seq: int = 0) -> list[dict[str, Any]]:
        response = await self.emulator.admin.get(
            "/__admin/requests", params={"realm_id": self.realm_id, "since_seq": since_seq}
        )
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()["requests"]
        return entries

    async def last_seq(self) -> int:
        entries = await self.requests()
        return int(entries[-1]["seq"]) if entries else 0


async def connect(emulator: Emulator, http: httpx.AsyncClient, name: str | None = None) -> Company:
    realm_id = await emulator.create_company(name or f"QBO client test {uuid.uuid4().hex[:6]}")
    oauth = oauth_for(emulator, http)
    tokens = await oauth.exchange_code(await consent(emulator, realm_id), realm_id)
    return Company(emulator, realm_id, http, oauth, tokens)


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def new_request_id() -> str:
    return request_id("tests.qbo", uuid.uuid4().hex)


async def service_item_id(client: QboClient) -> str:
    (item,) = await client.query("SELECT * FROM Item WHERE Name = 'Services'")
    return str(item["Id"])


async def create_invoice(
    client: QboClient, customer_id: str, *amounts: float, **fields: Any
) -> dict[str, Any]:
    item_id = await service_item_id(client)
    lines = [
        {
            "DetailType": "SalesItemLineDetail",
            "Amount": amount,
            "Description": f"Work {index}",
            "SalesItemLineDetail": {"ItemRef": {"value": item_id}, "Qty": 1, "UnitPrice": amount},
        }
        for index, amount in enumerate(amounts or (100.0,), start=1)
    ]
    body = {"CustomerRef": {"value": customer_id}, "Line": lines, **fields}
    return await client.create("Invoice", body, request_id=new_request_id())


async def create_customer(client: QboClient, name: str | None = None) -> dict[str, Any]:
    return await client.create(
        "Customer", {"DisplayName": name or unique("Customer")}, request_id=new_request_id()
    )

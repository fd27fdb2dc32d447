"""Direct QuickBooks access for tests: act in a company as another app would (seed customers, invoices)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx

from qbo.client import QboClient, endpoints_for
from qbo.limits import RealmLimiter
from qbo.oauth import QboOAuth
from tests.support import TEST_CLIENT_ID, TEST_CLIENT_SECRET, Emulator

SEED_REDIRECT_URI = "http://127.0.0.1/callback"


class StaticTokens:
    """A TokenSource with one access token, for a client that never outlives it (tests, the bench baseline)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self) -> str:
        return self._token

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        raise AssertionError("this access token should not expire while it is used")


async def access_token_through_consent(
    *,
    admin: httpx.AsyncClient,
    base_url: str,
    http: httpx.AsyncClient,
    realm_id: str,
    client_id: str = TEST_CLIENT_ID,
    client_secret: str = TEST_CLIENT_SECRET,
    redirect_uri: str = SEED_REDIRECT_URI,
) -> str:
    """An access token for the company, as another app gets one: the emulator's consent (admin) route, then the
    code exchanged at its token endpoint."""
    oauth = QboOAuth(
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=redirect_uri,
        endpoints=endpoints_for("emulator", base_url),
        http=http,
    )
    consent = await admin.post(
        f"/__admin/companies/{realm_id}/authorize",
        json={
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": "direct",
            "scope": "com.intuit.quickbooks.accounting",
        },
    )
    consent.raise_for_status()
    code = parse_qs(urlsplit(consent.json()["redirect_url"]).query)["code"][0]
    return (await oauth.exchange_code(code, realm_id)).access_token


@contextlib.asynccontextmanager
async def qbo_client_for(emulator: Emulator, realm_id: str) -> AsyncIterator[QboClient]:
    """A QuickBooks client for the company, authorized through the emulator's consent (admin) route."""
    async with httpx.AsyncClient(timeout=30) as http:
        token = await access_token_through_consent(
            admin=emulator.admin, base_url=emulator.base_url, http=http, realm_id=realm_id
        )
        yield QboClient(
            realm_id=realm_id,
            api_base_url=emulator.base_url,
            tokens=StaticTokens(token),
            http=http,
            limiter=RealmLimiter(),
        )

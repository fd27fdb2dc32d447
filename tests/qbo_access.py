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
    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self) -> str:
        return self._token

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        raise AssertionError("the seeding token should not expire during a test")


@contextlib.asynccontextmanager
async def qbo_client_for(emulator: Emulator, realm_id: str) -> AsyncIterator[QboClient]:
    """A QuickBooks client for the company, authorized through the emulator's consent (admin) route."""
    async with httpx.AsyncClient(timeout=30) as http:
        oauth = QboOAuth(
            client_id=TEST_CLIENT_ID,
            client_secret=TEST_CLIENT_SECRET,
            redirect_uri=SEED_REDIRECT_URI,
            endpoints=endpoints_for("emulator", emulator.base_url),
            http=http,
        )
        consent = await emulator.admin.post(
            f"/__admin/companies/{realm_id}/authorize",
            json={
                "client_id": TEST_CLIENT_ID,
                "redirect_uri": SEED_REDIRECT_URI,
                "state": "seed",
                "scope": "com.intuit.quickbooks.accounting",
            },
        )
        consent.raise_for_status()
        code = parse_qs(urlsplit(consent.json()["redirect_url"]).query)["code"][0]
        tokens = await oauth.exchange_code(code, realm_id)
        yield QboClient(
            realm_id=realm_id,
            api_base_url=emulator.base_url,
            tokens=StaticTokens(tokens.access_token),
            http=http,
            limiter=RealmLimiter(),
        )

"""Connecting QuickBooks: OAuth through the emulator, and every way the callback can fail."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from sqlmodel import select

from models.tables import OAuthState, QuickBooksConnection, QuickBooksGrant, utcnow
from tests.engine import Engine


def outcome(response: httpx.Response) -> dict[str, str]:
    """The platform return URL's query, as the browser lands there."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("http://platform.test/settings/integrations?")
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


async def start_connect(engine: Engine, account_id: str) -> dict[str, str]:
    response = await engine.api.post(f"/v1/accounts/{account_id}/quickbooks/connect")
    response.raise_for_status()
    return {
        key: values[0]
        for key, values in parse_qs(urlsplit(response.json()["authorization_url"]).query).items()
    }


async def callback(engine: Engine, **params: str) -> httpx.Response:
    async with httpx.AsyncClient() as browser:
        return await browser.get(f"{engine.api_url}/oauth/quickbooks/callback", params=params)


async def test_connect_shows_connected_with_realm_and_date_and_stores_tokens_encrypted(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    assert (await engine.connection_status(account))["status"] == "not_connected"
    realm = await engine.emulator.create_company("Lovelace Consulting")

    landed = outcome(await engine.authorize(account, realm))
    assert landed == {
        "quickbooks": "connected",
        "account_id": account,
        "realm_id": realm,
        "company_name": "Lovelace Consulting",
    }

    status = await engine.wait_for(
        lambda: engine.connection_status(account), lambda s: s["status"] == "connected"
    )
    assert status["realm_id"] == realm
    assert status["company_name"] == "Lovelace Consulting"
    assert status["connected_at"] is not None
    async with engine.sessions() as session:
        row = await session.get(QuickBooksConnection, account)
        assert row is not None and row.access_token_enc and row.refresh_token_enc
        company = await engine.emulator.company(realm)
        assert all(row.access_token_enc.find(value) == -1 for value in ("Bearer", realm))
        grants = (
            await session.exec(select(QuickBooksGrant).where(QuickBooksGrant.account_id == account))
        ).all()
        # The adopted grant keeps no copy of the tokens.
        assert grants and all(grant.access_token_enc is None and grant.adopted_at for grant in grants)
    assert company["authorizations"]


async def test_denied_authorization_returns_a_readable_error(engine: Engine) -> None:
    account = await engine.create_account()
    query = await start_connect(engine, account)
    landed = outcome(await callback(engine, error="access_denied", state=query["state"]))
    assert landed["quickbooks"] == "error"
    assert landed["reason"] == "access_denied"
    assert "denied" in landed["message"]
    assert (await engine.connection_status(account))["status"] == "not_connected"


async def test_forged_state_is_refused(engine: Engine) -> None:
    landed = outcome(await callback(engine, code="abc", state="forged-state", realmId="123"))
    assert landed["reason"] == "invalid_state"
    landed = outcome(await callback(engine, code="abc", realmId="123"))
    assert landed["reason"] == "invalid_state"


async def test_expired_state_is_refused(engine: Engine) -> None:
    account = await engine.create_account()
    query = await start_connect(engine, account)
    async with engine.sessions() as session:
        for row in (await session.exec(select(OAuthState).where(OAuthState.account_id == account))).all():
            row.expires_at = utcnow() - timedelta(seconds=1)
            session.add(row)
        await session.commit()
    landed = outcome(await callback(engine, code="abc", state=query["state"], realmId="123"))
    assert (landed["reason"], landed["account_id"]) == ("state_expired", account)


async def test_state_is_single_use(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    first = await engine.authorize(account, realm)
    assert outcome(first)["quickbooks"] == "connected"
    replay = await httpx.AsyncClient().get(first.request.url)
    assert outcome(replay)["reason"] == "state_used"


async def test_failed_code_exchange_is_reported(engine: Engine) -> None:
    account = await engine.create_account()
    query = await start_connect(engine, account)
    landed = outcome(await callback(engine, code="not-a-real-code", state=query["state"], realmId="123"))
    assert landed["reason"] == "exchange_failed"
    assert (await engine.connection_status(account))["status"] == "not_connected"


async def test_plan_downgraded_before_the_callback_is_refused(engine: Engine) -> None:
    account = await engine.create_account(plan="premium")
    realm = await engine.emulator.create_company()
    query = await start_connect(engine, account)
    await engine.api.put(f"/v1/accounts/{account}", json={"plan": "free"})
    consent = await engine.emulator.admin.post(
        f"/__admin/companies/{realm}/authorize",
        json={key: query[key] for key in ("client_id", "redirect_uri", "state", "scope")},
    )
    async with httpx.AsyncClient() as browser:
        landed = outcome(await browser.get(consent.json()["redirect_url"]))
    assert landed["reason"] == "plan_required"


async def test_reconnecting_to_another_company_is_refused_until_disconnected(engine: Engine) -> None:
    account = await engine.create_account()
    first = await engine.connect(account)
    other = await engine.emulator.create_company("Someone Else Ltd")
    landed = outcome(await engine.authorize(account, other))
    assert landed["reason"] == "different_company"
    assert first in landed["message"] and other in landed["message"]
    assert (await engine.connection_status(account))["realm_id"] == first
    # The unwanted authorization was revoked at Intuit.
    company = await engine.emulator.company(other)
    assert all(auth.get("revoked") for auth in company["authorizations"])


async def test_reconnecting_to_the_same_company_keeps_the_connection_date(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    before = await engine.connection_status(account)
    landed = outcome(await engine.authorize(account, realm))
    assert landed["quickbooks"] == "connected"
    after = await engine.wait_for(
        lambda: engine.connection_status(account), lambda s: s["status"] == "connected"
    )
    assert after["connected_at"] == before["connected_at"]


class _FormFields(HTMLParser):
    """The hidden inputs of the consent page's form, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.fields[str(values["name"])] = values.get("value") or ""


async def consent_page(engine: Engine, account_id: str, browser: httpx.AsyncClient) -> dict[str, str]:
    started = await engine.api.post(f"/v1/accounts/{account_id}/quickbooks/connect")
    page = await browser.get(started.json()["authorization_url"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Authorize" in page.text
    form = _FormFields()
    form.feed(page.text)
    return form.fields


async def test_connecting_through_intuits_consent_page_like_a_browser(engine: Engine) -> None:
    account = await engine.create_account()
    async with httpx.AsyncClient(timeout=30) as browser:
        fields = await consent_page(engine, account, browser)
        consented = await browser.post(
            f"{engine.emulator.base_url}/connect/oauth2",
            data={**fields, "user_email": "owner@example.com", "realm_id": "new",
                  "company_name": "Browser Made Co", "action": "authorize"},
        )  # fmt: skip
        assert consented.status_code in (302, 303)
        assert consented.headers["location"].startswith(engine.settings.qbo_redirect_uri)
        landed = outcome(await browser.get(consented.headers["location"]))
    assert landed["quickbooks"] == "connected"
    status = await engine.wait_for(
        lambda: engine.connection_status(account), lambda s: s["status"] == "connected"
    )
    company = await engine.emulator.company(status["realm_id"])
    assert company["name"] == "Browser Made Co"


async def test_cancel_on_the_consent_page_comes_back_as_denied(engine: Engine) -> None:
    account = await engine.create_account()
    async with httpx.AsyncClient(timeout=30) as browser:
        fields = await consent_page(engine, account, browser)
        cancelled = await browser.post(
            f"{engine.emulator.base_url}/connect/oauth2",
            data={**fields, "user_email": "owner@example.com", "realm_id": "new", "action": "cancel"},
        )
        landed = outcome(await browser.get(cancelled.headers["location"]))
    assert (landed["quickbooks"], landed["reason"]) == ("error", "access_denied")
    assert (await engine.connection_status(account))["status"] == "not_connected"


def naming_realm(callback_url: str, realm_id: str) -> str:
    """The callback URL with its `realmId` edited, as anyone can in their own browser's address bar."""
    parts = urlsplit(callback_url)
    query = [(key, realm_id if key == "realmId" else value) for key, value in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def grants_of(engine: Engine, account_id: str) -> list[QuickBooksGrant]:
    async with engine.sessions() as session:
        return list(
            (
                await session.exec(select(QuickBooksGrant).where(QuickBooksGrant.account_id == account_id))
            ).all()
        )


def revoked(company: dict[str, Any]) -> list[bool]:
    return [bool(authorization["revoked"]) for authorization in company["authorizations"]]


async def test_a_callback_naming_another_company_is_refused_and_its_tokens_revoked(engine: Engine) -> None:
    victim = await engine.create_account()
    victims_company = await engine.connect(victim)
    attacker = await engine.create_account()
    attackers_company = await engine.emulator.create_company("Attacker Ltd")

    async with httpx.AsyncClient(timeout=30) as browser:
        callback_url = await engine.consent(attacker, attackers_company, browser)
        landed = outcome(await browser.get(naming_realm(callback_url, victims_company)))

    assert (landed["quickbooks"], landed["reason"]) == ("error", "company_not_verified")
    assert landed["account_id"] == attacker
    assert (await engine.connection_status(attacker))["status"] == "not_connected"
    assert await grants_of(engine, attacker) == []
    # The tokens the callback obtained (for the attacker's own company) were revoked at Intuit.
    assert revoked(await engine.emulator.company(attackers_company)) == [True]
    # The victim's company keeps the victim's authorization only, untouched.
    assert revoked(await engine.emulator.company(victims_company)) == [False]
    assert (await engine.connection_status(victim))["status"] == "connected"


async def test_a_callback_with_a_malformed_company_id_is_refused_readably(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    for bad in ("9" * 40, "../1", "12 34"):
        async with httpx.AsyncClient(timeout=30) as browser:
            callback_url = await engine.consent(account, realm, browser)
            landed = outcome(await browser.get(naming_realm(callback_url, bad)))
        assert (landed["quickbooks"], landed["reason"]) == ("error", "company_not_verified"), bad
    assert await grants_of(engine, account) == []
    assert (await engine.connection_status(account))["status"] == "not_connected"


async def test_quickbooks_unreachable_while_verifying_refuses_and_revokes(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    faulted = await engine.emulator.admin.post(
        "/__admin/faults",
        json={"kind": "http", "path_contains": "/companyinfo/", "realm_id": realm, "status": 503, "count": 1},
    )
    faulted.raise_for_status()
    landed = outcome(await engine.authorize(account, realm))
    assert (landed["quickbooks"], landed["reason"]) == ("error", "unavailable")
    assert await grants_of(engine, account) == []
    assert revoked(await engine.emulator.company(realm)) == [True]
    assert (await engine.connection_status(account))["status"] == "not_connected"


async def test_the_local_done_page_names_the_company(engine: Engine) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(
            f"{engine.api_url}/oauth/quickbooks/done",
            params={
                "quickbooks": "connected",
                "account_id": "a1",
                "realm_id": "123",
                "company_name": "Bob's <Bakery>",
            },
        )
    assert page.status_code == 200
    assert "connected to Bob&#x27;s &lt;Bakery&gt;" in page.text

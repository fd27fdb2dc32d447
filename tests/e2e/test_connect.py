"""Connecting QuickBooks: OAuth through the emulator, and every way the callback can fail."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from html.parser import HTMLParser
from http.cookies import Morsel, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from models.signing import query_message, verify_query
from models.tables import OAuthState, QuickBooksConnection, QuickBooksGrant, utcnow
from tests.conftest import EngineFactory
from tests.engine import Engine, running_engine
from tests.support import Emulator


def outcome(response: httpx.Response) -> dict[str, str]:
    """The platform return URL's query, as the browser lands there."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("http://platform.test/settings/integrations?")
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def set_cookies(response: httpx.Response) -> dict[str, Morsel[str]]:
    """The cookies a response sets (or clears), with their attributes."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return dict(jar)


async def start_url(engine: Engine, account_id: str) -> str:
    """What the platform gets from Connect QuickBooks: the link to send the user's browser to."""
    response = await engine.api.post(f"/v1/accounts/{account_id}/quickbooks/connect")
    response.raise_for_status()
    url: str = response.json()["authorization_url"]
    return url


async def start_connect(engine: Engine, account_id: str, browser: httpx.AsyncClient) -> dict[str, str]:
    """Connect QuickBooks and open the start link in `browser`: the query of Intuit's authorization URL."""
    opened = await browser.get(await start_url(engine, account_id))
    assert opened.status_code == 303, opened.text
    return query_of(opened.headers["location"])


async def approve(engine: Engine, realm_id: str, intuit_query: dict[str, str]) -> str:
    """Authorize on Intuit's page: the callback URL Intuit then sends the browser to."""
    consent = await engine.emulator.admin.post(
        f"/__admin/companies/{realm_id}/authorize",
        json={key: intuit_query[key] for key in ("client_id", "redirect_uri", "state", "scope")},
    )
    consent.raise_for_status()
    redirect_url: str = consent.json()["redirect_url"]
    return redirect_url


async def callback(engine: Engine, browser: httpx.AsyncClient | None = None, **params: str) -> httpx.Response:
    if browser is not None:
        return await browser.get(f"{engine.api_url}/oauth/quickbooks/callback", params=params)
    async with httpx.AsyncClient() as stranger:
        return await stranger.get(f"{engine.api_url}/oauth/quickbooks/callback", params=params)


async def test_connect_shows_connected_with_realm_and_date_and_stores_tokens_encrypted(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    assert (await engine.connection_status(account))["status"] == "not_connected"
    realm = await engine.emulator.create_company("Lovelace Consulting")

    landed = outcome(await engine.authorize(account, realm))
    assert {key: landed[key] for key in ("quickbooks", "account_id", "realm_id")} == {
        "quickbooks": "connected",
        "account_id": account,
        "realm_id": realm,
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
    async with httpx.AsyncClient() as browser:
        query = await start_connect(engine, account, browser)
        landed = outcome(await callback(engine, browser, error="access_denied", state=query["state"]))
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
    async with httpx.AsyncClient() as browser:
        query = await start_connect(engine, account, browser)
        async with engine.sessions() as session:
            for row in (await session.exec(select(OAuthState).where(OAuthState.account_id == account))).all():
                row.expires_at = utcnow() - timedelta(seconds=1)
                session.add(row)
            await session.commit()
        landed = outcome(await callback(engine, browser, code="abc", state=query["state"], realmId="123"))
    assert landed["reason"] == "state_expired" and "account_id" not in landed


async def test_state_is_single_use(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    first = await engine.authorize(account, realm)
    assert outcome(first)["quickbooks"] == "connected"
    replay = await httpx.AsyncClient().get(first.request.url)
    assert outcome(replay)["reason"] == "state_used"


async def test_failed_code_exchange_is_reported(engine: Engine) -> None:
    account = await engine.create_account()
    async with httpx.AsyncClient() as browser:
        query = await start_connect(engine, account, browser)
        landed = outcome(
            await callback(engine, browser, code="not-a-real-code", state=query["state"], realmId="123")
        )
    assert landed["reason"] == "exchange_failed"
    assert (await engine.connection_status(account))["status"] == "not_connected"


async def test_plan_downgraded_before_the_callback_is_refused(engine: Engine) -> None:
    account = await engine.create_account(plan="premium")
    realm = await engine.emulator.create_company()
    async with httpx.AsyncClient() as browser:
        query = await start_connect(engine, account, browser)
        await engine.api.put(f"/v1/accounts/{account}", json={"plan": "free"})
        landed = outcome(await browser.get(await approve(engine, realm, query)))
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
    page = await browser.get(await start_url(engine, account_id), follow_redirects=True)
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


@pytest.mark.parametrize("status", [400, 404])
async def test_quickbooks_answering_verification_otherwise_than_refusing_the_tokens_revokes_nothing_shared(
    engine: Engine, status: int
) -> None:
    # Only 401/403 say "these tokens do not open that company". Any other answer used to count as that too, and
    # the tokens were revoked at once, which (Intuit documents) disconnects the app from the company for every
    # other account of ours on it: here, the colleague's.
    colleague = await engine.create_account()
    shared = await engine.connect(colleague)
    # The colleague's connection has read its company (the check on connect) before the fault is armed for ours.
    await engine.wait_for(
        lambda: engine.connection_status(colleague), lambda body: body.get("company") is not None
    )
    account = await engine.create_account()
    faulted = await engine.emulator.admin.post(
        "/__admin/faults",
        json={
            "kind": "http",
            "path_contains": "/companyinfo/",
            "realm_id": shared,
            "status": status,
            "count": 1,
        },
    )
    faulted.raise_for_status()
    landed = outcome(await engine.authorize(account, shared))
    assert (landed["quickbooks"], landed["reason"]) == ("error", "unavailable")
    assert await grants_of(engine, account) == []
    assert (await engine.connection_status(account))["status"] == "not_connected"
    # The new tokens are dropped here, not revoked: the colleague's authorization and connection are untouched.
    assert revoked(await engine.emulator.company(shared)) == [False, False]
    assert (await engine.connection_status(colleague))["status"] == "connected"

    # With nobody else on the company, the unverified tokens are revoked, as for no answer at all.
    alone = await engine.emulator.create_company()
    faulted = await engine.emulator.admin.post(
        "/__admin/faults",
        json={
            "kind": "http",
            "path_contains": "/companyinfo/",
            "realm_id": alone,
            "status": status,
            "count": 1,
        },
    )
    faulted.raise_for_status()
    landed = outcome(await engine.authorize(account, alone))
    assert (landed["quickbooks"], landed["reason"]) == ("error", "unavailable")
    assert revoked(await engine.emulator.company(alone)) == [True]


async def test_the_local_done_page_never_shows_words_from_the_link(engine: Engine) -> None:
    # Anyone can craft a link to this page: free text in it would put a stranger's words on this site.
    lure = "Your account is suspended: call +1 555 0100"
    async with httpx.AsyncClient(timeout=30) as browser:
        connected = await browser.get(
            f"{engine.api_url}/oauth/quickbooks/done",
            params={"quickbooks": "connected", "realm_id": "123", "company_name": lure, "account_id": lure},
        )
        failed = await browser.get(
            f"{engine.api_url}/oauth/quickbooks/done",
            params={"quickbooks": "error", "reason": "state_expired", "message": lure},
        )
        garbled = await browser.get(
            f"{engine.api_url}/oauth/quickbooks/done", params={"quickbooks": "error", "reason": lure}
        )
    assert "connected to QuickBooks company 123" in connected.text
    assert "(state_expired)" in failed.text
    for page in (connected, failed, garbled):
        assert page.status_code == 200
        assert "suspended" not in page.text


# --- The flow belongs to the browser that started it --------------------------------------------------------


async def test_a_victim_finishing_an_attackers_flow_in_their_own_browser_is_refused(engine: Engine) -> None:
    attacker = await engine.create_account()
    victim_company = await engine.emulator.create_company("Victim & Sons")
    async with httpx.AsyncClient() as attackers_browser:
        # The attacker starts connecting their own account and sends Intuit's page on to the victim.
        page = await attackers_browser.get(await start_url(engine, attacker), follow_redirects=True)
        assert page.url.path == "/connect/oauth2"
        lure = query_of(str(page.url))
    async with httpx.AsyncClient() as victims_browser:
        callback_url = await approve(engine, victim_company, lure)
        refused = await victims_browser.get(callback_url)
        landed = outcome(refused)
    assert (landed["quickbooks"], landed["reason"]) == ("error", "browser_mismatch")
    assert "account_id" not in landed  # this browser did not start it: it is told nothing about the account
    assert landed["message"]
    assert await grants_of(engine, attacker) == []
    assert (await engine.connection_status(attacker))["status"] == "not_connected"
    # The code was never exchanged: the victim's company holds no authorization of the app.
    assert (await engine.emulator.company(victim_company))["authorizations"] == []
    # And the state is spent: even the attacker's own browser cannot finish it now.
    async with httpx.AsyncClient() as attackers_browser:
        assert outcome(await attackers_browser.get(callback_url))["reason"] == "state_used"


async def test_a_callback_with_another_flows_cookie_is_refused(engine: Engine) -> None:
    mine, theirs = await engine.create_account(), await engine.create_account()
    realm = await engine.emulator.create_company()
    async with httpx.AsyncClient() as their_browser, httpx.AsyncClient() as my_browser:
        their_flow = await start_connect(engine, theirs, their_browser)
        await start_connect(engine, mine, my_browser)
        # My flow's cookie value, presented under their flow's cookie name.
        [(their_name, _)] = their_browser.cookies.items()
        [(_, my_value)] = my_browser.cookies.items()
        my_browser.cookies.set(their_name, my_value)
        landed = outcome(await my_browser.get(await approve(engine, realm, their_flow)))
    assert landed["reason"] == "browser_mismatch"
    assert await grants_of(engine, theirs) == []


async def test_a_start_link_opens_once(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    link = await start_url(engine, account)
    async with httpx.AsyncClient() as browser, httpx.AsyncClient() as other_browser:
        opened = await browser.get(link)
        assert opened.status_code == 303
        again = await other_browser.get(link)
        landed = outcome(again)
        assert (landed["quickbooks"], landed["reason"]) == ("error", "start_link_used")
        assert set_cookies(again) == {}  # no cookie for the second browser
        assert outcome(await browser.get(link))["reason"] == "start_link_used"
        # The browser that opened it first still finishes connecting.
        connected = outcome(
            await browser.get(await approve(engine, realm, query_of(opened.headers["location"])))
        )
    assert connected["quickbooks"] == "connected"


async def test_a_start_link_not_opened_within_minutes_is_refused(engine: Engine) -> None:
    account = await engine.create_account()
    response = await engine.api.post(f"/v1/accounts/{account}/quickbooks/connect")
    started = response.json()
    issued = utcnow()
    opens_until = datetime.fromisoformat(started["authorization_url_expires_at"])
    assert timedelta(0) < opens_until - issued <= timedelta(seconds=engine.settings.oauth_launch_ttl_seconds)
    assert opens_until < datetime.fromisoformat(started["state_expires_at"])
    async with engine.sessions() as session:
        for row in (await session.exec(select(OAuthState).where(OAuthState.account_id == account))).all():
            row.launch_expires_at = utcnow() - timedelta(seconds=1)
            session.add(row)
        await session.commit()
    async with httpx.AsyncClient() as browser:
        late = await browser.get(started["authorization_url"])
    assert outcome(late)["reason"] == "start_link_expired"
    assert set_cookies(late) == {}


async def test_two_flows_in_one_browser_both_connect(engine: Engine) -> None:
    first, second = await engine.create_account(), await engine.create_account()
    first_company, second_company = (
        await engine.emulator.create_company(),
        await engine.emulator.create_company(),
    )
    async with httpx.AsyncClient() as browser:
        first_flow = await start_connect(engine, first, browser)
        second_flow = await start_connect(engine, second, browser)
        assert len(browser.cookies) == 2
        # Finished in the other order, each with its own cookie.
        second_landed = outcome(await browser.get(await approve(engine, second_company, second_flow)))
        first_landed = outcome(await browser.get(await approve(engine, first_company, first_flow)))
        assert len(browser.cookies) == 0  # each callback cleared its own flow's cookie
    assert (first_landed["quickbooks"], first_landed["realm_id"]) == ("connected", first_company)
    assert (second_landed["quickbooks"], second_landed["realm_id"]) == ("connected", second_company)


def assert_flow_cookie(morsel: Morsel[str], *, secure: bool, path: str, ttl: int) -> None:
    assert morsel.value and len(morsel.value) >= 32
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == path
    assert bool(morsel["secure"]) is secure
    assert morsel["domain"] == ""  # host-only
    assert 0 < int(morsel["max-age"]) <= ttl


async def test_the_flow_cookie_is_http_only_same_site_lax_and_scoped_to_the_oauth_paths(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    async with httpx.AsyncClient() as browser:
        opened = await browser.get(await start_url(engine, account))
    [(name, morsel)] = set_cookies(opened).items()
    assert name.startswith("qbo_oauth_")
    assert_flow_cookie(
        morsel, secure=False, path="/oauth/quickbooks", ttl=engine.settings.oauth_state_ttl_seconds
    )
    assert opened.headers["cache-control"] == "no-store"
    assert opened.headers["referrer-policy"] == "no-referrer"


async def test_the_flow_cookie_is_secure_and_host_locked_behind_https(
    dev_env: WorkflowEnvironment, migrated_database: str, emulator: Emulator, task_queue: str
) -> None:
    public = "https://qbo-sync.example"
    async with running_engine(
        env=dev_env,
        database_url=migrated_database,
        emulator=emulator,
        task_queue=task_queue,
        with_worker=False,
        api_public_url=public,
        qbo_redirect_uri=f"{public}/oauth/quickbooks/callback",
    ) as secure_engine:
        account = await secure_engine.create_account()
        link = await start_url(secure_engine, account)
        assert link.startswith(f"{public}/oauth/quickbooks/start?")
        async with httpx.AsyncClient() as browser:
            # The TLS-terminating proxy in front of the API, played by hand.
            opened = await browser.get(secure_engine.api_url + link.removeprefix(public))
    [(name, morsel)] = set_cookies(opened).items()
    # __Host-: only this host, over HTTPS, can set it; a sibling subdomain cannot plant one for its own flow.
    assert name.startswith("__Host-qbo_oauth_")
    assert_flow_cookie(morsel, secure=True, path="/", ttl=secure_engine.settings.oauth_state_ttl_seconds)


async def test_every_callback_outcome_lands_readably_and_clears_the_flow_cookie(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    elsewhere = await engine.emulator.create_company()

    async def finish(
        approved_for: str | None = None, meanwhile: Callable[[], Awaitable[Any]] | None = None, **params: str
    ) -> dict[str, str]:
        """One flow in a fresh browser, its callback carrying Intuit's answer (if approved) edited by `params`."""
        async with httpx.AsyncClient() as browser:
            flow = await start_connect(engine, account, browser)
            if meanwhile is not None:
                await meanwhile()
            [name] = browser.cookies.keys()
            query = {"state": flow["state"]}
            if approved_for is not None:
                query = query_of(await approve(engine, approved_for, flow))
            query.update(params)
            response = await browser.get(f"{engine.api_url}/oauth/quickbooks/callback", params=query)
            landed = outcome(response)
            cleared = set_cookies(response)[name]
            assert cleared.value == "" and cleared["max-age"] == "0", landed
            assert response.headers["cache-control"] == "no-store"
            assert landed["message"] if landed["quickbooks"] == "error" else landed["realm_id"]
            return landed

    assert (await finish(error="access_denied"))["reason"] == "access_denied"
    assert (await finish(error="server_error"))["reason"] == "authorization_failed"
    assert (await finish(error="<b>hi</b>"))["message"] == "QuickBooks reported an error: an unknown error."
    assert (await finish())["reason"] == "missing_code"
    assert (await finish(code="not-a-real-code", realmId=realm))["reason"] == "exchange_failed"
    assert (await finish(realm, realmId="../1"))["reason"] == "company_not_verified"
    assert (await finish(realm, realmId=elsewhere))["reason"] == "company_not_verified"
    assert (await finish(realm))["quickbooks"] == "connected"
    await engine.wait_for(lambda: engine.connection_status(account), lambda s: s["status"] == "connected")
    assert (await finish(elsewhere))["reason"] == "different_company"

    async def downgrade() -> None:
        (await engine.api.put(f"/v1/accounts/{account}", json={"plan": "free"})).raise_for_status()

    assert (await finish(realm, meanwhile=downgrade))["reason"] == "plan_required"


async def test_two_sign_ins_to_different_companies_at_once_never_switch_the_company_silently(
    engine_with: EngineFactory,
) -> None:
    # Two tabs: both callbacks pass before the connection workflow adopted either authorization.
    engine = await engine_with(oauth_adoption_wait_seconds=1)
    await engine.stop_workers()
    account = await engine.create_account()
    first, second = await engine.emulator.create_company(), await engine.emulator.create_company()
    assert outcome(await engine.authorize(account, first))["quickbooks"] == "connecting"
    assert outcome(await engine.authorize(account, second))["quickbooks"] == "connecting"
    assert (await engine.connection_status(account))["status"] == "connecting"
    engine.start_workers(sticky=False)

    status = await engine.wait_for(
        lambda: engine.connection_status(account), lambda s: s["status"] == "connected"
    )
    assert status["realm_id"] == first

    # The second company's authorization is refused by the connection's one writer: revoked, its tokens dropped.
    async def second_revoked() -> list[bool]:
        return revoked(await engine.emulator.company(second))

    await engine.wait_for(second_revoked, lambda states: states == [True])
    assert (await engine.connection_status(account))["realm_id"] == first
    assert all(
        grant.access_token_enc is None and grant.refresh_token_enc is None
        for grant in await grants_of(engine, account)
    )


async def test_forged_missing_and_pre_binding_start_links_are_refused_readably(engine: Engine) -> None:
    async with httpx.AsyncClient() as browser:
        for params in ({}, {"state": "forged-state"}):
            response = await browser.get(f"{engine.api_url}/oauth/quickbooks/start", params=params)
            assert outcome(response)["reason"] == "invalid_state"
            assert set_cookies(response) == {}
    # A state issued before flows were bound to browsers has no start link and no browser: refused both ways.
    account = await engine.create_account()
    state = "issued-before-binding-" + "x" * 20
    async with engine.sessions() as session:
        session.add(
            OAuthState(
                state_hash=hashlib.sha256(state.encode()).hexdigest(),
                account_id=account,
                expires_at=utcnow() + timedelta(minutes=5),
            )
        )
        await session.commit()
    async with httpx.AsyncClient() as browser:
        opened = await browser.get(f"{engine.api_url}/oauth/quickbooks/start", params={"state": state})
        assert outcome(opened)["reason"] == "start_link_expired"
        landed = outcome(await callback(engine, browser, state=state, code="abc", realmId="123"))
    assert landed["reason"] == "browser_mismatch"


# --- The return to the platform can be trusted ---------------------------------------------------------------


def signed_by_us(engine: Engine, landed: dict[str, str]) -> bool:
    """What the platform does before acting on a return: check its signature (and then its flow)."""
    return verify_query(
        engine.settings.platform_events_secret.get_secret_value(), landed["signature"], query_message(landed)
    )


async def test_the_return_to_the_platform_is_signed_and_names_the_sign_in(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company("Signed Return Co")
    async with httpx.AsyncClient(timeout=30) as browser:
        started = await engine.api.post(f"/v1/accounts/{account}/quickbooks/connect")
        flow_id = started.json()["flow_id"]
        opened = await browser.get(started.json()["authorization_url"])
        landed = outcome(
            await browser.get(await approve(engine, realm, query_of(opened.headers["location"])))
        )
    assert landed["quickbooks"] == "connected" and landed["flow"] == flow_id
    assert signed_by_us(engine, landed)
    # The company's name (maybe a person's) is read from the API, never put in a URL that logs and histories keep.
    assert "company_name" not in landed
    # A return typed by anyone (the attack: make the platform disconnect a victim) does not verify.
    forged = {**landed, "account_id": "victim"}
    assert not signed_by_us(engine, forged)
    assert not signed_by_us(engine, {key: value for key, value in landed.items() if key != "flow"})


async def test_a_spent_state_says_nothing_about_its_account(engine: Engine) -> None:
    account = await engine.create_account()
    realm = await engine.emulator.create_company()
    async with httpx.AsyncClient(timeout=30) as browser:
        intuit = await start_connect(engine, account, browser)
        callback_url = await approve(engine, realm, intuit)
        assert outcome(await browser.get(callback_url))["quickbooks"] == "connected"
        again = outcome(await browser.get(callback_url))
    assert again["reason"] == "state_used"
    assert "account_id" not in again and signed_by_us(engine, again)

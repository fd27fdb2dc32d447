"""QboOAuth against the real emulator: authorization URL, code exchange, rotation, grace, errors, revoke."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from qbo.environments import endpoints_for
from qbo.errors import InvalidClient, InvalidGrant, QboOAuthError, QboUnavailable
from qbo.oauth import QboOAuth
from tests.qbo.helpers import (
    REDIRECT_URI,
    Company,
    EmulatorFactory,
    RefreshingTokens,
    connect,
    consent,
    oauth_for,
)
from tests.support import TEST_CLIENT_ID, Emulator, free_port


@pytest.fixture
async def own_emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """An emulator of this test's own, for tests that move its clock."""
    return await emulator_factory("--redirect-uri", REDIRECT_URI)


@pytest.fixture
async def oauth(emulator: Emulator, qbo_http: httpx.AsyncClient) -> QboOAuth:
    return oauth_for(emulator, qbo_http)


async def test_authorization_url_carries_what_intuit_needs(emulator: Emulator, oauth: QboOAuth) -> None:
    url = oauth.authorization_url("csrf-state-123")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{emulator.base_url}/connect/oauth2"
    query = parse_qs(parts.query)
    assert query == {
        "response_type": ["code"],
        "client_id": [TEST_CLIENT_ID],
        "redirect_uri": [REDIRECT_URI],
        "scope": ["com.intuit.quickbooks.accounting"],
        "state": ["csrf-state-123"],
    }
    # The emulator's consent page accepts it (it checks client id and redirect URI).
    assert (await emulator.admin.get(url)).status_code == 200


def test_authorization_url_scopes_are_space_delimited(oauth: QboOAuth) -> None:
    url = oauth.authorization_url("s", scope="com.intuit.quickbooks.accounting openid email")
    assert parse_qs(urlsplit(url).query)["scope"] == ["com.intuit.quickbooks.accounting openid email"]


async def test_code_exchange(emulator: Emulator, oauth: QboOAuth) -> None:
    realm_id = await emulator.create_company()
    before = datetime.now(UTC)
    tokens = await oauth.exchange_code(await consent(emulator, realm_id), realm_id)
    assert tokens.realm_id == realm_id
    assert tokens.access_token and tokens.refresh_token
    assert tokens.expires_in == 3600
    assert tokens.refresh_token_expires_in is not None and tokens.refresh_token_expires_in > 86400
    # Present only because the request asked for it with x-include-refresh-token-hard-expires-in.
    assert tokens.refresh_token_hard_expires_in is not None
    assert tokens.refresh_token_hard_expires_in > tokens.refresh_token_expires_in
    assert before - timedelta(seconds=1) <= tokens.obtained_at <= datetime.now(UTC)
    assert tokens.access_expires_at == tokens.obtained_at + timedelta(hours=1)
    assert tokens.access_token not in repr(tokens)
    entries = (await emulator.admin.get("/__admin/requests")).json()["requests"]
    assert any(entry["grant_type"] == "authorization_code" and entry["status"] == 200 for entry in entries)


async def test_a_code_works_once(emulator: Emulator, oauth: QboOAuth) -> None:
    realm_id = await emulator.create_company()
    code = await consent(emulator, realm_id)
    await oauth.exchange_code(code, realm_id)
    with pytest.raises(InvalidGrant) as caught:
        await oauth.exchange_code(code, realm_id)
    assert caught.value.error == "invalid_grant"
    assert caught.value.status == 400
    assert code not in str(caught.value)


async def test_refresh_rotates_and_the_old_token_still_works(company: Company) -> None:
    first = company.tokens
    second = await company.oauth.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.refresh_token_hard_expires_in is not None
    # Inside Intuit's 24 h grace the superseded refresh token is still good.
    third = await company.oauth.refresh(first.refresh_token)
    assert third.access_token
    client = company.client(tokens=RefreshingTokens(company.oauth, third))
    assert (await client.company_info())["CompanyName"]


async def test_a_superseded_refresh_token_dies_after_24_hours(own_emulator: Emulator) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        company = await connect(own_emulator, http)
        newer = await company.oauth.refresh(company.tokens.refresh_token)
        clock = await own_emulator.admin.post("/__admin/clock", json={"advance_seconds": 24 * 3600 + 60})
        assert clock.status_code == 200
        with pytest.raises(InvalidGrant):
            await company.oauth.refresh(company.tokens.refresh_token)
        assert (await company.oauth.refresh(newer.refresh_token)).access_token


async def test_an_expired_access_token_is_refreshed_by_the_client(own_emulator: Emulator) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        company = await connect(own_emulator, http)
        tokens = RefreshingTokens(company.oauth, company.tokens)
        client = company.client(tokens=tokens)
        assert (await client.company_info())["CompanyName"]
        await own_emulator.admin.post("/__admin/clock", json={"advance_seconds": 3601})
        assert (await client.company_info())["CompanyName"]
        assert tokens.rejected == [company.tokens.access_token]


async def test_disconnecting_in_quickbooks_makes_refresh_an_invalid_grant(company: Company) -> None:
    response = await company.emulator.admin.post(f"/__admin/companies/{company.realm_id}/revoke")
    assert response.status_code == 200
    with pytest.raises(InvalidGrant):
        await company.oauth.refresh(company.tokens.refresh_token)
    # A client whose token was revoked refreshes once, and the refresh's InvalidGrant reaches the caller.
    client = company.client()
    with pytest.raises(InvalidGrant):
        await client.company_info()


async def test_wrong_client_secret_is_invalid_client(emulator: Emulator, qbo_http: httpx.AsyncClient) -> None:
    realm_id = await emulator.create_company()
    wrong = oauth_for(emulator, qbo_http, client_secret="not-the-secret")
    with pytest.raises(InvalidClient) as caught:
        await wrong.exchange_code(await consent(emulator, realm_id), realm_id)
    assert caught.value.status == 401
    assert "not-the-secret" not in str(caught.value)
    assert "not-the-secret" not in repr(wrong)


async def test_revoke(company: Company) -> None:
    await company.oauth.revoke(company.tokens.refresh_token)
    with pytest.raises(InvalidGrant):
        await company.oauth.refresh(company.tokens.refresh_token)
    # Revoking again, or revoking a token Intuit does not know, counts as done.
    await company.oauth.revoke(company.tokens.refresh_token)
    await company.oauth.revoke("AB11" + "0" * 46)


async def test_revoke_with_a_wrong_secret_is_invalid_client(company: Company) -> None:
    wrong = oauth_for(company.emulator, company.http, client_secret="not-the-secret")
    with pytest.raises(InvalidClient):
        await wrong.revoke(company.tokens.refresh_token)
    # Nothing was revoked.
    assert (await company.oauth.refresh(company.tokens.refresh_token)).access_token


async def test_token_endpoint_server_error(company: Company) -> None:
    fault = {"status": 503, "path_contains": "/oauth2/v1/tokens/bearer"}
    assert (await company.emulator.admin.post("/__admin/faults", json=fault)).status_code == 201
    with pytest.raises(QboOAuthError) as caught:
        await company.oauth.refresh(company.tokens.refresh_token)
    assert not isinstance(caught.value, InvalidGrant | InvalidClient)
    assert caught.value.status == 503
    assert caught.value.error == "server_error"


async def test_unreachable_token_endpoint_is_unavailable(qbo_http: httpx.AsyncClient) -> None:
    nobody = QboOAuth(
        client_id=TEST_CLIENT_ID,
        client_secret="secret",
        redirect_uri=REDIRECT_URI,
        endpoints=endpoints_for("emulator", f"http://127.0.0.1:{free_port()}"),
        http=qbo_http,
    )
    with pytest.raises(QboUnavailable) as caught:
        await nobody.refresh("AB11" + "1" * 46)
    assert caught.value.timed_out is False


@pytest.fixture
async def standalone_oauth(emulator: Emulator) -> AsyncIterator[QboOAuth]:
    oauth = oauth_for(emulator, None)
    yield oauth
    await oauth.aclose()


async def test_without_a_shared_http_client_authlib_sends_itself(
    emulator: Emulator, standalone_oauth: QboOAuth
) -> None:
    realm_id = await emulator.create_company()
    tokens = await standalone_oauth.exchange_code(await consent(emulator, realm_id), realm_id)
    rotated = await standalone_oauth.refresh(tokens.refresh_token)
    assert rotated.refresh_token != tokens.refresh_token
    await standalone_oauth.revoke(rotated.refresh_token)


async def test_oauth_logs_never_hold_tokens(company: Company, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        rotated = await company.oauth.refresh(company.tokens.refresh_token)
        await company.oauth.revoke("AB11" + "2" * 46)
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (
        company.tokens.refresh_token,
        rotated.refresh_token,
        rotated.access_token,
        "AB11" + "2" * 46,
    ):
        assert secret not in text

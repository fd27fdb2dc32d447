"""Intuit OAuth 2.0 as the emulator serves it: authorization page, token endpoint, rotation, revocation."""

from __future__ import annotations

import base64
import json
import re
import uuid
from urllib.parse import urlencode

import pytest

from tests.emulator.helpers import (
    ACCOUNTING,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    EmulatorHandle,
    StartEmulator,
    admin_ok,
    authorization_code,
    basic_auth,
    connect,
    exchange,
    query_of,
    refresh,
    token_request,
)

OTHER_REDIRECT_URI = "http://127.0.0.1/other-callback"
DAY = 86_400


@pytest.fixture(scope="module")
async def emu(emulator_factory: StartEmulator) -> EmulatorHandle:
    """An emulator of this module's own: these tests move its clock by days and years."""
    return await emulator_factory("--redirect-uri", REDIRECT_URI, "--redirect-uri", OTHER_REDIRECT_URI)


async def advance(emulator: EmulatorHandle, seconds: float) -> None:
    await admin_ok(emulator, "POST", "/__admin/clock", {"advance_seconds": seconds})


def authorize_url(**overrides: str) -> str:
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": ACCOUNTING,
        "redirect_uri": REDIRECT_URI,
        "state": "csrf-123",
        **overrides,
    }
    return "/connect/oauth2?" + urlencode(params)


# --- the authorization page -------------------------------------------------------------------------------


async def test_authorization_page_lists_existing_companies_and_offers_authorize_and_cancel(
    emu: EmulatorHandle,
) -> None:
    name = f"Listed Co {uuid.uuid4().hex[:6]}"
    realm_id = await emu.create_company(name)

    page = await emu.admin.get(authorize_url())

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert name in page.text and realm_id in page.text
    assert 'value="authorize"' in page.text and 'value="cancel"' in page.text
    assert "Create a new company" in page.text
    assert 'name="state" value="csrf-123"' in page.text


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"client_id": "someone-else"}, "client_id"),
        ({"redirect_uri": "https://evil.example/cb"}, "redirect_uri"),
    ],
)
async def test_authorization_page_refuses_unknown_client_or_redirect_uri_without_redirecting(
    emu: EmulatorHandle, override: dict[str, str], reason: str
) -> None:
    page = await emu.admin.get(authorize_url(**override))

    assert page.status_code == 400
    assert "location" not in page.headers
    assert reason in page.text


async def test_authorizing_on_the_page_redirects_back_with_code_state_and_realm_id(
    emu: EmulatorHandle,
) -> None:
    realm_id = await emu.create_company()
    form = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": ACCOUNTING,
            "state": "csrf-123", "user_email": "owner@example.com", "realm_id": realm_id, "action": "authorize"}  # fmt: skip

    answer = await emu.admin.post("/connect/oauth2", data=form)

    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = query_of(location)
    assert params["state"] == "csrf-123" and params["realmId"] == realm_id
    tokens = await exchange(emu, params["code"])
    assert tokens.status_code == 200


async def test_creating_a_new_company_on_the_page_authorizes_that_company(emu: EmulatorHandle) -> None:
    name = f"Made On The Page {uuid.uuid4().hex[:6]}"
    form = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": ACCOUNTING,
            "state": "s", "realm_id": "new", "company_name": name, "action": "authorize"}  # fmt: skip

    answer = await emu.admin.post("/connect/oauth2", data=form)

    realm_id = query_of(answer.headers["location"])["realmId"]
    assert re.fullmatch(r"\d{16}", realm_id)
    assert (await emu.company(realm_id))["name"] == name


async def test_cancel_redirects_back_with_access_denied_and_the_state(emu: EmulatorHandle) -> None:
    form = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": ACCOUNTING,
            "state": "keep-me", "realm_id": "new", "action": "cancel"}  # fmt: skip

    answer = await emu.admin.post("/connect/oauth2", data=form)

    assert answer.status_code == 302
    assert query_of(answer.headers["location"]) == {"error": "access_denied", "state": "keep-me"}


async def test_unknown_scope_is_reported_to_the_registered_redirect_uri(emu: EmulatorHandle) -> None:
    answer = await emu.admin.get(authorize_url(scope="com.intuit.quickbooks.everything"))

    assert answer.status_code == 302
    assert query_of(answer.headers["location"]) == {"error": "invalid_scope", "state": "csrf-123"}


async def test_admin_authorize_refuses_unregistered_redirect_uri(emu: EmulatorHandle) -> None:
    realm_id = await emu.create_company()
    answer = await emu.admin.post(
        f"/__admin/companies/{realm_id}/authorize",
        json={"client_id": CLIENT_ID, "redirect_uri": "https://evil.example/cb", "state": "s"},
    )
    assert answer.status_code == 400


# --- code exchange ----------------------------------------------------------------------------------------


async def test_code_exchange_returns_intuits_token_response(emu: EmulatorHandle) -> None:
    realm_id = await emu.create_company()
    code = await authorization_code(emu, realm_id)

    answer = await exchange(emu, code)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", answer.headers["intuit_tid"])
    tokens = answer.json()
    assert set(tokens) == {
        "token_type",
        "access_token",
        "expires_in",
        "refresh_token",
        "x_refresh_token_expires_in",
    }
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["x_refresh_token_expires_in"] == 100 * DAY
    header, key, iv, ciphertext, tag = tokens["access_token"].split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"enc": "A128CBC-HS256", "alg": "dir"}
    assert key == "" and iv and ciphertext and tag
    assert len(tokens["access_token"]) <= 4096
    assert tokens["refresh_token"].startswith("AB11") and len(tokens["refresh_token"]) <= 512


async def test_authorization_code_is_single_use_and_a_replay_revokes_what_it_issued(
    emu: EmulatorHandle,
) -> None:
    realm_id = await emu.create_company()
    code = await authorization_code(emu, realm_id)
    first = (await exchange(emu, code)).json()

    second = await exchange(emu, code)

    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert (await refresh(emu, first["refresh_token"])).json()["error"] == "invalid_grant"


async def test_authorization_code_expires_after_ten_minutes(emu: EmulatorHandle) -> None:
    realm_id = await emu.create_company()
    code = await authorization_code(emu, realm_id)

    await advance(emu, 601)
    answer = await exchange(emu, code)

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


async def test_code_exchange_needs_the_redirect_uri_used_for_the_authorization(emu: EmulatorHandle) -> None:
    realm_id = await emu.create_company()
    code = await authorization_code(emu, realm_id)

    answer = await exchange(emu, code, redirect_uri=OTHER_REDIRECT_URI)

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


async def test_client_secret_post_authentication_is_accepted(emu: EmulatorHandle) -> None:
    realm_id = await emu.create_company()
    code = await authorization_code(emu, realm_id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}  # fmt: skip

    answer = await emu.admin.post("/oauth2/v1/tokens/bearer", data=form)

    assert answer.status_code == 200


@pytest.mark.parametrize(
    "auth", [basic_auth(CLIENT_ID, "wrong-secret"), basic_auth("other-app", CLIENT_SECRET)]
)
async def test_wrong_client_credentials_are_invalid_client_with_401(emu: EmulatorHandle, auth: str) -> None:
    answer = await token_request(emu, {"grant_type": "refresh_token", "refresh_token": "AB11x"}, auth=auth)

    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_client"}


async def test_missing_parameters_and_unknown_grant_types_use_standard_oauth_errors(
    emu: EmulatorHandle,
) -> None:
    missing_code = await token_request(
        emu, {"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI}
    )
    missing_grant = await token_request(emu, {"code": "x"})
    unknown_grant = await token_request(emu, {"grant_type": "password", "username": "u"})

    assert (missing_code.status_code, missing_code.json()["error"]) == (400, "invalid_request")
    assert (missing_grant.status_code, missing_grant.json()["error"]) == (400, "invalid_request")
    assert (unknown_grant.status_code, unknown_grant.json()["error"]) == (400, "unsupported_grant_type")
    assert set(unknown_grant.json()) == {"error", "error_description"}
    assert "intuit_tid" in unknown_grant.headers


# --- refresh and rotation ---------------------------------------------------------------------------------


async def test_refresh_rotates_the_refresh_token_and_issues_a_working_access_token(
    emu: EmulatorHandle,
) -> None:
    connection = await connect(emu)

    answer = await refresh(emu, connection.refresh_token)

    assert answer.status_code == 200
    tokens = answer.json()
    assert tokens["refresh_token"] != connection.refresh_token
    assert tokens["access_token"] != connection.access_token
    assert tokens["expires_in"] == 3600
    read = await connection.get(f"companyinfo/{connection.realm_id}", token=tokens["access_token"])
    assert read.status_code == 200


async def test_superseded_refresh_token_keeps_working_for_24_hours_then_fails(emu: EmulatorHandle) -> None:
    connection = await connect(emu)
    second = (await refresh(emu, connection.refresh_token)).json()["refresh_token"]

    await advance(emu, 23 * 3600)
    still_ok = await refresh(emu, connection.refresh_token)
    await advance(emu, 2 * 3600)
    too_late = await refresh(emu, connection.refresh_token)

    assert still_ok.status_code == 200
    assert too_late.status_code == 400 and too_late.json()["error"] == "invalid_grant"
    # The token superseded only 2 hours ago is still inside its own grace window.
    assert (await refresh(emu, second)).status_code == 200


async def test_refresh_token_expiry_rolls_forward_and_lapses_after_100_idle_days(emu: EmulatorHandle) -> None:
    connection = await connect(emu)

    await advance(emu, 60 * DAY)
    renewed = (await refresh(emu, connection.refresh_token)).json()
    await advance(emu, 100 * DAY + 1)
    lapsed = await refresh(emu, renewed["refresh_token"])

    assert renewed["x_refresh_token_expires_in"] == 100 * DAY
    assert lapsed.status_code == 400 and lapsed.json()["error"] == "invalid_grant"


async def test_hard_expiry_is_reported_only_when_asked_and_ends_refreshing_after_five_years(
    emu: EmulatorHandle,
) -> None:
    realm_id = await emu.create_company()
    first = (await exchange(emu, await authorization_code(emu, realm_id), hard_expiry=True)).json()
    plain = (await refresh(emu, first["refresh_token"])).json()
    assert "x_refresh_token_hard_expires_in" not in plain
    hard = first["x_refresh_token_hard_expires_in"]
    assert 5 * 365 * DAY <= hard <= 5 * 366 * DAY

    token = plain["refresh_token"]
    remaining = hard
    while remaining > 0:
        await advance(emu, 90 * DAY)
        answer = await refresh(emu, token, hard_expiry=True)
        if answer.status_code != 200:
            break
        body = answer.json()
        assert body["x_refresh_token_hard_expires_in"] < remaining
        assert body["x_refresh_token_expires_in"] <= body["x_refresh_token_hard_expires_in"]
        remaining, token = body["x_refresh_token_hard_expires_in"], body["refresh_token"]

    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert remaining < 90 * DAY  # it ended at the five-year mark, not earlier


# --- the API gateway --------------------------------------------------------------------------------------


async def test_expired_access_token_gets_the_gateways_lower_case_401(emu: EmulatorHandle) -> None:
    connection = await connect(emu)

    await advance(emu, 3601)
    answer = await connection.get(f"companyinfo/{connection.realm_id}")

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="Intuit", error="invalid_token"'
    body = answer.json()
    assert body["fault"]["error"][0]["code"] == "3200"
    assert (
        body["fault"]["error"][0]["message"]
        == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    )
    assert body["fault"]["type"] == "AUTHENTICATION"
    assert isinstance(body["time"], int)
    assert "Fault" not in body


async def test_token_of_one_company_used_on_another_gets_403_authorization_fault(emu: EmulatorHandle) -> None:
    first = await connect(emu)
    second = await connect(emu)

    answer = await emu.admin.get(f"/v3/company/{second.realm_id}/query?query=select%20*%20from%20Customer",
                                 headers=first.headers())  # fmt: skip

    assert answer.status_code == 403
    error = answer.json()["Fault"]["Error"][0]
    assert error["code"] == "3100"
    assert answer.json()["Fault"]["type"] == "AuthorizationFault"


# --- revocation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
async def test_revoking_any_token_ends_the_whole_authorization(emu: EmulatorHandle, which: str) -> None:
    connection = await connect(emu)
    extra = (await refresh(emu, connection.refresh_token)).json()
    token = connection.refresh_token if which == "refresh_token" else connection.access_token

    answer = await emu.admin.post(
        "/v2/oauth2/tokens/revoke", json={"token": token}, headers={"Authorization": basic_auth()}
    )

    assert answer.status_code == 200
    assert (await connection.get(f"companyinfo/{connection.realm_id}")).status_code == 401
    assert (
        await connection.get(f"companyinfo/{connection.realm_id}", token=extra["access_token"])
    ).status_code == 401
    assert (await refresh(emu, extra["refresh_token"])).json()["error"] == "invalid_grant"


async def test_revoke_refuses_unknown_tokens_and_bad_client_credentials(emu: EmulatorHandle) -> None:
    connection = await connect(emu)

    unknown = await emu.admin.post(
        "/v2/oauth2/tokens/revoke", json={"token": "AB11nothing"}, headers={"Authorization": basic_auth()}
    )
    wrong_secret = await emu.admin.post(
        "/v2/oauth2/tokens/revoke",
        json={"token": connection.refresh_token},
        headers={"Authorization": basic_auth(CLIENT_ID, "nope")},
    )

    assert unknown.status_code == 400
    assert wrong_secret.status_code == 401
    assert (await connection.get(f"companyinfo/{connection.realm_id}")).status_code == 200


async def test_disconnecting_inside_quickbooks_revokes_every_authorization_of_the_company(
    emu: EmulatorHandle,
) -> None:
    connection = await connect(emu)
    again = await exchange(emu, await authorization_code(emu, connection.realm_id))

    result = await admin_ok(emu, "POST", f"/__admin/companies/{connection.realm_id}/revoke")

    assert result == {"revoked_authorizations": 2}
    assert (await connection.get(f"companyinfo/{connection.realm_id}")).status_code == 401
    assert (await refresh(emu, again.json()["refresh_token"])).json()["error"] == "invalid_grant"


async def test_company_dump_describes_authorizations_without_token_values(emu: EmulatorHandle) -> None:
    connection = await connect(emu)
    await refresh(emu, connection.refresh_token)

    dump = await emu.company(connection.realm_id)

    (grant,) = dump["authorizations"]
    assert grant["revoked"] is False
    assert grant["access_tokens"] == 2 and grant["active_access_tokens"] == 2
    assert grant["refresh_tokens"] == 2 and grant["active_refresh_tokens"] == 2
    assert connection.refresh_token not in json.dumps(dump)
    assert connection.access_token not in json.dumps(dump)

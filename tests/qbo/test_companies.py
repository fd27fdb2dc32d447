"""Verifying a callback's company against the emulator: only QuickBooks refusing the tokens means "not that
company"; any other answer is "could not verify"."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from qbo.companies import CompanyNotVerified, CompanyVerifier, VerificationUnavailable, VerifiedCompany
from qbo.limits import RealmLimiter
from tests.qbo.helpers import Company, connect
from tests.support import Emulator


def verifier(company: Company) -> CompanyVerifier:
    return CompanyVerifier(
        api_base_url=company.emulator.base_url,
        http=company.http,
        limiter=RealmLimiter(),
        minor_version=75,
        timeout=5.0,
    )


async def test_the_company_the_tokens_open_is_verified(company: Company) -> None:
    found = await verifier(company).verify(company.realm_id, company.tokens.access_token)
    assert found.realm_id == company.realm_id
    assert found == VerifiedCompany(realm_id=company.realm_id, name=found.name) and found.name


async def test_another_companys_realm_is_not_verified(
    company: Company, emulator: Emulator, qbo_http: httpx.AsyncClient
) -> None:
    # The tokens of one company, and the realm id of another (edited into the callback): Intuit answers 403 (3100).
    other = await connect(emulator, qbo_http)
    with pytest.raises(CompanyNotVerified):
        await verifier(company).verify(other.realm_id, company.tokens.access_token)


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 401},
        {"status": 403},
        # The faults that mean "not these tokens", whatever status carries them.
        {"status": 400, "fault_code": "3100", "fault_type": "AUTHORIZATION", "message": "ApplicationAuthorizationFailed"},
    ],
    ids=["401", "403-3100", "400-3100"],
)  # fmt: skip
async def test_quickbooks_refusing_the_tokens_is_not_verified(
    company: Company, fault: dict[str, Any]
) -> None:
    await company.inject(kind="http", count=2, path_contains="companyinfo", **fault)
    with pytest.raises(CompanyNotVerified):
        await verifier(company).verify(company.realm_id, "not-a-token-of-this-company")


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 400, "fault_code": "2010", "message": "Request has invalid or unsupported property"},
        {"status": 400, "fault_code": "4000", "message": "Unsupported minorversion"},
        {"status": 404},
        {"status": 500},
        {"status": 503},
    ],
    ids=["400-validation", "400-minorversion", "404", "500", "503"],
)  # fmt: skip
async def test_any_other_answer_is_could_not_verify(company: Company, fault: dict[str, Any]) -> None:
    # Counting these as "not that company" revoked the tokens at once, which disconnects the app from the company
    # for every other account of ours on it; "could not verify" first asks whether another account holds it.
    await company.inject(kind="http", count=2, path_contains="companyinfo", **fault)
    with pytest.raises(VerificationUnavailable) as excinfo:
        await verifier(company).verify(company.realm_id, company.tokens.access_token)
    assert "Request has invalid" not in str(excinfo.value)  # names the kind of answer, not Intuit's words

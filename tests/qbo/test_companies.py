"""Verifying a callback's company: only QuickBooks refusing the tokens means "not that company"."""

from __future__ import annotations

import httpx
import pytest

from qbo.companies import CompanyNotVerified, CompanyVerifier, VerificationUnavailable, VerifiedCompany
from qbo.limits import RealmLimiter
from tests.qbo.test_errors import fault_body

REALM = "9130357992223456"
HTML = {"content-type": "text/html"}


async def verify(response: httpx.Response) -> VerifiedCompany:
    """What the callback learns when CompanyInfo answers `response`."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        verifier = CompanyVerifier(
            api_base_url="https://quickbooks.test",
            http=http,
            limiter=RealmLimiter(),
            minor_version=75,
            timeout=5.0,
        )
        try:
            return await verifier.verify(REALM, "new-access-token")
        finally:
            assert [request.url.path for request in seen] == [f"/v3/company/{REALM}/companyinfo/{REALM}"]


async def test_the_company_the_tokens_open_is_verified() -> None:
    company = await verify(httpx.Response(200, json={"CompanyInfo": {"CompanyName": " Lovelace Ltd "}}))
    assert company == VerifiedCompany(realm_id=REALM, name="Lovelace Ltd")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(401, content=fault_body("3200", "message=AuthenticationFailed", fault_type="AUTHENTICATION")),
        httpx.Response(403, content=fault_body("3100", "message=ApplicationAuthorizationFailed", fault_type="AUTHORIZATION")),
        httpx.Response(403, content=b""),
        # The faults that mean "not these tokens", whatever status carries them.
        httpx.Response(400, content=fault_body("3100", "message=ApplicationAuthorizationFailed", fault_type="AUTHORIZATION")),
        httpx.Response(400, content=fault_body("3200", "message=AuthenticationFailed", fault_type="AUTHENTICATION")),
    ],
    ids=["401", "403-3100", "403-bare", "400-3100", "400-3200"],
)  # fmt: skip
async def test_quickbooks_refusing_the_tokens_for_that_company_is_not_verified(
    response: httpx.Response,
) -> None:
    with pytest.raises(CompanyNotVerified):
        await verify(response)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, content=fault_body("2010", "Request has invalid or unsupported property")),
        httpx.Response(400, content=fault_body("4000", "Unsupported minorversion", fault_type="ValidationFault")),
        httpx.Response(400, content=b"Bad Request"),
        httpx.Response(404, headers=HTML, content=b"<html><body>Not Found</body></html>"),
        httpx.Response(405, content=b""),
        httpx.Response(500, content=fault_body("10000", "An application error has occurred", fault_type="SystemFault")),
        httpx.Response(503, headers=HTML, content=b"<html>Service Unavailable</html>"),
        httpx.Response(200, json={"QueryResponse": {}}),  # an answer that is no CompanyInfo
    ],
    ids=["400-validation", "400-minorversion", "400-bare", "404", "405", "500", "503", "200-not-companyinfo"],
)  # fmt: skip
async def test_any_other_answer_is_could_not_verify(response: httpx.Response) -> None:
    # Counting these as "not that company" revoked the tokens at once, which disconnects the app from the company
    # for every other account of ours on it; "could not verify" first asks whether another account holds it.
    with pytest.raises(VerificationUnavailable) as excinfo:
        await verify(response)
    assert "Request has invalid" not in str(excinfo.value)  # names the kind of answer, not Intuit's words

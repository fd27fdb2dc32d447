"""The cross-account "needs attention" list for the platform's support staff, and its bulk retry."""

from __future__ import annotations

from typing import Any

from models.domain import ConnectionStatus
from models.tables import QuickBooksConnection, utcnow
from tests.e2e.test_payments_and_webhooks import fault
from tests.engine import Engine


async def failed_invoice(engine: Engine) -> str:
    account = await engine.create_account()
    await engine.connect(account)
    await fault(engine, count=1, method="POST", path_contains="/invoice", status=400, fault_code="6000",
                fault_type="ValidationFault", message="A business validation error has occurred")  # fmt: skip
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for_invoice(account, "inv-1", "failed")
    return account


async def attention(engine: Engine, **params: Any) -> list[dict[str, Any]]:
    listed = await engine.api.get("/v1/attention", params=params)
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def test_support_sees_what_needs_attention_across_accounts_and_retries_in_bulk(engine: Engine) -> None:
    first, second = await failed_invoice(engine), await failed_invoice(engine)
    await engine.send_invoice(first, "inv-ok", number="INV-OK")
    await engine.wait_for_invoice(first, "inv-ok", "synced")
    lapsed = await engine.create_account()
    async with engine.sessions() as session:
        session.add(
            QuickBooksConnection(
                account_id=lapsed,
                realm_id="9130000000000999",
                status=ConnectionStatus.EXPIRED.value,
                status_reason="QuickBooks refused the authorization; reconnect.",
                updated_at=utcnow(),
            )
        )
        await session.commit()

    for account in (first, second):
        [item] = await attention(engine, account_id=account)
        assert (item["kind"], item["invoice_id"], item["action"]) == ("sync_failed", "inv-1", "retry")
        assert (
            item["reason"].startswith("QuickBooks rejected the invoice") and item["number"] and item["since"]
        )
    [expired] = await attention(engine, account_id=lapsed)
    assert (expired["kind"], expired["action"], expired["invoice_id"]) == (
        "connection_expired",
        "reconnect",
        None,
    )
    assert expired["reason"] == "QuickBooks refused the authorization; reconnect."
    # Filtered by kind, and paged.
    kinds = {item["kind"] for item in await attention(engine, kind="connection_expired", limit=200)}
    assert kinds == {"connection_expired"}
    page = (await engine.api.get("/v1/attention", params={"kind": "sync_failed", "limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_offset"] == 1

    # Support staff only: an account's own token is refused.
    token = (await engine.api.put(f"/v1/accounts/{first}", json={"plan": "premium"})).json()["api_token"]
    own = await engine.api.get("/v1/attention", headers={"Authorization": f"Bearer {token}"})
    assert own.status_code == 403 and own.json()["error"]["code"] == "forbidden"

    retried = await engine.api.post(
        "/v1/attention/retry",
        json={
            "items": [
                {"account_id": first, "invoice_id": "inv-1"},
                {"account_id": second, "invoice_id": "inv-1"},
                {"account_id": first, "invoice_id": "inv-ok"},
                {"account_id": "nobody-here", "invoice_id": "inv-1"},
            ]
        },
    )
    assert retried.status_code == 200, retried.text
    report = retried.json()
    outcomes = [
        (r["account_id"], r["invoice_id"], r["outcome"], (r["error"] or {}).get("code"))
        for r in report["results"]
    ]
    assert outcomes == [
        (first, "inv-1", "retried", None),
        (second, "inv-1", "retried", None),
        (first, "inv-ok", "refused", "not_retryable"),
        ("nobody-here", "inv-1", "refused", "account_not_found"),
    ]
    assert (report["retried"], report["refused"]) == (2, 2)
    for account in (first, second):
        await engine.wait_for_invoice(account, "inv-1", "synced")
        assert await attention(engine, account_id=account) == []


async def test_bulk_retry_by_filter_and_its_refusals(engine: Engine) -> None:
    account = await failed_invoice(engine)
    by_filter = await engine.api.post(
        "/v1/attention/retry", json={"kind": "sync_failed", "account_id": account}
    )
    assert by_filter.status_code == 200, by_filter.text
    assert [(r["invoice_id"], r["outcome"]) for r in by_filter.json()["results"]] == [("inv-1", "retried")]
    await engine.wait_for_invoice(account, "inv-1", "synced")
    for body in ({}, {"items": [], "kind": "sync_failed"}, {"kind": "connection_expired"}):
        refused = await engine.api.post("/v1/attention/retry", json=body)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"

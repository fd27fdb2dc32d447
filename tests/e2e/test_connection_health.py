"""Connection health: refresh over days, one refresh for many 401s, lost refresh answers, expiry warnings,
revocation, the daily check, missed webhooks, plans, and a long life across worker restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from models.domain import InvoiceStatus
from models.tables import InvoiceSync, utcnow
from tests.e2e.test_payments_and_webhooks import fault, pay
from tests.engine import Engine, running_engine
from tests.support import Emulator, EmulatorFactory
from workflows.ids import connection_workflow_id, realm_events_workflow_id
from workflows.messages import ConnectionInfo, RefreshRequest, RefreshResult

TOKEN_PATH = "/oauth2/v1/tokens/bearer"
YEAR = timedelta(days=365)


async def token_refreshes(engine: Engine, since_seq: int = 0) -> list[dict[str, Any]]:
    return [
        request
        for request in await engine.qbo_requests(since_seq=since_seq)
        if request["path"] == TOKEN_PATH and request.get("grant_type") == "refresh_token"
    ]


async def calls_to(engine: Engine, realm: str, fragment: str, since_seq: int = 0) -> int:
    return sum(
        1 for request in await engine.qbo_requests(realm, since_seq=since_seq) if fragment in request["path"]
    )


async def last_seq(engine: Engine) -> int:
    return max((request["seq"] for request in await engine.qbo_requests()), default=0)


def connection(engine: Engine, account_id: str) -> WorkflowHandle[Any, Any]:
    return engine.temporal.get_workflow_handle(connection_workflow_id(account_id))


async def notifications(engine: Engine, account_id: str) -> list[dict[str, Any]]:
    response = await engine.api.get(f"/v1/accounts/{account_id}/notifications")
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["notifications"]
    return found


async def advance_intuit_clock(engine: Engine, seconds: float) -> None:
    (await engine.emulator.admin.post("/__admin/clock", json={"advance_seconds": seconds})).raise_for_status()


@pytest.fixture
async def own_emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """An emulator of the test's own: these tests move Intuit's clock, which would disturb the others."""
    return await emulator_factory()


@pytest.fixture
async def clock_engine(
    dev_env: WorkflowEnvironment, migrated_database: str, own_emulator: Emulator, task_queue: str
) -> AsyncIterator[Engine]:
    async with running_engine(
        env=dev_env, database_url=migrated_database, emulator=own_emulator, task_queue=task_queue
    ) as engine:
        yield engine


# --- Refresh -------------------------------------------------------------------------------------------------


async def test_refresh_over_days_happens_once_per_token_lifetime_and_the_workflow_continues_as_new(
    skipping_engine: Engine,
) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    # Counted from once the check on connect has read the company.
    await engine.wait_for(
        lambda: engine.connection_status(account), lambda body: body.get("company") is not None
    )
    handle = connection(engine, account)
    first_run = (await handle.describe()).run_id
    seen = await last_seq(engine)

    await engine.skip_time(timedelta(days=5))

    refreshes = await handle.query("refresh_count", result_type=int)
    # Access tokens live an hour and are refreshed 5 minutes early: 5 days hold 130 token lifetimes,
    # and Intuit saw exactly one refresh for each.
    assert refreshes == 130
    assert len(await token_refreshes(engine, seen)) == 130
    # The daily check (its CompanyInfo also proves the connection works), and the sweep every 15 minutes.
    assert await calls_to(engine, realm, "/companyinfo/", seen) == 5
    assert await calls_to(engine, realm, "/cdc", seen) == 5 * 24 * 4
    assert (await engine.connection_status(account))["status"] == "connected"
    # Its history was kept small by continuing as new; nothing was lost on the way.
    assert (await handle.describe()).run_id != first_run


async def test_a_worker_restart_between_refreshes_changes_nothing(
    time_skipping_env: WorkflowEnvironment, migrated_database: str, emulator: Emulator, task_queue: str
) -> None:
    async with running_engine(
        env=time_skipping_env,
        database_url=migrated_database,
        emulator=emulator,
        task_queue=task_queue,
        sticky_workers=False,
    ) as engine:
        account = await engine.create_account()
        await engine.connect(account)
        seen = await last_seq(engine)
        await engine.skip_time(timedelta(hours=3))
        await engine.stop_workers()
        engine.start_workers(sticky=False)
        await engine.skip_time(timedelta(hours=3))
        await engine.stop_workers()
        engine.start_workers(sticky=False)
        await engine.skip_time(timedelta(hours=3))
        # 9 hours hold 9 token lifetimes of 55 minutes... plus the part of a tenth: 9 refreshes, no more.
        assert len(await token_refreshes(engine, seen)) == 9
        assert await connection(engine, account).query("refresh_count", result_type=int) == 9
        await engine.send_invoice(account, "inv-1")
        await engine.wait_for(
            lambda: engine.invoice(account, "inv-1"), lambda b: b["status"] == "synced", skip_time=True
        )


async def test_twenty_concurrent_401s_cause_one_refresh(clock_engine: Engine) -> None:
    engine = clock_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-0", number="N-0")
    await engine.wait_for_invoice(account, "inv-0", "synced")
    # Every access token Intuit issued is now past its hour; the refresh tokens still work.
    await advance_intuit_clock(engine, 3700)
    seen = await last_seq(engine)
    # Intuit answers the refresh slowly, so the other syncs meet the expired token while it is under way.
    await fault(engine, count=1, method="POST", path_contains=TOKEN_PATH, status=None, latency_ms=2000)

    await asyncio.gather(*(engine.send_invoice(account, f"inv-{n}", number=f"N-{n}") for n in range(1, 21)))
    for n in range(1, 21):
        await engine.wait_for_invoice(account, f"inv-{n}", "synced", timeout=60)

    unauthorized = [r for r in await engine.qbo_requests(realm, since_seq=seen) if r["status"] == 401]
    assert len(unauthorized) >= 5  # many calls really hit the expired token at once
    assert len(await token_refreshes(engine, seen)) == 1
    assert len(await engine.qbo_invoices(realm)) == 21


async def test_a_lost_refresh_answer_is_survived_with_the_previous_refresh_token(
    clock_engine: Engine,
) -> None:
    engine = clock_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await advance_intuit_clock(engine, 3700)
    seen = await last_seq(engine)
    # Intuit rotates the tokens, but its answer never arrives.
    await fault(engine, count=1, method="POST", path_contains=TOKEN_PATH, status=502, apply="after")

    await engine.send_invoice(account, "inv-1")
    await engine.wait_for_invoice(account, "inv-1", "synced", timeout=60)
    refreshes = await token_refreshes(engine, seen)
    assert [r["status"] for r in refreshes] == [502, 200]
    assert (await engine.connection_status(account))["status"] == "connected"
    assert len(await engine.qbo_invoices(realm)) == 1


# --- Expiry and revocation -------------------------------------------------------------------------------


async def test_the_connection_turns_expiring_ahead_of_the_hard_expiry_and_a_reconnect_clears_it(
    clock_engine: Engine,
) -> None:
    engine = clock_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    handle = connection(engine, account)
    # Five years after the authorization, Intuit stops refreshing. Walk the clock there, refreshing on the way
    # as the hourly refresh would (a refresh token unused for 100 days lapses).
    version = (await handle.query("status", result_type=ConnectionInfo)).token_version
    walked = timedelta(0)
    while walked < 5 * YEAR - timedelta(days=20):
        step = min(timedelta(days=90), 5 * YEAR - timedelta(days=20) - walked)
        await advance_intuit_clock(engine, step.total_seconds())
        walked += step
        result = await handle.execute_update(
            "refresh_access_token", RefreshRequest(seen_version=version), result_type=RefreshResult
        )
        version = result.token_version
    assert (await engine.connection_status(account))["status"] == "connected"

    # Ten more days, and the next refresh learns the authorization ends in under the 14-day lead.
    await advance_intuit_clock(engine, timedelta(days=10).total_seconds())
    await handle.execute_update(
        "refresh_access_token", RefreshRequest(seen_version=version), result_type=RefreshResult
    )
    expiring = await engine.wait_for(
        lambda: engine.connection_status(account), lambda s: s["status"] == "expiring"
    )
    assert expiring["action"] == "reconnect"
    assert expiring["expires_at"] is not None
    assert "ends in 9 days" in expiring["reason"] or "ends in 10 days" in expiring["reason"]
    [warning] = [n for n in await notifications(engine, account) if n["kind"] == "connection_expiring"]
    assert warning["action"] == "reconnect"

    # Still usable while amber.
    await engine.send_invoice(account, "inv-1")
    await engine.wait_for_invoice(account, "inv-1", "synced", timeout=60)

    await engine.authorize(account, realm)
    await engine.wait_for(lambda: engine.connection_status(account), lambda s: s["status"] == "connected")
    assert [n for n in await notifications(engine, account) if n["kind"] == "connection_expiring"] == []


async def test_revocation_at_intuit_expires_the_connection_pauses_sends_and_a_reconnect_syncs_each_once(
    engine: Engine,
) -> None:
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-1", number="N-1")
    await engine.wait_for_invoice(account, "inv-1", "synced")

    (await engine.emulator.admin.post(f"/__admin/companies/{realm}/revoke")).raise_for_status()
    await engine.send_invoice(account, "inv-2", number="N-2")
    paused = await engine.wait_for_invoice(account, "inv-2", "paused")
    assert "reconnect" in paused["reason"]
    status = await engine.wait_for(
        lambda: engine.connection_status(account), lambda s: s["status"] == "expired"
    )
    assert status["action"] == "reconnect"
    [expired] = [n for n in await notifications(engine, account) if n["kind"] == "connection_expired"]
    assert expired["action"] == "reconnect"

    # Sent while expired: paused at once, no QuickBooks call, no retry spent.
    for n in (3, 4, 5):
        response = await engine.send_invoice(account, f"inv-{n}", number=f"N-{n}")
        assert response.json()["invoice"]["status"] == "paused"
    for n in (3, 4, 5):
        await engine.wait_for_invoice(account, f"inv-{n}", "paused")

    await engine.authorize(account, realm)
    for n in (2, 3, 4, 5):
        await engine.wait_for_invoice(account, f"inv-{n}", "synced", timeout=60)
    numbers = sorted(invoice["DocNumber"] for invoice in await engine.qbo_invoices(realm))
    assert numbers == ["N-1", "N-2", "N-3", "N-4", "N-5"]
    assert [n for n in await notifications(engine, account) if n["kind"] == "connection_expired"] == []
    for n in (2, 3, 4, 5):
        assert (await engine.invoice(account, f"inv-{n}"))["notification"] is None


async def test_an_idle_connection_notices_a_revocation_at_intuit(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    (await engine.emulator.admin.post(f"/__admin/companies/{realm}/revoke")).raise_for_status()
    await engine.skip_time(timedelta(hours=2))
    status = await engine.connection_status(account)
    assert status["status"] == "expired"
    assert [n["kind"] for n in await notifications(engine, account)] == ["connection_expired"]


# --- Missed webhooks ----------------------------------------------------------------------------------------


async def test_a_missed_webhook_is_caught_by_the_sweep(skipping_engine: Engine) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    await fault(engine, kind="webhook_drop", count=10)
    await pay(engine, realm, synced["quickbooks"]["invoice_id"], "225.50")
    # Give the webhooks Intuit never sent time to have arrived, on Intuit's clock and ours.
    await advance_intuit_clock(engine, 300)
    await engine.skip_time(timedelta(minutes=30), step=timedelta(minutes=5))

    paid = await engine.wait_for_invoice(account, "inv-1", "paid", timeout=30)
    assert paid["balance_cents"] == 0
    assert "Payment confirmed via QuickBooks." in await engine.timeline(account, "inv-1")
    status = await engine.connection_status(account)
    assert status["missed_changes_caught"] == 1
    assert status["last_sweep_at"] is not None
    assert await connection(engine, account).query("caught_by_sweeps", result_type=int) == 1


async def test_a_payment_made_before_the_engine_recorded_the_invoice_is_caught_by_a_later_sweep(
    skipping_engine: Engine,
) -> None:
    # The create's answer reached the engine, but recording it came late (a worker killed, the database away):
    # meanwhile the user paid the invoice in QuickBooks, and its webhook found no invoice here with that id. By the
    # time the engine records it, the sweeps' window has moved past the payment.
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    qbo_id = synced["quickbooks"]["invoice_id"]
    async with engine.sessions() as session:
        row = await session.get(InvoiceSync, (account, "inv-1"))
        assert row is not None
        row.qbo_invoice_id, row.status, row.synced_at = None, InvoiceStatus.SYNCING.value, None
        session.add(row)
        await session.commit()
    await fault(engine, kind="webhook_drop", count=10)  # what the webhook brought led nowhere
    await pay(engine, realm, qbo_id, "225.50")
    # Sweeps pass the payment: QuickBooks' clock (whose time the watermark is) moves on too.
    await advance_intuit_clock(engine, 900)
    await engine.skip_time(timedelta(minutes=40), step=timedelta(minutes=5))
    async with engine.sessions() as session:
        row = await session.get(InvoiceSync, (account, "inv-1"))
        assert row is not None
        row.qbo_invoice_id, row.status, row.synced_at = qbo_id, InvoiceStatus.SYNCED.value, utcnow()
        session.add(row)
        await session.commit()

    await engine.skip_time(timedelta(minutes=20), step=timedelta(minutes=5))

    paid = await engine.wait_for_invoice(account, "inv-1", "paid", timeout=30)
    assert paid["balance_cents"] == 0


async def test_the_events_workflow_completes_when_idle_and_starts_again_on_the_next_event(
    skipping_engine: Engine,
) -> None:
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    await engine.send_invoice(account, "inv-1")
    synced = await engine.wait_for_invoice(account, "inv-1", "synced")
    await pay(engine, realm, synced["quickbooks"]["invoice_id"], "100.00")
    await engine.wait_for_invoice(account, "inv-1", "partially_paid")
    await engine.skip_time(timedelta(minutes=20), step=timedelta(minutes=5))
    handle = engine.temporal.get_workflow_handle(realm_events_workflow_id(realm))
    described = await handle.describe()
    assert described.status is not None and described.status.name == "COMPLETED"
    await pay(engine, realm, synced["quickbooks"]["invoice_id"], "125.50")
    await engine.wait_for_invoice(account, "inv-1", "paid")


# --- Plans ------------------------------------------------------------------------------------------------------


async def test_a_downgrade_pauses_syncing_and_an_upgrade_resumes_it(engine: Engine) -> None:
    account = await engine.create_account(plan="pro", addon=True)
    realm = await engine.connect(account)

    (
        await engine.api.put(f"/v1/accounts/{account}", json={"plan": "pro", "quickbooks_addon": False})
    ).raise_for_status()
    found = await engine.wait_for(
        lambda: notifications(engine, account), lambda found: any(n["kind"] == "plan_paused" for n in found)
    )
    [paused_note] = [n for n in found if n["kind"] == "plan_paused"]
    assert paused_note["action"] == "upgrade"
    status = await engine.connection_status(account)
    assert status["status"] == "connected" and status["action"] == "upgrade"
    assert "add-on" in status["sync_paused_reason"]

    response = await engine.send_invoice(account, "inv-1")
    assert response.json()["invoice"]["status"] == "paused"
    await engine.wait_for_invoice(account, "inv-1", "paused")
    assert await engine.qbo_invoices(realm) == []

    (await engine.api.put(f"/v1/accounts/{account}", json={"plan": "premium"})).raise_for_status()
    await engine.wait_for_invoice(account, "inv-1", "synced", timeout=60)
    assert [n for n in await notifications(engine, account) if n["kind"] == "plan_paused"] == []
    assert (await engine.connection_status(account))["sync_paused_reason"] is None


async def test_the_sweep_sees_every_change_when_intuit_cuts_its_answer_at_1000(
    skipping_engine: Engine,
) -> None:
    # After an outage the change-data-capture answer is cut at Intuit's 1,000 objects (and cannot be paged);
    # changes past the cut must still be seen, and the watermark must not move past them unseen.
    engine = skipping_engine
    account = await engine.create_account()
    realm = await engine.connect(account)
    for invoice_id in ("inv-1", "inv-2"):
        await engine.send_invoice(account, invoice_id, number=f"CUT-{invoice_id}")
    synced = [await engine.wait_for_invoice(account, i, "synced") for i in ("inv-1", "inv-2")]
    await engine.skip_time(timedelta(minutes=20), step=timedelta(minutes=5))  # the first sweeps pass

    await fault(engine, kind="webhook_drop", count=10_000)
    now = (await engine.emulator.admin.get("/__admin/clock")).json()["now"]
    (template,) = [i for i in await engine.qbo_invoices(realm) if i["DocNumber"] == "CUT-inv-1"]
    others = [
        {**template, "Id": str(900_000 + n), "DocNumber": f"OTHER-{n}", "PrivateNote": "",
         "MetaData": {"CreateTime": now, "LastUpdatedTime": now}}
        for n in range(1_100)
    ]  # fmt: skip
    imported = await engine.emulator.admin.post(
        f"/__admin/companies/{realm}/import", json={"Invoice": others}
    )
    imported.raise_for_status()
    for invoice in synced:
        await pay(engine, realm, invoice["quickbooks"]["invoice_id"], "225.50")
    await advance_intuit_clock(engine, 300)
    await engine.skip_time(timedelta(minutes=30), step=timedelta(minutes=5))

    for invoice_id in ("inv-1", "inv-2"):
        paid = await engine.wait_for_invoice(account, invoice_id, "paid", timeout=30)
        assert paid["balance_cents"] == 0
    assert (await engine.connection_status(account))["missed_changes_caught"] >= 2

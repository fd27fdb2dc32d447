"""The help page's story in a real browser, through the reference web app (/app/) on the real engine: connect
through the consent page, send, the badge, a payment, a failed sync retried from its button, an expired connection
reconnected, Disconnect & Void with its progress; and what the plans show."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, expect
from temporalio.testing import WorkflowEnvironment

from tests.browser.conftest import screenshot
from tests.conftest import EngineFactory
from tests.e2e.test_connection_health import YEAR, advance_intuit_clock
from tests.e2e.test_payments_and_webhooks import fault
from tests.engine import Engine, running_engine
from tests.support import EmulatorFactory
from workflows.ids import connection_workflow_id
from workflows.messages import ConnectionInfo, RefreshRequest, RefreshResult

PAID_LINE = "Payment confirmed via QuickBooks."


@pytest.fixture
async def app_engine(engine_with: EngineFactory) -> Engine:
    """The engine with the web app as the platform's return URL, as in `make run`."""
    return await engine_with(return_to_app=True)


async def account_with_token(engine: Engine, plan: str = "premium", addon: bool = False) -> tuple[str, str]:
    account = await engine.create_account(plan=plan, addon=addon)
    created = await engine.api.put(f"/v1/accounts/{account}", json={"plan": plan, "quickbooks_addon": addon})
    created.raise_for_status()
    return account, str(created.json()["api_token"])


async def open_app(page: Page, engine: Engine, account: str, token: str) -> None:
    """As `make run` opens it: the account and token in the fragment, which never reaches a server."""
    await page.goto(f"{engine.api_url}/app/#account={account}&token={token}")
    await expect(page.get_by_role("heading", name="Settings → Invoices")).to_be_visible()
    assert token not in page.url


async def consent(page: Page, realm: str) -> None:
    """On the emulator's Intuit page: choose the company and Authorize."""
    await expect(page.get_by_role("button", name="Authorize")).to_be_visible()
    await page.locator(f"input[name=realm_id][value='{realm}']").check()
    await page.get_by_role("button", name="Authorize").click()


async def send_demo_invoice(page: Page, client: str) -> str:
    """The platform's "send", from the Invoices screen: returns the new invoice's id."""
    await page.get_by_role("link", name="Invoices", exact=True).click()
    await page.locator("#send-demo summary").click()
    await page.get_by_label("Client name").fill(client)
    await page.get_by_role("button", name="Send invoice").click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Invoice DEMO-"))).to_be_visible()
    return urlsplit(page.url).fragment.rsplit("/", 1)[-1]


def status_badge(page: Page, words: str) -> Any:
    return page.locator("h1 .badge", has_text=re.compile(f"^{re.escape(words)}$"))


async def test_the_whole_story_in_the_browser(app_engine: Engine, page: Page) -> None:
    engine = app_engine
    account, token = await account_with_token(engine)
    realm = await engine.emulator.create_company("Browser Bakery")

    # The page answers with a strict Content-Security-Policy (no inline script) and is never framed.
    async with httpx.AsyncClient() as http:
        served = await http.get(f"{engine.api_url}/app/")
    assert "script-src 'self'" in served.headers["content-security-policy"]
    assert served.headers["x-frame-options"] == "DENY"

    # Settings → Invoices, not connected: Connect QuickBooks, through Intuit's (the emulator's) consent page.
    await open_app(page, engine, account, token)
    card = page.locator("#qbo-card")
    await expect(card.get_by_role("heading", name="QuickBooks Online Integration")).to_be_visible()
    await screenshot(page, "settings-not-connected")
    await card.get_by_role("button", name="Connect QuickBooks").click()
    await consent(page, realm)
    await expect(page.get_by_role("status")).to_have_text(
        f"QuickBooks is connected to Browser Bakery (realm ID {realm})."
    )
    assert "signature" not in page.url and "quickbooks=" not in page.url
    await expect(card.locator("#connection-badge")).to_have_text("Connected")
    await expect(card).to_contain_text(realm)
    await expect(card).to_contain_text("Browser Bakery")
    await screenshot(page, "settings-connected")

    # Send: the invoice syncs and carries the QuickBooks badge; a payment in QuickBooks marks it Paid.
    paid_id = await send_demo_invoice(page, "Ada Lovelace")
    await expect(status_badge(page, "Synced")).to_be_visible()
    await expect(page.locator("h1 .badge.qbo")).to_be_visible()
    invoice = await engine.invoice(account, paid_id)
    await expect(page.locator("#main")).to_contain_text(invoice["quickbooks"]["invoice_id"])
    # The client pays: in QuickBooks (the emulator's company page, in another tab), as the user would record it.
    books = await page.context.new_page()
    await books.goto(f"{engine.emulator.base_url}/__admin/companies/{realm}/books")
    row = books.locator("tbody tr", has_text=invoice["number"])
    await expect(row.get_by_label("Amount")).to_have_value("180.00")
    await row.get_by_role("button", name=re.compile("^Receive payment")).click()
    await expect(row).to_contain_text("nothing due")
    await books.close()
    await expect(status_badge(page, "Paid")).to_be_visible()
    await expect(page.locator("#timeline")).to_contain_text(PAID_LINE)
    await screenshot(page, "invoice-paid")

    # A sync QuickBooks rejects fails at once, with the notification in words; Retry (the button) syncs it.
    await fault(engine, count=1, method="POST", path_contains="/invoice", status=400, fault_code="6000",
                fault_type="ValidationFault", message="A business validation error has occurred")  # fmt: skip
    failed_id = await send_demo_invoice(page, "Grace Hopper")
    await expect(status_badge(page, "Sync failed")).to_be_visible()
    notification = page.locator("#invoice-notification")
    await expect(notification).to_contain_text("QuickBooks")
    await screenshot(page, "invoice-failed")
    # The dashboard lists what needs attention, the failed sync among it.
    await page.get_by_role("link", name="Dashboard").click()
    await expect(page.locator("#main")).to_contain_text("could not be synced to QuickBooks")
    await screenshot(page, "dashboard")
    await page.go_back()
    await notification.get_by_role("button", name="Retry").click()
    await expect(status_badge(page, "Synced")).to_be_visible()
    await expect(page.locator("#invoice-notification")).to_have_count(0)

    # The list: every invoice with its state at a glance and the QuickBooks badge; filters by state.
    await page.get_by_role("link", name="Invoices", exact=True).click()
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(2)
    await expect(page.locator(f"tr[data-invoice='{paid_id}'] .badge.qbo")).to_be_visible()
    await screenshot(page, "invoices-list")
    await page.get_by_label("Show").select_option("paid")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Paid")

    # The user disconnects the app in QuickBooks (the books page): the next sync finds out, the card says syncing
    # is paused; Reconnect (the consent page again, same company) resumes the paused invoice.
    books = await page.context.new_page()
    await books.goto(f"{engine.emulator.base_url}/__admin/companies/{realm}/books")
    await books.get_by_role("button", name=re.compile("^Disconnect every app")).click()
    await expect(books.get_by_role("status")).to_contain_text("revoked: the apps are disconnected")
    await books.close()
    paused_id = await send_demo_invoice(page, "Katherine Johnson")
    await expect(status_badge(page, "Paused")).to_be_visible()
    await page.get_by_role("link", name="Settings → Invoices").click()
    await expect(card.locator("#expired-notice")).to_contain_text("Syncing is paused.")
    await screenshot(page, "settings-expired")
    await card.get_by_role("button", name="Reconnect").click()
    await consent(page, realm)
    await expect(page.get_by_role("status")).to_contain_text("QuickBooks is connected to Browser Bakery")
    await expect(card.locator("#connection-badge")).to_have_text("Connected")
    await engine.wait_for_invoice(account, paused_id, "synced", timeout=60)

    # Disconnect & Void: the dialog says how many would be voided, then shows the voids and the refusal (the
    # paid invoice: QuickBooks refuses to void it) until disconnected.
    await card.get_by_role("button", name="Disconnect").click()
    dialog = page.get_by_role("dialog", name="Disconnect QuickBooks?")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Disconnect Only")).to_be_focused()
    await expect(dialog).to_contain_text("3 invoices would be voided.")
    await screenshot(page, "disconnect-dialog")
    await dialog.get_by_role("button", name="Disconnect & Void").click()
    await expect(dialog.locator("#disconnect-progress-text")).to_contain_text("Disconnected from QuickBooks.")
    await expect(dialog.locator("#disconnect-progress-text")).to_contain_text("2 of 3 invoices voided")
    await expect(dialog.locator("#disconnect-failures li")).to_have_count(1)
    await expect(dialog.locator("#disconnect-failures")).to_contain_text("refused to void")
    await screenshot(page, "disconnect-progress")
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()
    await expect(card.get_by_role("button", name="Connect QuickBooks")).to_be_focused()
    assert (await engine.invoice(account, failed_id))["status"] == "voided"
    # Nothing of this story left in the shared emulator's in-order webhook queue for the next test's engine.
    await engine.wait_for_webhooks_delivered()


async def test_plans_say_why_quickbooks_is_unavailable_and_sign_in_checks_the_token(
    app_engine: Engine, page: Page
) -> None:
    engine = app_engine
    free, free_token = await account_with_token(engine, plan="free")
    pro, pro_token = await account_with_token(engine, plan="pro")

    # Signing in by hand: a wrong token is refused, the right one opens the account.
    await page.goto(f"{engine.api_url}/app/")
    await page.get_by_label("Account id").fill(free)
    await page.get_by_label("Account token").fill(pro_token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That account id and token do not go together.")
    await page.get_by_label("Account token").fill(free_token)
    await page.get_by_role("button", name="Sign in").click()
    card = page.locator("#qbo-card")
    await expect(card.locator("#plan-notice")).to_contain_text("Upgrade to Premium")
    await expect(card.get_by_role("button", name="Connect QuickBooks")).to_have_count(0)
    await screenshot(page, "settings-free-plan")

    await page.get_by_role("button", name="Sign out").click()
    await open_app(page, engine, pro, pro_token)
    await expect(card.locator("#plan-notice")).to_contain_text("Add the QuickBooks add-on ($10/month)")
    await screenshot(page, "settings-pro-without-addon")

    # A return link this tab did not start is not believed, whatever it says.
    await page.goto(f"{engine.api_url}/app/?quickbooks=connected&account_id={pro}&realm_id=1&flow=forged")
    await expect(page.get_by_role("status")).to_contain_text(
        "did not start came back here; nothing was changed"
    )
    await expect(card.locator("#connection-badge")).to_have_text("Not connected")


@pytest.fixture
async def clock_app_engine(
    dev_env: WorkflowEnvironment, migrated_database: str, emulator_factory: EmulatorFactory, task_queue: str
) -> AsyncIterator[Engine]:
    """The app's engine on an emulator of the test's own: the test moves Intuit's clock, which would disturb others."""
    own = await emulator_factory()
    async with running_engine(
        env=dev_env, database_url=migrated_database, emulator=own, task_queue=task_queue, return_to_app=True
    ) as engine:
        yield engine


async def expiring_soon(engine: Engine, account: str) -> None:
    """Walk Intuit's clock to nine days before the authorization's five-year end, refreshing on the way as the
    hourly refresh would (a refresh token unused for 100 days lapses): the connection turns `expiring`."""
    handle = engine.temporal.get_workflow_handle(connection_workflow_id(account))
    version = (await handle.query("status", result_type=ConnectionInfo)).token_version
    walked, target = timedelta(0), 5 * YEAR - timedelta(days=9)
    while walked < target:
        step = min(timedelta(days=90), target - walked)
        await advance_intuit_clock(engine, step.total_seconds())
        walked += step
        refreshed = await handle.execute_update(
            "refresh_access_token", RefreshRequest(seen_version=version), result_type=RefreshResult
        )
        version = refreshed.token_version
    await engine.wait_for(lambda: engine.connection_status(account), lambda s: s["status"] == "expiring")


async def test_the_amber_warning_the_company_checks_and_hostile_words_shown_as_text(
    clock_app_engine: Engine, page: Page
) -> None:
    """The screen of a connection that expires soon, reached for real (Intuit's clock walked to nine days before
    the authorization's end), the company check's real findings; and words that are not ours (an invoice number,
    a company name) stay text, never markup."""
    engine = clock_app_engine
    account, token = await account_with_token(engine)
    realm = await engine.emulator.create_company("<b>Evil</b> & Co")
    await engine.connect(account, realm)
    hostile = "<img src=x>"
    sent = await engine.send_invoice(account, "inv-hostile", number=hostile)
    assert sent.status_code == 202, sent.text
    await engine.wait_for_invoice(account, "inv-hostile", "synced")
    await expiring_soon(engine, account)

    await open_app(page, engine, account, token)
    card = page.locator("#qbo-card")
    await expect(card.locator("#connection-badge")).to_have_text("Connection expires soon")
    await expect(card.locator("#expiring-notice")).to_be_visible()
    await expect(card.get_by_role("button", name="Reconnect")).to_be_visible()
    await expect(card).to_contain_text("<b>Evil</b> & Co")
    # The company check's findings as the engine reports them: warnings, and how syncing adapts (info).
    checks = card.locator("#company-checks li")
    await expect(checks.filter(has_text="Warning: QuickBooks applies open credits")).to_have_count(1)
    await expect(checks.filter(has_text="Note: QuickBooks Online US edition")).to_have_count(1)
    await screenshot(page, "settings-expiring-with-checks")

    await page.get_by_role("link", name="Invoices", exact=True).click()
    await expect(page.get_by_role("link", name=hostile)).to_be_visible()
    await page.get_by_role("link", name=hostile).click()
    await expect(page.get_by_role("heading", name=f"Invoice {hostile}")).to_be_visible()
    assert await page.locator("#view b, #view i, #view img, #view script").count() == 0

"""An auditor's run: the engine as real processes, failures, refusals and retries, then a scan of everything it
left in Temporal and in its processes' output for client names, emails, tokens, authorization codes and states.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from bench.harness import INTUIT_LIMITS, Stack, running_stack
from tests.engine import invoice_payload
from workflows.ids import invoice_workflow_id

pytestmark = pytest.mark.slow

CLIENTS = {
    "inv-transient": ("Grace Hopper", "grace.hopper@example.com"),
    "inv-invalid": ("Katherine Johnson", "Katherine.Johnson@Example.com"),
    "inv-clash": ("Dorothy Vaughan", "dorothy.vaughan@example.com"),
}
# Loggers whose output is ours: the API, the worker and the codec server (the emulator plays Intuit).
OUR_PROCESSES = ("api", "worker", "codec")
_URL = re.compile(r"https?://[^\s\"'<>]+")


class OAuthTrail:
    """Authorization codes and states seen on the way (the API's connect answer, the consent redirect)."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        for url in _URL.findall(response.text.replace("\\/", "/")):
            query = parse_qs(urlsplit(url).query)
            for key in ("code", "state"):
                # Real ones are long and random (a test helper's fixed "direct" state is neither).
                self.values.update(value for value in query.get(key, []) if len(value) >= 16)


async def fault(stack: Stack, **spec: Any) -> None:
    (await stack.admin.post("/__admin/faults", json=spec)).raise_for_status()


async def every_history(temporal: Client) -> dict[str, bytes]:
    """Every run of every workflow on the server, exactly as stored: no codec, every event, every page."""
    histories: dict[str, bytes] = {}
    async for execution in temporal.list_workflows():
        pages: list[bytes] = []
        token = b""
        while True:
            response = await temporal.workflow_service.get_workflow_execution_history(
                GetWorkflowExecutionHistoryRequest(
                    namespace=temporal.namespace,
                    execution=WorkflowExecution(workflow_id=execution.id, run_id=execution.run_id),
                    next_page_token=token,
                )
            )
            pages.append(response.SerializeToString())
            token = response.next_page_token
            if not token:
                break
        histories[f"history of {execution.id} ({execution.run_id})"] = b"".join(pages)
    return histories


def issued_by_intuit(state_file: Path) -> set[str]:
    """Every authorization code, access and refresh token the emulator (Intuit) ever issued."""
    oauth = json.loads(state_file.read_text())["oauth"]
    return {item["value"] for kind in ("codes", "access_tokens", "refresh_tokens") for item in oauth[kind]}


def fingerprints(secret: str) -> set[str]:
    """The secret and distinctive pieces of it, so a truncated or partly redacted copy is found too."""
    found = {secret}
    for piece in secret.split("."):
        if len(piece) >= 24:
            found |= {piece[4:20], piece[-16:]}
    return found


def personal_data(name: str, email: str) -> set[str]:
    """A client's name and email as they could appear: as sent, lower-cased, URL-encoded (query strings)."""
    forms = {name, email, email.lower()}
    return forms | {quote(form) for form in forms} | {quote_plus(form) for form in forms}


def json_lines(text: str, process: str) -> list[dict[str, Any]]:
    """Every line a process printed, each a JSON object with the fields every line has."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"the {process} printed a line that is not JSON: {line[:200]!r}") from None
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= entry.keys(), line[:200]
        entries.append(entry)
    return entries


def hits(sources: dict[str, str], needles: dict[str, set[str]]) -> list[str]:
    found = []
    for where, text in sources.items():
        folded = text.lower()
        for label, forms in needles.items():
            if any(form.lower() in folded for form in forms):
                found.append(f"{label} in {where}")
    return found


async def test_no_personal_data_or_secret_reaches_temporal_or_the_logs(tmp_path: Path) -> None:
    state_file = tmp_path / "emulator-state.json"
    trail = OAuthTrail()
    async with running_stack(
        log_level="DEBUG",
        access_log=True,
        with_codec=True,
        emulator_args=["--state-file", str(state_file)],
        workdir=tmp_path / "run",
    ) as stack:
        stack.api.event_hooks["response"].append(trail)
        stack.admin.event_hooks["response"].append(trail)
        async with stack.running_worker():
            account, realm = await stack.connected_account("audit")

            async def send(invoice_id: str, number: str) -> None:
                name, email = CLIENTS[invoice_id]
                payload = invoice_payload(number=number, client_name=name, client_email=email)
                await stack.send_invoice(account, invoice_id, payload)

            # A transient 5xx: retried automatically, then synced.
            await fault(stack, method="POST", path_contains="/invoice", realm_id=realm, status=503,
                        fault_code="10000", fault_type="SystemFault")  # fmt: skip
            await send("inv-transient", "AUD-1")
            transient = await stack.wait_for_invoice(account, "inv-transient", "synced")

            # A validation fault whose text echoes what was sent (as Intuit's details do): failed, retried by hand.
            name, email = CLIENTS["inv-invalid"]
            await fault(stack, method="POST", path_contains="/invoice", realm_id=realm, status=400,
                        fault_code="6000", fault_type="ValidationFault",
                        message=f"Business Validation Error: customer {name} <{email}> is not valid")  # fmt: skip
            await send("inv-invalid", "AUD-2")
            failed = await stack.wait_for_invoice(account, "inv-invalid", "failed")
            assert name in failed["last_error"]  # the user still reads the whole reason
            retried = await stack.api.post(f"/v1/accounts/{account}/invoices/inv-invalid/quickbooks/retry")
            assert retried.status_code == 202
            await stack.wait_for_invoice(account, "inv-invalid", "synced")

            # A DisplayName clash: a stranger has the name, then every other candidate name is taken too.
            name, email = CLIENTS["inv-clash"]
            async with stack.raw_client(realm, INTUIT_LIMITS) as qbo:
                await qbo.create(
                    "Customer",
                    {"DisplayName": name, "PrimaryEmailAddr": {"Address": "someone.else@example.org"}},
                    request_id="audit-stranger",
                )
            await fault(stack, method="POST", path_contains="/customer", realm_id=realm, status=400, count=6,
                        fault_code="6240", fault_type="ValidationFault",
                        message=f"The name supplied already exists. : {name} ({email})")  # fmt: skip
            # And an expired access token on the way: one refresh through the connection workflow.
            await fault(stack, method="GET", path_contains="/query", realm_id=realm, status=401)
            await send("inv-clash", "AUD-3")
            clash = await stack.wait_for_invoice(account, "inv-clash", "failed")
            assert clash["notification"]["kind"] == "sync_failed"
            await stack.api.post(f"/v1/accounts/{account}/invoices/inv-clash/quickbooks/retry")
            await stack.wait_for_invoice(account, "inv-clash", "synced")

            # Paid in QuickBooks, then a void QuickBooks refuses.
            await stack.pay_in_quickbooks(realm, transient["quickbooks"]["invoice_id"])
            await stack.wait_for_invoice(account, "inv-transient", "paid")
            await stack.void_invoice(account, "inv-transient")
            await stack.wait_for(
                lambda: stack.invoice(account, "inv-transient"),
                lambda body: body["notification"] is not None,
                what="the refused void",
            )

            # Disconnect & Void: the others are voided, the paid one refused again, the authorization revoked.
            disconnect = await stack.api.post(
                f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_and_void"}
            )
            assert disconnect.status_code == 202, disconnect.text

            async def connection() -> dict[str, Any]:
                answer = await stack.api.get(f"/v1/accounts/{account}/quickbooks/connection")
                body: dict[str, Any] = answer.json()
                return body

            await stack.wait_for(connection, lambda body: body["status"] == "disconnected", what="disconnect")

            # An operator looks at an invoice's input through the codec server.
            handle = stack.temporal.get_workflow_handle(invoice_workflow_id(account, "inv-transient"))
            stored = [
                event.workflow_execution_started_event_attributes.input
                async for event in handle.fetch_history_events()
                if event.HasField("workflow_execution_started_event_attributes")
            ]
            assert stack.codec_url is not None
            async with httpx.AsyncClient(timeout=10) as operator:
                shown = await operator.post(
                    f"{stack.codec_url}/decode",
                    json={"payloads": [json_format.MessageToDict(payload) for payload in stored[0].payloads]},
                )
            assert shown.status_code == 200
            decoded = [json_format.ParseDict(item, Payload()).data for item in shown.json()["payloads"]]
            assert any(CLIENTS["inv-transient"][1].encode() in data for data in decoded)

            histories = await every_history(stack.temporal)
        logs = {name: (stack.workdir / f"{name}.log").read_text(errors="replace") for name in OUR_PROCESSES}
    entries = {name: json_lines(text, name) for name, text in logs.items()}
    # The lines say what they concern: a sync attempt's lines name its workflow, run, account, invoice and
    # company; the API's its route's ids, the path without its query string (the OAuth callback's code and state).
    assert any(
        entry.get("workflow_id") == invoice_workflow_id(account, "inv-transient")
        and entry.get("run_id")
        and entry.get("activity_type") == "sync_invoice"
        and (entry.get("account_id"), entry.get("invoice_id"), entry.get("realm_id"))
        == (account, "inv-transient", realm)
        for entry in entries["worker"]
    ), "no worker line names the sync it is about"
    retry_path = f"/v1/accounts/{account}/invoices/inv-invalid/quickbooks/retry"
    assert any(
        entry.get("http_path") == retry_path
        and (entry.get("account_id"), entry.get("invoice_id")) == (account, "inv-invalid")
        for entry in entries["api"]
    ), "no API line names the route's ids"
    callbacks = [entry for entry in entries["api"] if entry.get("http_path") == "/oauth/quickbooks/callback"]
    assert callbacks and all("code=" not in entry["message"] for entry in callbacks)
    assert entries["codec"]
    # The emulator saved its state on the way out: every code and token Intuit issued.
    secrets = issued_by_intuit(state_file) | trail.values
    assert len(trail.values) >= 2 and secrets

    needles = {f"{name}'s name or email": personal_data(name, email) for name, email in CLIENTS.values()}
    for number, secret in enumerate(sorted(secrets)):
        needles[f"OAuth secret #{number} ({secret[:6]}...)"] = fingerprints(secret)
    sources = {where: data.decode("latin-1") for where, data in histories.items()}
    sources.update({f"the {name} log": text for name, text in logs.items()})
    assert len(histories) >= 5  # three invoices, the connection, the company's events
    found = hits(sources, needles)
    assert not found, "readable where nobody should read it:\n" + "\n".join(found)

"""What Prometheus scrapes from a worker process (one address: the engine's metrics and the Temporal SDK's) and
from the API, after a real connect and sync: present, labelled as documented, and no personal data in labels."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import EngineFactory
from tests.engine import Engine, start_worker_process
from tests.support import ROOT, free_port

CLIENT_NAME = "Hedy Lamarr"
CLIENT_EMAIL = "hedy.lamarr@example.com"


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def matching(found: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        sample
        for sample in found
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    ]


@dataclass
class Checked:
    returncode: int
    stderr: str


async def healthcheck(role: str, url: str) -> Checked:
    """The healthcheck as its own process (the API under test may run in this event loop: never block it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "deploy" / "healthcheck.py"), role, "--url", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return Checked(process.returncode, stderr.decode())


async def test_the_container_healthchecks_tell_a_live_process_from_a_dead_one(engine: Engine) -> None:
    api_url = str(engine.api.base_url).rstrip("/")
    assert (await healthcheck("api", f"{api_url}/healthz")).returncode == 0
    closed = free_port()
    dead = await healthcheck("api", f"http://127.0.0.1:{closed}/healthz")
    assert dead.returncode == 1 and "did not answer" in dead.stderr
    # Something answers on the port, but not a worker: no Temporal SDK metrics.
    not_a_worker = await healthcheck("worker", f"{api_url}/healthz")
    assert not_a_worker.returncode == 1 and "no Temporal SDK metrics" in not_a_worker.stderr
    missing = await healthcheck("api", f"{api_url}/no-such-page")
    assert missing.returncode == 1 and "answered 404" in missing.stderr


async def scrape(url: str, *, until: str, timeout: float = 30.0) -> list[Sample]:
    """The endpoint's samples once a sample named `until` is there (the SDK exports on its own schedule)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            try:
                response = await http.get(url)
                found = samples(response.text) if response.status_code == 200 else []
            except httpx.TransportError:
                found = []
            if any(sample.name.startswith(until) for sample in found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)


async def test_a_worker_serves_engine_and_sdk_metrics_on_one_address_without_personal_data(
    engine_with: EngineFactory,
) -> None:
    engine: Engine = await engine_with(with_worker=False)
    port = free_port()
    worker = start_worker_process(engine, WORKER_METRICS_PORT=str(port))
    try:
        account = await engine.create_account()
        realm = await engine.connect(account)
        invoice_id = f"inv-{uuid.uuid4().hex[:8]}"
        sent = await engine.send_invoice(
            account, invoice_id, client_name=CLIENT_NAME, client_email=CLIENT_EMAIL
        )
        assert sent.status_code == 202, sent.text
        await engine.wait_for_invoice(account, invoice_id, "synced")

        found = await scrape(f"http://127.0.0.1:{port}/metrics", until="temporal_workflow_task")
        # The container healthcheck (Dockerfile, docker-compose.yml) finds this worker alive, by the same address.
        assert (await healthcheck("worker", f"http://127.0.0.1:{port}/metrics")).returncode == 0
    finally:
        worker.terminate()
        worker.wait(timeout=40)

    names = {sample.name for sample in found}
    # The Temporal SDK's own, through the same address.
    assert any(name.startswith("temporal_workflow_task") for name in names), sorted(names)
    assert any(name.startswith("temporal_request") for name in names), sorted(names)
    # QuickBooks calls by company, operation and outcome, with their latency.
    assert matching(
        found, "qbo_sync_quickbooks_calls_total", realm=realm, operation="create:Invoice", outcome="ok"
    )
    assert matching(
        found, "qbo_sync_quickbooks_calls_total", realm=realm, operation="query:Customer", outcome="ok"
    )
    latency = matching(found, "qbo_sync_quickbooks_call_seconds_count", operation="create:Invoice")
    assert latency and latency[0].value >= 1
    waited = matching(found, "qbo_sync_quickbooks_limiter_wait_seconds_count")
    assert waited and waited[0].value >= 1
    assert matching(found, "qbo_sync_quickbooks_limiter_wait_seconds_by_company_total", realm=realm)
    # The token refresh of the connection workflow, and the sync's outcome.
    assert matching(found, "qbo_sync_invoice_sync_attempts_total", outcome="synced")
    horizon = matching(found, "qbo_sync_connection_token_horizon_seconds", account=account, realm=realm)
    assert horizon and horizon[0].value > 86_400, horizon

    for sample in found:
        for value in sample.labels.values():
            assert invoice_id not in value, sample
            assert CLIENT_EMAIL not in value.lower() and "@" not in value, sample
            assert CLIENT_NAME.lower() not in value.lower(), sample

    # The API's calls (the OAuth callback reads the company's CompanyInfo) are counted on its own /metrics.
    api = samples((await engine.api.get("/metrics")).text)
    assert matching(
        api, "qbo_sync_quickbooks_calls_total", realm=realm, operation="read:CompanyInfo", outcome="ok"
    )
    assert matching(api, "qbo_sync_quickbooks_oauth_calls_total", operation="code_exchange", outcome="ok")

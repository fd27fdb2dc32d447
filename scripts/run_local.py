"""`make run`: the whole engine on one machine, on embedded defaults.

Starts the Temporal dev server (Web UI, persisted to SQLite), the QuickBooks emulator (persisted to a JSON file),
the API, a worker and the operators' payload codec (the Web UI decodes through it); creates a demo account
connected to an emulator company; prints what to open and a curl to send an invoice. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.db import migrate
from settings import Settings
from workflows import search_attributes

VAR = ROOT / "var"
BIN = Path(sys.executable).parent
DEMO_ACCOUNT = "demo"
TEMPORAL_UI_PORT = 8233


def port_of(url: str) -> int:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    assert parts.port is not None, url
    return parts.port


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not port_in_use(port):
        if process.poll() is not None:
            raise SystemExit(f"{name} exited (code {process.returncode}); see var/{name}.log")
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not start listening on {port}; see var/{name}.log")
        time.sleep(0.2)


class Stack:
    """The child processes, stopped in reverse order."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (VAR / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.processes.append((name, process))
        return process

    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT if name in ("worker", "api", "codec") else signal.SIGTERM)
        for name, process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in time; killing it")
                process.kill()

    def dead(self) -> list[str]:
        return [name for name, process in self.processes if process.poll() is not None]


async def connect_demo_account(settings: Settings) -> tuple[str, str]:
    """The demo account on Premium, connected to an emulator company through the real OAuth flow: its realm id and
    the account's own token (what the web app signs in with)."""
    headers = {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
    async with httpx.AsyncClient(base_url=settings.api_public_url, headers=headers, timeout=30) as api:
        created = await api.put(f"/v1/accounts/{DEMO_ACCOUNT}", json={"plan": "premium"})
        created.raise_for_status()
        token = str(created.json()["api_token"])
        connection = (await api.get(f"/v1/accounts/{DEMO_ACCOUNT}/quickbooks/connection")).json()
        if connection["status"] in ("connected", "expiring"):
            return str(connection["realm_id"]), token
        # The user's browser: it opens the start link (which sets the flow's cookie) and comes back to the callback.
        async with (
            httpx.AsyncClient(base_url=settings.qbo_base_url, timeout=30) as emulator,
            httpx.AsyncClient(timeout=30) as browser,
        ):
            realm_id = connection.get("realm_id")
            if not realm_id:
                # A company set up as a user of the platform would (the platform's invoice numbers in QuickBooks).
                created = await emulator.post(
                    "/__admin/companies",
                    json={
                        "name": "Demo Company",
                        "preferences": {"SalesFormsPrefs": {"CustomTxnNumbers": True}},
                    },
                )
                created.raise_for_status()
                realm_id = created.json()["realm_id"]
            started = await api.post(f"/v1/accounts/{DEMO_ACCOUNT}/quickbooks/connect")
            started.raise_for_status()
            opened = await browser.get(started.json()["authorization_url"], follow_redirects=False)
            if opened.status_code != 303:
                raise SystemExit(f"opening the start link failed: {opened.headers.get('location')}")
            query = {k: v[0] for k, v in parse_qs(urlsplit(opened.headers["location"]).query).items()}
            consent = await emulator.post(
                f"/__admin/companies/{realm_id}/authorize",
                json={key: query[key] for key in ("client_id", "redirect_uri", "state", "scope")},
            )
            consent.raise_for_status()
            landed = await browser.get(consent.json()["redirect_url"], follow_redirects=False)
        if "quickbooks=connected" not in landed.headers.get("location", ""):
            raise SystemExit(f"connecting the demo account failed: {landed.headers.get('location')}")
        for _ in range(100):
            connection = (await api.get(f"/v1/accounts/{DEMO_ACCOUNT}/quickbooks/connection")).json()
            if connection["status"] == "connected":
                return str(realm_id), token
            await asyncio.sleep(0.2)
        raise SystemExit("the demo connection did not become usable; see var/worker.log")


def codec_url(settings: Settings) -> str:
    """Where the operator's browser reaches the codec server (the Web UI calls it from the page)."""
    return f"http://{settings.codec_host}:{settings.codec_port}"


def app_url(settings: Settings) -> str:
    return f"{settings.api_public_url.rstrip('/')}/app/"


def instructions(settings: Settings, realm_id: str, account_token: str) -> str:
    api = settings.api_public_url
    token = settings.api_token.get_secret_value()
    return f"""
qbo-sync is running (logs in var/*.log).

  The web app         {app_url(settings)}#account={DEMO_ACCOUNT}&token={account_token}
                      (the demo account's settings, invoices and the whole help page; the token stays in the
                      URL's fragment, which is never sent to a server, and the app moves it to the tab's storage)
  Temporal Web UI     http://127.0.0.1:{TEMPORAL_UI_PORT} (payloads decrypted by the codec on {codec_url(settings)})
  API and its docs    {api}/docs
  QuickBooks emulator {settings.qbo_base_url}/connect/oauth2 (authorization page), company {realm_id}
  The company's books {settings.qbo_base_url}/__admin/companies/{realm_id}/books
                      (play the QuickBooks user: receive a client's payment against an invoice)

The account "{DEMO_ACCOUNT}" (Premium) is connected to QuickBooks company {realm_id}. Send an invoice:

  curl -s -X POST {api}/v1/accounts/{DEMO_ACCOUNT}/invoices/inv-$RANDOM/send \\
    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"number": "INV-1001", "client": {{"name": "Ada Lovelace", "email": "ada@example.com"}},
         "currency": "USD", "issue_date": "2026-11-24", "due_date": "2026-12-24",
         "lines": [{{"description": "Architecture review", "quantity": "1.5", "unit_price_cents": 12000}}]}}'

Then look at it:   curl -s {api}/v1/accounts/{DEMO_ACCOUNT}/invoices -H 'Authorization: Bearer {token}'
Record a payment in QuickBooks (the books page above, or with the invoice's quickbooks.invoice_id):
  curl -s -X POST {settings.qbo_base_url}/__admin/companies/{realm_id}/payments \\
    -H 'Content-Type: application/json' -d '{{"invoice_id": "<id>", "amount": "180.00"}}'

Ctrl-C stops everything; data stays in var/ for the next `make run`.
"""


def main() -> None:
    settings = Settings()
    VAR.mkdir(exist_ok=True)
    temporal_port = port_of(settings.temporal_address)
    api_port = port_of(settings.api_public_url)
    emulator_port = port_of(settings.qbo_base_url)
    ports = (temporal_port, TEMPORAL_UI_PORT, emulator_port, api_port, settings.codec_port)
    busy = [port for port in ports if port_in_use(port)]
    if busy:
        raise SystemExit(f"ports already in use: {busy}. Is another `make run` still running?")

    print("Preparing the database (migrations)...")
    migrate(settings.database_url)

    stack = Stack()
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    # Plain lines for the developer reading them (production's default is JSON), unless LOG_FORMAT says otherwise.
    env = {"LOG_FORMAT": "text", **os.environ, "PYTHONUNBUFFERED": "1"}
    # Connecting from the web app comes back to it, unless PLATFORM_RETURN_URL (environment or .env) says otherwise.
    default_return = Settings.model_fields["platform_return_url"].default
    chosen = settings.platform_return_url != default_return
    api_env = env if chosen else {**env, "PLATFORM_RETURN_URL": app_url(settings)}
    try:
        print(f"Starting the payload codec for the Web UI ({codec_url(settings)})...")
        codec = stack.start("codec", [sys.executable, "codec_server.py"], env=env)
        wait_for_port(settings.codec_port, codec, "codec")

        print("Starting the Temporal dev server (Web UI on port 8233)...")
        temporal = stack.start(
            "temporal",
            [
                str(BIN / "temporal"), "server", "start-dev",
                "--ip", "127.0.0.1", "--port", str(temporal_port),
                "--ui-ip", "127.0.0.1", "--ui-port", str(TEMPORAL_UI_PORT),
                "--db-filename", str(VAR / "temporal.db"),
                "--ui-codec-endpoint", codec_url(settings),
                "--ui-disable-news-fetch",
                *search_attributes.dev_server_flags(),
            ],
        )  # fmt: skip
        wait_for_port(temporal_port, temporal, "temporal")
        wait_for_port(TEMPORAL_UI_PORT, temporal, "temporal")

        print("Starting the QuickBooks emulator...")
        emulator = stack.start(
            "emulator",
            [
                sys.executable, "-m", "emulator",
                "--host", "127.0.0.1", "--port", str(emulator_port),
                "--state-file", str(VAR / "emulator.json"),
                "--client-id", settings.qbo_client_id,
                "--client-secret", settings.qbo_client_secret.get_secret_value(),
                "--redirect-uri", settings.qbo_redirect_uri,
                "--verifier-token", settings.qbo_webhook_verifier_token.get_secret_value(),
                "--webhook-url", f"{settings.api_public_url}/webhooks/quickbooks",
            ],
        )  # fmt: skip
        wait_for_port(emulator_port, emulator, "emulator")

        print("Starting the API and a worker...")
        api = stack.start(
            "api",
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(api_port)],
            env=api_env,
        )
        stack.start("worker", [sys.executable, "worker.py"], env=env)
        wait_for_port(api_port, api, "api")

        realm_id, account_token = asyncio.run(connect_demo_account(settings))
        print(instructions(settings, realm_id, account_token))
        while not stop_requested:
            dead = stack.dead()
            if dead:
                print(f"{', '.join(dead)} stopped unexpectedly; see var/<name>.log. Stopping everything.")
                break
            time.sleep(0.5)
    finally:
        print("\nStopping...")
        stack.stop()
        print("Stopped.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

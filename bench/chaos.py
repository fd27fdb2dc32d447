"""`python -m bench.chaos` (`make chaos`): nothing is lost when workers crash, servers restart and Intuit fails.

Starts everything as separate processes on 127.0.0.1: a PostgreSQL cluster of its own (initdb into a temporary
directory, so it can be restarted), the Temporal dev server kept in a file (restarted on the same port and file),
the QuickBooks emulator at Intuit's limits, several API processes and worker processes. Two accounts connect to
two companies through the real OAuth flow, then invoices are sent through the API processes in turn while:

- a random worker is killed with SIGKILL every `--kill-every` seconds, and a new one starts in its place;
- the Temporal dev server and PostgreSQL are each stopped and started again (PostgreSQL without a clean shutdown);
- the emulator answers a share of Accounting API calls with 5xx (before or after doing the call), too late for the
  engine's timeout (idem), or by dropping the connection (idem), and drops a share of its webhook events;
- payments are recorded in QuickBooks (the emulator's admin API, i.e. the company's user) for some invoices as soon
  as they are there.

Then the faults are cleared, and the run waits (bounded) until everything settled: an invoice whose sync failed
after its automatic retries is retried by hand, as its user would on the notification. It checks that every
invoice is in QuickBooks exactly once (by DocNumber), every platform invoice is `synced` or `paid` as QuickBooks'
balance says, every payment reached its invoice, and no 429 came from the emulator beyond those injected. It prints
the counts and the durations (stdout, Markdown), and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.harness import (
    API_TOKEN,
    Child,
    Database,
    Stack,
    log,
    start_child,
    start_emulator,
    start_temporal,
    wait_until_serving,
)
from models.db import migrate
from models.domain import InvoiceStatus
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTING_PATHS = "/v3/company/"
SETTLED_STATUSES = frozenset({InvoiceStatus.SYNCED.value, InvoiceStatus.PAID.value})
# How often the run looks at QuickBooks and the platform while it waits (each look reads every invoice).
POLL_SECONDS = 3.0
# The longest one send is retried (503 or no answer while PostgreSQL or Temporal is away) before the run gives up.
SEND_RETRY_BOUND = 300.0


@dataclass(frozen=True)
class ChaosOptions:
    invoices: int = 1000
    clients: int = 100
    companies: int = 2
    workers: int = 3
    apis: int = 2
    paid: int = 200
    kill_every: float = 15.0
    # At most this many kills (None: one every `kill_every` while the chaos lasts).
    max_kills: int | None = None
    temporal_restart_at: float | None = 40.0
    postgres_restart_at: float | None = 80.0
    # How long each restarted server stays away.
    outage_seconds: float = 5.0
    fault_rate: float = 0.2
    webhook_drop_rate: float = 0.2
    seed: int = 1
    # The chaos lasts at least this long, and at most `chaos_max_seconds` (then it stops whatever is left).
    chaos_min_seconds: float = 0.0
    chaos_max_seconds: float = 900.0
    settle_within: float = 900.0
    send_concurrency: int = 20
    # The engine's QuickBooks timeout; injected late answers come 1.6 times later.
    engine_timeout_seconds: float = 5.0
    # The change sweep catches what dropped webhooks did not say; shipped every 15 minutes.
    sweep_interval_seconds: int = 60
    keep_logs: bool = False


# --- PostgreSQL of the run's own -----------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl: PG_BIN, the newest /usr/lib/postgresql/*/bin, or the PATH's."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name or 0))
    if candidates and (candidates[-1] / "pg_ctl").exists():
        return candidates[-1]
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


@dataclass
class OwnPostgres:
    """A cluster in a temporary directory on a free port of 127.0.0.1, run as `postgres` when we are root."""

    bin_dir: Path
    directory: Path
    port: int = field(default_factory=free_port)
    restarts: int = 0

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def server_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        full = [str(self.bin_dir / command[0]), *command[1:]]
        if os.geteuid() == 0:
            full = ["runuser", "-u", "postgres", "--", *full]
        result = subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr[-2000:]}")

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        # The OS never crashes here, only PostgreSQL, so what PostgreSQL handed to the OS survives without fsync
        # (and runs faster). Commits stay synchronous: with `synchronous_commit = off` a commit is acknowledged
        # before its WAL leaves PostgreSQL's own buffers, and the immediate restart lost one (an invoice the
        # workflow had recorded `synced` read `pending` for ever) — a loss no production setting allows.
        options = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.directory}'",
            "max_connections = 300",
            "fsync = off",
            "full_page_writes = off",
        ]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(options) + "\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "postgres.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    async def restart(self, outage: float) -> None:
        """Stopped without a clean shutdown (`-m immediate`: crash recovery at the start), away `outage` s."""
        await asyncio.to_thread(self.stop, "immediate")
        await asyncio.sleep(outage)
        await asyncio.to_thread(self.start)
        self.restarts += 1

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl); set PG_BIN")
    cluster = OwnPostgres(bin_dir=bin_dir, directory=Path(tempfile.mkdtemp(prefix="qbo-sync-chaos-pg-")))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


# --- The run -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What happened during the run, counted as it happens."""

    kills: int = 0
    worker_exits: int = 0
    temporal_restarts: int = 0
    postgres_restarts: int = 0
    send_retries: Counter[str] = field(default_factory=Counter)
    payments_during_chaos: int = 0
    payments_after_chaos: int = 0
    manual_retries: int = 0
    retried_invoices: set[str] = field(default_factory=set)
    timeline: list[str] = field(default_factory=list)

    def note(self, started: float, what: str) -> None:
        line = f"{time.monotonic() - started:6.1f} s  {what}"
        self.timeline.append(line)
        log(what)


@dataclass
class ChaosReport:
    options: ChaosOptions
    counts: dict[str, Any]
    durations: dict[str, float]
    failures: list[str]
    timeline: list[str]
    # What was still not as it must end when the wait was over (each invoice once, synced or paid as QuickBooks says).
    unsettled: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def markdown(self) -> str:
        rows = [("duration, in all", f"{self.durations['total']:.0f} s")]
        rows += [
            (f"duration, {name}", f"{seconds:.0f} s")
            for name, seconds in self.durations.items()
            if name != "total"
        ]
        rows += [(name, _cell(value)) for name, value in self.counts.items()]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'what':<{width}} | figure |", f"|{'-' * (width + 2)}|--------|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
        verdict = (
            "all checks passed" if self.passed else "FAILED:\n" + "\n".join(f"- {f}" for f in self.failures)
        )
        return "\n".join(lines) + "\n\n" + verdict


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {count}" for key, count in value.items()) or "none"
    return str(value)


def fault_specs(rate: float, engine_timeout: float) -> list[dict[str, Any]]:
    """Accounting API faults that add up to `rate` of the calls, by what the engine meets."""
    late = int(engine_timeout * 1000 * 1.6)
    shares: list[tuple[dict[str, Any], float]] = [
        ({"status": 500, "apply": "before"}, 0.30),  # refused, nothing done
        ({"status": 503, "apply": "after"}, 0.25),  # done and committed, answered 503
        (
            {"status": 504, "apply": "after", "latency_ms": late},
            0.15,
        ),  # done, the answer too late (a timeout)
        ({"status": 504, "apply": "before", "latency_ms": late}, 0.10),  # a timeout, nothing done
        ({"drop_connection": True, "apply": "after"}, 0.10),  # done, the connection dropped
        ({"drop_connection": True, "apply": "before"}, 0.10),  # the connection dropped, nothing done
    ]
    return [
        {"kind": "http", "path_contains": ACCOUNTING_PATHS, "rate": rate * share, **spec}
        for spec, share in shares
    ]


@dataclass
class Company:
    account_id: str
    realm_id: str


@dataclass
class Planned:
    invoice_id: str
    number: str
    company: Company
    payload: dict[str, Any]


def plan_invoices(options: ChaosOptions, companies: Sequence[Company]) -> list[Planned]:
    planned = []
    for n in range(options.invoices):
        client = n % options.clients
        company = companies[n % len(companies)]
        cents = 10_000 + (n % 17) * 1_250
        planned.append(
            Planned(
                invoice_id=f"chaos-{n:05d}",
                number=f"CH-{n:05d}",
                company=company,
                payload={
                    "number": f"CH-{n:05d}",
                    "client": {
                        "name": f"Chaos Client {client:03d}",
                        "email": f"chaos.client{client:03d}@example.com",
                    },
                    "currency": "USD",
                    "issue_date": "2026-11-24",
                    "due_date": "2026-12-24",
                    "lines": [
                        {"description": "Consulting", "quantity": "2", "unit_price_cents": cents},
                        {"description": "Expenses", "quantity": "1", "unit_price_cents": 4_550},
                    ],
                },
            )
        )
    return planned


class ChaosRun:
    """The processes of one run and what it does to them."""

    def __init__(
        self, options: ChaosOptions, workdir: Path, postgres: OwnPostgres, database_url: str
    ) -> None:
        self.options = options
        self.workdir = workdir
        self.postgres = postgres
        self.database_url = database_url
        self.random = random.Random(options.seed)
        self.tally = Tally()
        self.started = time.monotonic()
        self.temporal_port = free_port()
        self.temporal_db = str(workdir / "temporal.db")
        self.stack: Stack | None = None
        self.apis: list[httpx.AsyncClient] = []
        self.api_children: list[Child] = []
        self.workers: list[Child] = []
        self._worker_names = 0
        self.chaos_over = asyncio.Event()
        # Invoices retried by hand, with the `updated_at` they had then.
        self._retried: dict[str, str] = {}

    # --- starting and stopping -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Stack]:
        env = await start_temporal(port=self.temporal_port, db_file=self.temporal_db)
        api_ports = [free_port() for _ in range(self.options.apis)]
        emulator_port = free_port()
        api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        self.apis = [
            httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) for url in api_urls
        ]
        admin = httpx.AsyncClient(base_url=emulator_url, timeout=60)
        database = Database(self.database_url, f"PostgreSQL of the run's own on port {self.postgres.port}")
        # The platform reaches the APIs behind one name (the first's); each serves any account.
        stack = Stack(self.workdir, database, env, emulator_url, api_urls[0], self.apis[0], admin, [])
        self.stack = stack
        try:
            stack.children.append(
                await start_emulator(
                    self.workdir,
                    port=emulator_port,
                    api_url=api_urls[0],
                    extra_args=["--fault-seed", str(self.options.seed)],
                )
            )
            for n, (port, url) in enumerate(zip(api_ports, api_urls, strict=True), start=1):
                server = start_child(
                    f"api-{n}",
                    [
                        sys.executable, "-m", "uvicorn", "api.main:app",
                        "--host", "127.0.0.1", "--port", str(port),
                        "--log-level", "warning", "--no-access-log",
                    ],
                    self.workdir,
                    self.engine_env(),
                )  # fmt: skip
                stack.children.append(server)
                self.api_children.append(server)
                await wait_until_serving(server, f"{url}/healthz")
            for _ in range(self.options.workers):
                self.start_worker()
            await self.workers_polling()
            yield stack
        finally:
            for client in self.apis:
                await client.aclose()
            await admin.aclose()
            for child in [*self.workers, *reversed(stack.children)]:
                await asyncio.to_thread(child.stop)
            with contextlib.suppress(Exception):
                await stack.env.shutdown()

    def engine_env(self) -> dict[str, str]:
        assert self.stack is not None
        return {
            **self.stack.engine_env(),
            "QBO_REQUEST_TIMEOUT_SECONDS": str(self.options.engine_timeout_seconds),
            "CDC_SWEEP_INTERVAL_SECONDS": str(self.options.sweep_interval_seconds),
            # A machine this loaded may take a while to adopt a new authorization (the tests' value).
            "OAUTH_ADOPTION_WAIT_SECONDS": "30",
        }

    def start_worker(self) -> Child:
        self._worker_names += 1
        child = start_child(
            f"worker-{self._worker_names}",
            [sys.executable, str(ROOT / "worker.py")],
            self.workdir,
            self.engine_env(),
        )
        self.workers.append(child)
        return child

    async def workers_polling(self, within: float = 120.0) -> None:
        """Until every worker says it polls (so that connecting is adopted at once)."""
        deadline = time.monotonic() + within
        while not all("worker polling" in w.log_path.read_text(errors="replace") for w in self.workers):
            for worker in self.workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not start polling within {within:.0f} s")
            await asyncio.sleep(0.2)

    def check_alive(self) -> None:
        """The emulator and the APIs must live; a worker that exits on its own is counted and replaced."""
        for child in self.api_children + (self.stack.children[:1] if self.stack else []):
            child.check_alive()
        for worker in list(self.workers):
            if worker.process.poll() is not None:
                self.workers.remove(worker)
                self.tally.worker_exits += 1
                self.tally.note(
                    self.started, f"{worker.name} exited on its own ({worker.process.returncode})"
                )
                self.start_worker()

    # --- chaos -----------------------------------------------------------------------------------------------

    async def kill_workers(self) -> None:
        while not self.chaos_over.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.chaos_over.wait(), timeout=self.options.kill_every)
                return
            if self.options.max_kills is not None and self.tally.kills >= self.options.max_kills:
                continue
            victim = self.random.choice(self.workers)
            victim.process.kill()
            await asyncio.to_thread(victim.process.wait)
            self.workers.remove(victim)
            self.tally.kills += 1
            replacement = self.start_worker()
            self.tally.note(self.started, f"kill -9 {victim.name}; {replacement.name} starts")

    async def restart_servers(self) -> None:
        plan: list[tuple[float, str]] = []
        if self.options.temporal_restart_at is not None:
            plan.append((self.options.temporal_restart_at, "temporal"))
        if self.options.postgres_restart_at is not None:
            plan.append((self.options.postgres_restart_at, "postgres"))
        chaos_started = time.monotonic()
        for at, server in sorted(plan):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.chaos_over.wait(), timeout=max(0.0, at - (time.monotonic() - chaos_started))
                )
                return
            if server == "temporal":
                await self.restart_temporal()
            else:
                self.tally.note(self.started, "PostgreSQL stops (immediate)")
                await self.postgres.restart(self.options.outage_seconds)
                self.tally.postgres_restarts += 1
                self.tally.note(self.started, "PostgreSQL is back")

    async def restart_temporal(self) -> None:
        assert self.stack is not None
        self.tally.note(self.started, "the Temporal dev server stops")
        await self.stack.env.shutdown()
        await asyncio.sleep(self.options.outage_seconds)
        self.stack.env = await start_temporal(port=self.temporal_port, db_file=self.temporal_db)
        self.tally.temporal_restarts += 1
        self.tally.note(self.started, "the Temporal dev server is back (same port, same file)")

    def restarts_done(self) -> bool:
        o = self.options
        return (o.temporal_restart_at is None or self.tally.temporal_restarts >= 1) and (
            o.postgres_restart_at is None or self.tally.postgres_restarts >= 1
        )

    # --- the platform and the company's user --------------------------------------------------------------

    async def send(self, n: int, planned: Planned) -> None:
        # Each company's invoices go through every API process in turn.
        api = self.apis[(n // self.options.companies) % len(self.apis)]
        url = f"/v1/accounts/{planned.company.account_id}/invoices/{planned.invoice_id}/send"
        deadline = time.monotonic() + SEND_RETRY_BOUND
        delay = 0.5
        while True:
            try:
                response = await api.post(url, json=planned.payload)
            except httpx.TransportError as exc:
                problem = type(exc).__name__
            else:
                if response.status_code == 202:
                    return
                if response.status_code < 500:
                    raise RuntimeError(
                        f"sending {planned.invoice_id}: {response.status_code} {response.text[:300]}"
                    )
                problem = str(response.status_code)
            # What the platform does: the send is idempotent by invoice id, so it is sent again.
            self.tally.send_retries[problem] += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"sending {planned.invoice_id} kept failing ({problem})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def send_all(self, planned: Sequence[Planned]) -> None:
        gate = asyncio.Semaphore(self.options.send_concurrency)

        async def one(n: int, item: Planned) -> None:
            async with gate:
                await self.send(n, item)

        await asyncio.gather(*(one(n, item) for n, item in enumerate(planned)))

    async def in_quickbooks(self, companies: Sequence[Company]) -> dict[str, list[dict[str, Any]]]:
        """QuickBooks' invoices by DocNumber, of every company."""
        assert self.stack is not None
        found: dict[str, list[dict[str, Any]]] = {}
        for company in companies:
            for invoice in (await self.stack.company(company.realm_id))["invoices"]:
                found.setdefault(str(invoice.get("DocNumber")), []).append(
                    {**invoice, "realm_id": company.realm_id}
                )
        return found

    async def record_payments(
        self, to_pay: Sequence[Planned], companies: Sequence[Company], within: float
    ) -> None:
        """Pay each invoice in full in QuickBooks as soon as it is there (the company's user recording a payment)."""
        assert self.stack is not None
        waiting = {item.number: item for item in to_pay}
        deadline = time.monotonic() + within
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} invoices to pay never appeared in QuickBooks")
            present = await self.in_quickbooks(companies)
            for number in [number for number in waiting if number in present]:
                invoice = min(present[number], key=lambda row: int(row["Id"]))
                await self.stack.pay_in_quickbooks(invoice["realm_id"], str(invoice["Id"]))
                del waiting[number]
                if self.chaos_over.is_set():
                    self.tally.payments_after_chaos += 1
                else:
                    self.tally.payments_during_chaos += 1
            await asyncio.sleep(POLL_SECONDS)
        self.tally.note(self.started, "every payment is recorded in QuickBooks")

    async def platform_invoices(self, companies: Sequence[Company]) -> dict[str, dict[str, Any]]:
        assert self.stack is not None
        found: dict[str, dict[str, Any]] = {}
        for company in companies:
            for invoice in await self.stack.invoices(company.account_id):
                found[str(invoice["invoice_id"])] = invoice
        return found

    async def retry_failed(self, invoices: dict[str, dict[str, Any]], planned: Sequence[Planned]) -> None:
        """What the user does on a `sync_failed` notification: Retry (once per failure, not per look)."""
        by_id = {item.invoice_id: item for item in planned}
        for invoice_id, invoice in invoices.items():
            if invoice["status"] != InvoiceStatus.FAILED.value:
                continue
            if self._retried.get(invoice_id) == invoice["updated_at"]:
                continue  # retried already; the workflow has not taken it up yet
            account = by_id[invoice_id].company.account_id
            with contextlib.suppress(httpx.TransportError):
                response = await self.apis[0].post(
                    f"/v1/accounts/{account}/invoices/{invoice_id}/quickbooks/retry"
                )
                if response.status_code in (200, 202):
                    self._retried[invoice_id] = invoice["updated_at"]
                    self.tally.manual_retries += 1
                    self.tally.retried_invoices.add(invoice_id)
                    self.tally.note(self.started, f"{invoice_id} failed after its retries; retried by hand")


def mismatches(
    planned: Sequence[Planned],
    invoices: dict[str, dict[str, Any]],
    quickbooks: dict[str, list[dict[str, Any]]],
) -> list[str]:
    """What is not (yet) as it must end: each invoice once in QuickBooks, synced or paid as its balance says."""
    problems = []
    expected = {item.number for item in planned}
    for item in planned:
        rows = [row for row in quickbooks.get(item.number, []) if row["realm_id"] == item.company.realm_id]
        platform = invoices.get(item.invoice_id)
        if len(rows) != 1:
            problems.append(f"{item.number} is {len(rows)} times in QuickBooks")
            continue
        if platform is None:
            problems.append(f"{item.invoice_id} is unknown to the platform")
            continue
        want = InvoiceStatus.PAID.value if float(rows[0]["Balance"]) == 0 else InvoiceStatus.SYNCED.value
        if platform["status"] != want:
            problems.append(f"{item.invoice_id} is {platform['status']}, QuickBooks says {want}")
        elif platform["quickbooks"]["invoice_id"] != str(rows[0]["Id"]):
            problems.append(
                f"{item.invoice_id} points at QuickBooks invoice {platform['quickbooks']['invoice_id']}"
            )
    problems += [f"{number} in QuickBooks was never sent" for number in quickbooks if number not in expected]
    return problems


async def run_chaos(options: ChaosOptions, workdir: Path | None = None) -> ChaosReport:
    """One whole run; every process and directory it made is gone when it returns (or raises)."""
    began = time.monotonic()
    own_dir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="qbo-sync-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        with own_postgres() as postgres:
            database_url = postgres.create_database("qbo_sync")
            await asyncio.to_thread(migrate, database_url)
            run = ChaosRun(options, workdir, postgres, database_url)
            async with run.running() as stack:
                report = await _run(run, stack, began)
        failed = not report.passed
        return report
    finally:
        if failed or options.keep_logs or not own_dir:
            log(f"process logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _run(run: ChaosRun, stack: Stack, began: float) -> ChaosReport:
    options = run.options
    tally = run.tally
    companies = []
    for n in range(options.companies):
        account_id, realm_id = await stack.connected_account(f"chaos-{n + 1}")
        companies.append(Company(account_id, realm_id))
    planned = plan_invoices(options, companies)
    to_pay = run.random.sample(planned, min(options.paid, len(planned)))
    setup_seconds = time.monotonic() - began
    tally.note(run.started, f"{len(companies)} companies connected; chaos begins")

    (await stack.admin.put("/__admin/faults/seed", json={"seed": options.seed})).raise_for_status()
    for spec in fault_specs(options.fault_rate, options.engine_timeout_seconds):
        (await stack.admin.post("/__admin/faults", json=spec)).raise_for_status()
    if options.webhook_drop_rate > 0:
        drop = {"kind": "webhook_drop", "rate": options.webhook_drop_rate}
        (await stack.admin.post("/__admin/faults", json=drop)).raise_for_status()

    chaos_started = time.monotonic()
    sending = asyncio.create_task(run.send_all(planned))
    paying = asyncio.create_task(
        run.record_payments(to_pay, companies, options.chaos_max_seconds + options.settle_within)
    )
    chaos = [asyncio.create_task(run.kill_workers()), asyncio.create_task(run.restart_servers())]
    seen_all = False
    try:
        while True:
            run.check_alive()
            for task in (sending, paying, *chaos):
                if task.done() and task.exception() is not None:
                    task.result()
            elapsed = time.monotonic() - chaos_started
            # The user retries a sync that failed after its automatic retries, as its notification offers.
            with contextlib.suppress(httpx.HTTPError):
                await run.retry_failed(await run.platform_invoices(companies), planned)
            present = await run.in_quickbooks(companies)
            all_there = all(item.number in present for item in planned)
            if all_there and not seen_all:
                seen_all = True
                tally.note(run.started, "every invoice is in QuickBooks")
            enough = (
                sending.done()
                and paying.done()
                and all_there
                and run.restarts_done()
                and (options.max_kills is None or tally.kills >= options.max_kills)
                and elapsed >= options.chaos_min_seconds
            )
            if enough or elapsed > options.chaos_max_seconds:
                break
            await asyncio.sleep(POLL_SECONDS)
        run.chaos_over.set()
        chaos_seconds = time.monotonic() - chaos_started
        (await stack.admin.delete("/__admin/faults")).raise_for_status()
        tally.note(run.started, "chaos over: faults cleared, no more kills")
        await asyncio.gather(*chaos)
        await sending

        settle_started = time.monotonic()
        problems: list[str] = ["not looked yet"]
        while problems:
            run.check_alive()
            if paying.done():
                paying.result()
            invoices = await run.platform_invoices(companies)
            await run.retry_failed(invoices, planned)
            quickbooks = await run.in_quickbooks(companies)
            problems = mismatches(planned, invoices, quickbooks)
            if not paying.done():
                problems.append("payments still to record")
            if not problems and await stack.webhooks_in_flight() + await stack.pending_events() > 0:
                problems.append("webhooks or events still in flight")
            if problems and time.monotonic() - settle_started > options.settle_within:
                break
            if problems:
                await asyncio.sleep(POLL_SECONDS)
        settle_seconds = time.monotonic() - settle_started
    finally:
        run.chaos_over.set()
        for task in (sending, paying, *chaos):
            task.cancel()
        await asyncio.gather(sending, paying, *chaos, return_exceptions=True)
    tally.note(
        run.started, "settled" if not problems else f"not settled within {options.settle_within:.0f} s"
    )
    return await _report(run, stack, planned, to_pay, companies, problems, setup_seconds, chaos_seconds,
                         settle_seconds, began)  # fmt: skip


async def _report(
    run: ChaosRun,
    stack: Stack,
    planned: Sequence[Planned],
    to_pay: Sequence[Planned],
    companies: Sequence[Company],
    problems: list[str],
    setup_seconds: float,
    chaos_seconds: float,
    settle_seconds: float,
    began: float,
) -> ChaosReport:
    tally = run.tally
    invoices = await run.platform_invoices(companies)
    quickbooks = await run.in_quickbooks(companies)
    ours = {item.number for item in planned}
    rows = [row for number, found in quickbooks.items() if number in ours for row in found]
    duplicates = sum(
        len(found) - 1 for number, found in quickbooks.items() if number in ours and len(found) > 1
    )
    statuses = Counter(str(invoice["status"]) for invoice in invoices.values())
    reached = 0
    for item in to_pay:
        platform = invoices.get(item.invoice_id, {})
        in_qbo = quickbooks.get(item.number, [])
        if platform.get("status") == InvoiceStatus.PAID.value and in_qbo and float(in_qbo[0]["Balance"]) == 0:
            reached += 1
    faults = (await stack.admin.get("/__admin/faults")).json()
    throttled = calls = 0
    for company in companies:
        answer = await stack.admin.get("/__admin/requests/totals", params={"realm_id": company.realm_id})
        totals = answer.json()["totals"]
        throttled += int(totals.get("throttled_not_injected", 0))
        calls += int(totals.get("requests", 0))
    peaks = await _peak_in_flight(stack, companies)
    metrics = (await stack.api.get("/metrics")).text
    parked = re.search(r'^qbo_sync_quickbooks_events\{status="failed"\} (\S+)$', metrics, re.M)
    injected = dict(faults.get("injected", {}))
    counts: dict[str, Any] = {
        "invoices sent": len(planned),
        "companies / clients": f"{len(companies)} / {run.options.clients}",
        "API processes / workers": f"{run.options.apis} / {run.options.workers}",
        "in QuickBooks (distinct DocNumbers)": sum(1 for number in ours if number in quickbooks),
        "duplicates in QuickBooks": duplicates,
        "QuickBooks invoices of ours": len(rows),
        "platform statuses": dict(sorted(statuses.items())),
        "payments recorded (during chaos / after)": f"{len(to_pay)} ({tally.payments_during_chaos} / "
        f"{tally.payments_after_chaos})",
        "payments reached their invoice": reached,
        "Accounting API calls (both companies)": calls,
        "faults injected (API calls)": sum(v for k, v in injected.items() if not k.startswith("webhook")),
        "faults by effect": injected,
        "QuickBooks events parked as failed": int(float(parked.group(1))) if parked else 0,
        "worker kills (kill -9)": tally.kills,
        "workers that exited on their own": tally.worker_exits,
        "Temporal dev server restarts": tally.temporal_restarts,
        "PostgreSQL restarts (immediate)": tally.postgres_restarts,
        "sends retried by the platform": dict(tally.send_retries) or 0,
        "syncs failed after 4 attempts, retried by hand (invoices)": f"{tally.manual_retries} "
        f"({len(tally.retried_invoices)})",
        "429s not injected": throttled,
    }
    if peaks:
        counts["most calls in flight at once (emulator)"] = peaks
    failures = list(problems[:20])
    if len(problems) > 20:
        failures.append(f"... and {len(problems) - 20} more")
    if duplicates:
        failures.append(f"{duplicates} duplicate invoices in QuickBooks")
    if reached != len(to_pay):
        failures.append(f"{len(to_pay) - reached} payments did not reach their invoice")
    if throttled:
        failures.append(f"{throttled} 429s from QuickBooks that were not injected")
    durations = {
        "total": time.monotonic() - began,
        "setup": setup_seconds,
        "chaos": chaos_seconds,
        "settling after the chaos": settle_seconds,
    }
    return ChaosReport(run.options, counts, durations, failures, tally.timeline, problems)


async def _peak_in_flight(stack: Stack, companies: Sequence[Company]) -> dict[str, int]:
    """`max_in_flight_seen` per company, where the emulator reports it."""
    realms = (await stack.admin.get("/__admin/throttle")).json().get("realms", {})
    peaks = {}
    for n, company in enumerate(companies, start=1):
        seen = realms.get(company.realm_id, {}).get("max_in_flight_seen")
        if seen is not None:
            peaks[f"company {n}"] = int(seen)
    return peaks


# --- Command line --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[ChaosOptions, Path | None]:
    defaults = ChaosOptions()
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--invoices", type=int, default=defaults.invoices)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--companies", type=int, default=defaults.companies)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--apis", type=int, default=defaults.apis)
    parser.add_argument(
        "--paid", type=int, default=defaults.paid, help="invoices paid in QuickBooks meanwhile"
    )
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every, metavar="SECONDS")
    parser.add_argument("--max-kills", type=int, default=None)
    parser.add_argument("--temporal-restart-at", type=float, default=defaults.temporal_restart_at,
                        metavar="SECONDS", help="seconds into the chaos (negative: never)")  # fmt: skip
    parser.add_argument("--postgres-restart-at", type=float, default=defaults.postgres_restart_at,
                        metavar="SECONDS", help="seconds into the chaos (negative: never)")  # fmt: skip
    parser.add_argument("--outage", type=float, default=defaults.outage_seconds, metavar="SECONDS")
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--webhook-drop-rate", type=float, default=defaults.webhook_drop_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--chaos-min", type=float, default=defaults.chaos_min_seconds, metavar="SECONDS")
    parser.add_argument("--chaos-max", type=float, default=defaults.chaos_max_seconds, metavar="SECONDS")
    parser.add_argument("--settle-within", type=float, default=defaults.settle_within, metavar="SECONDS")
    parser.add_argument(
        "--sweep-interval", type=int, default=defaults.sweep_interval_seconds, metavar="SECONDS"
    )
    parser.add_argument(
        "--engine-timeout", type=float, default=defaults.engine_timeout_seconds, metavar="SECONDS"
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args(list(argv))
    options = ChaosOptions(
        invoices=args.invoices,
        clients=args.clients,
        companies=args.companies,
        workers=args.workers,
        apis=args.apis,
        paid=args.paid,
        kill_every=args.kill_every,
        max_kills=args.max_kills,
        temporal_restart_at=None if args.temporal_restart_at < 0 else args.temporal_restart_at,
        postgres_restart_at=None if args.postgres_restart_at < 0 else args.postgres_restart_at,
        outage_seconds=args.outage,
        fault_rate=args.fault_rate,
        webhook_drop_rate=args.webhook_drop_rate,
        seed=args.seed,
        chaos_min_seconds=args.chaos_min,
        chaos_max_seconds=args.chaos_max,
        settle_within=args.settle_within,
        sweep_interval_seconds=args.sweep_interval,
        engine_timeout_seconds=args.engine_timeout,
        keep_logs=args.keep_logs,
    )
    return options, args.json


async def _run_until_terminated(options: ChaosOptions) -> ChaosReport:
    """The run, cancelled by SIGTERM like by Ctrl-C, so that it still stops and removes what it started."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_chaos(options)


def main(argv: Sequence[str] | None = None) -> int:
    options, json_path = parse_args(sys.argv[1:] if argv is None else argv)
    report = asyncio.run(_run_until_terminated(options))
    print("## Chaos run\n")
    print(report.markdown())
    print("\nTimeline:\n")
    print("\n".join(f"    {line}" for line in report.timeline))
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(report), indent=2, default=str))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

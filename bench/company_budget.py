"""The shared company budget (qbo/company_budget.py): what it costs per call, and one company's throughput with
1, 2 and 3 worker processes at Intuit's limits.

Cost: `RealmLimiter.slot()` entered and left N times, by 1 caller and by 10 at once, with the process's own
limiter only (the baseline, as before the shared budget) and with the shared budget (as shipped on PostgreSQL),
interleaved. Per call: latency; the CPU time of the PostgreSQL backend that serves the budget's connection
(from /proc); WAL written (the log is UNLOGGED; the server's WAL position, so other users of the server count).

Throughput: one Premium account connected to a new company, N invoices over C clients, 50 sends in flight, the
emulator at Intuit's limits (500 a minute, 10 in flight), with 1, 2 and 3 worker processes as shipped, and 3
workers that each keep the limits alone (`bench.limited_worker --process-only`: the engine before the budget).
Per run: invoices/s, the most calls the company had under way at once (the emulator's `max_in_flight_seen`),
429s, served calls a minute, against Intuit's ceiling of 500 a minute.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import (
    INTUIT_LIMITS,
    THROTTLED,
    Stack,
    bounded,
    log,
    median,
    percentile,
    summarize_calls,
)
from bench.workload import client_of, invoice_number, send_payload
from models.db import libpq_conninfo
from qbo.company_budget import PostgresCompanyBudget, company_limiter
from qbo.limits import RealmLimiter

COST_CALLS = 2000
COST_CONCURRENCY = 10
SYNC_TIMEOUT = 900.0
WORKER_COUNTS = (1, 2, 3)


@dataclass
class CostRun:
    mode: str
    callers: int
    latencies: list[float]
    backend_cpu_seconds: float | None
    wal_bytes: int | None

    @property
    def calls(self) -> int:
        return len(self.latencies)


@dataclass
class ThroughputRun:
    workers: int
    process_only: bool
    invoices: int
    seconds: float
    calls: dict[str, int]
    max_in_flight_seen: int
    # The most calls QuickBooks served in any 60 s of the run (Intuit's ceiling: 500).
    peak_minute: int = 0

    @property
    def served(self) -> int:
        return sum(count for kind, count in self.calls.items() if kind != THROTTLED)

    @property
    def throttled(self) -> int:
        return self.calls.get(THROTTLED, 0)

    @property
    def per_second(self) -> float:
        return self.invoices / self.seconds

    @property
    def calls_per_minute(self) -> float:
        return self.served / self.seconds * 60


@dataclass
class CompanyBudgetResult:
    cost: list[CostRun] = field(default_factory=list)
    throughput: list[ThroughputRun] = field(default_factory=list)
    invoices: int = 0
    clients: int = 0


# --- cost per call ------------------------------------------------------------------------------------------


def _backend_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # another host's server, or not Linux
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def _wal_position(conninfo: str) -> int | None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        return int(row[0]) if row else None


async def _cost_run(limiter: RealmLimiter, mode: str, callers: int, calls: int, conninfo: str) -> CostRun:
    realm = f"9{time.monotonic_ns() % 10**14}"
    latencies: list[float] = []
    # Warm up: the first call opens the budget's connections.
    async with limiter.slot(realm):
        pass
    backend = _backend_pid(limiter)
    cpu_before = _backend_cpu(backend)
    wal_before = await asyncio.to_thread(_wal_position, conninfo)

    async def caller(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            async with limiter.slot(realm):
                pass
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller(calls // callers) for _ in range(callers)))
    cpu_after = _backend_cpu(backend)
    wal_after = await asyncio.to_thread(_wal_position, conninfo)
    return CostRun(
        mode,
        callers,
        latencies,
        None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        None if wal_before is None or wal_after is None else wal_after - wal_before,
    )


def _backend_pid(limiter: RealmLimiter) -> int | None:
    shared = limiter.shared
    return shared.backend_pid if isinstance(shared, PostgresCompanyBudget) else None


async def measure_cost(database_url: str, *, repeat: int, calls: int = COST_CALLS) -> list[CostRun]:
    conninfo = libpq_conninfo(database_url)
    if conninfo is None:
        log("company budget: no PostgreSQL, so no shared budget to measure")
        return []
    runs: list[CostRun] = []
    # A per-minute budget no run reaches, so that only the cost is measured.
    limits = {"max_in_flight": COST_CONCURRENCY, "per_minute": 10 * calls * repeat}
    for attempt in range(1, repeat + 1):
        for callers in (1, COST_CONCURRENCY):
            for mode in ("process only", "shared budget"):
                limiter = company_limiter(None if mode == "process only" else conninfo, **limits)
                try:
                    run = await _cost_run(limiter, mode, callers, calls, conninfo)
                finally:
                    await limiter.aclose()
                runs.append(run)
                log(
                    f"company budget cost {attempt}/{repeat}: {mode}, {callers} caller(s): median "
                    f"{median(run.latencies) * 1e6:.0f} us per call"
                )
    return runs


# --- throughput with several workers ------------------------------------------------------------------------


async def _throughput_run(
    stack: Stack, workers: int, *, process_only: bool, invoices: int, clients: int, concurrency: int
) -> ThroughputRun:
    async with stack.running_workers(workers, process_only=process_only):
        account_id, realm_id = await stack.connected_account(f"budget{workers}")
        after_seq = await stack.last_seq(realm_id)

        async def send(index: int) -> None:
            name, email = client_of(index, clients)
            payload = send_payload(invoice_number("B", index), name, email)
            await stack.send_invoice(account_id, f"inv-{index:05d}", payload)

        started = time.monotonic()
        sending = asyncio.create_task(bounded(concurrency, [partial(send, i) for i in range(invoices)]))
        seconds = await stack.synced_while_sending(
            account_id, invoices, sending, started=started, within=SYNC_TIMEOUT
        )
        entries = await stack.qbo_requests(realm_id, after_seq)
        calls = summarize_calls(entries)
        throttle = (await stack.admin.get("/__admin/throttle")).json()["realms"].get(realm_id, {})
        await stack.settle()
    return ThroughputRun(
        workers,
        process_only,
        invoices,
        seconds,
        calls,
        int(throttle.get("max_in_flight_seen", 0)),
        peak_minute=_peak_minute(entries),
    )


def _peak_minute(entries: list[dict[str, Any]]) -> int:
    """The most served calls in any 60 s, by the emulator's clock of each call."""
    stamps = sorted(
        datetime.fromisoformat(str(entry["time"])).timestamp()
        for entry in entries
        if entry.get("status") != 429
    )
    peak, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= 60.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


async def measure_throughput(
    stack: Stack, *, repeat: int, invoices: int, clients: int, concurrency: int
) -> list[ThroughputRun]:
    await stack.set_emulator_limits(INTUIT_LIMITS)
    runs: list[ThroughputRun] = []
    variants = [(count, False) for count in WORKER_COUNTS] + [(WORKER_COUNTS[-1], True)]
    for attempt in range(1, repeat + 1):
        for workers, process_only in variants:
            run = await _throughput_run(
                stack,
                workers,
                process_only=process_only,
                invoices=invoices,
                clients=clients,
                concurrency=concurrency,
            )
            runs.append(run)
            log(
                f"company budget throughput {attempt}/{repeat}: {workers} worker(s)"
                f"{' each alone' if process_only else ''}: {run.per_second:.2f} invoices/s, "
                f"{run.calls_per_minute:.0f} calls/min, {run.peak_minute} in the busiest minute, "
                f"at most {run.max_in_flight_seen} at once, "
                f"{run.throttled} throttled"
            )
    return runs


async def run(
    stack: Stack, *, repeat: int, invoices: int, clients: int, concurrency: int
) -> CompanyBudgetResult:
    cost = await measure_cost(stack.database.url, repeat=repeat)
    throughput = await measure_throughput(
        stack, repeat=repeat, invoices=invoices, clients=clients, concurrency=concurrency
    )
    return CompanyBudgetResult(cost, throughput, invoices, clients)


# --- report -------------------------------------------------------------------------------------------------


def describe(result: CompanyBudgetResult) -> dict[str, Any]:
    return {
        "cost": [
            {
                "mode": run.mode,
                "callers": run.callers,
                "calls": run.calls,
                "median_us": median(run.latencies) * 1e6,
                "p99_us": percentile(run.latencies, 0.99) * 1e6,
                "backend_cpu_us_per_call": None
                if run.backend_cpu_seconds is None
                else run.backend_cpu_seconds / run.calls * 1e6,
                "wal_bytes_per_call": None if run.wal_bytes is None else run.wal_bytes / run.calls,
            }
            for run in result.cost
        ],
        "throughput": [
            {
                "workers": run.workers,
                "process_only": run.process_only,
                "invoices": run.invoices,
                "seconds": run.seconds,
                "per_second": run.per_second,
                "calls_per_minute": run.calls_per_minute,
                "peak_minute": run.peak_minute,
                "max_in_flight_seen": run.max_in_flight_seen,
                "throttled": run.throttled,
                "calls": run.calls,
            }
            for run in result.throughput
        ],
    }


def _spread(values: list[float], digits: int) -> str:
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def markdown(result: CompanyBudgetResult) -> str:
    lines = ["### Shared company budget: cost per call", ""]
    lines.append(
        "`RealmLimiter.slot()` entered and left, no QuickBooks call inside; median (min-max) over the runs of "
        "each run's median latency; CPU of the PostgreSQL backend serving the budget connection per call; WAL "
        "per call (the whole server's)."
    )
    lines.append("")
    lines.append(
        "| callers | process only: us/call | shared budget: us/call | added us/call | shared p99 us "
        "| backend CPU us/call | WAL bytes/call |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for callers in sorted({run.callers for run in result.cost}):
        local = [
            median(r.latencies) * 1e6
            for r in result.cost
            if r.callers == callers and r.mode == "process only"
        ]
        shared_runs = [r for r in result.cost if r.callers == callers and r.mode == "shared budget"]
        shared = [median(r.latencies) * 1e6 for r in shared_runs]
        p99 = [percentile(r.latencies, 0.99) * 1e6 for r in shared_runs]
        cpu = [
            r.backend_cpu_seconds / r.calls * 1e6 for r in shared_runs if r.backend_cpu_seconds is not None
        ]
        wal = [r.wal_bytes / r.calls for r in shared_runs if r.wal_bytes is not None]
        lines.append(
            f"| {callers} | {_spread(local, 1)} | {_spread(shared, 0)} | {median(shared) - median(local):.0f} "
            f"| {median(p99):.0f} | {_spread(cpu, 0) if cpu else '-'} | {_spread(wal, 0) if wal else '-'} |"
        )
    lines += ["", "### Shared company budget: one company, several workers, at Intuit's limits", ""]
    lines.append(
        f"{result.invoices} invoices over {result.clients} clients, 50 sends in flight, emulator at 500 calls a "
        "minute and 10 in flight; median (min-max) of the runs. Intuit's ceiling is 500 calls a minute."
    )
    lines.append("")
    lines.append("| workers | invoices/s | vs 1 worker | served calls/min | most at once | 429s (each run) |")
    lines.append("|---|---|---|---|---|---|")
    single = [r.per_second for r in result.throughput if r.workers == 1 and not r.process_only]
    for workers, process_only in sorted({(r.workers, r.process_only) for r in result.throughput}):
        runs = [r for r in result.throughput if (r.workers, r.process_only) == (workers, process_only)]
        label = f"{workers}, each alone (before)" if process_only else f"{workers}, shared budget"
        ratio = median([r.per_second for r in runs]) / median(single) if single else float("nan")
        lines.append(
            f"| {label} | {_spread([r.per_second for r in runs], 2)} | {ratio:.2f} "
            f"| {_spread([r.calls_per_minute for r in runs], 0)} | {max(r.peak_minute for r in runs)} "
            f"| {max(r.max_in_flight_seen for r in runs)} | {'/'.join(str(r.throttled) for r in runs)} |"
        )
    return "\n".join(lines)

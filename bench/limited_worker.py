"""The engine's worker with its per-company limiter set from the command line (benchmarks only).

`worker.py` builds its `RealmLimiter` with Intuit's limits (10 in flight, 500 a minute per company, each call
counted for 61 s: Intuit's minute and a second's margin). To see how fast the engine itself is once QuickBooks' limits are out of the way, the throughput benchmark
runs this module instead: the same workers from `worker.build_workers`, the same resources, only another limiter.
The Disconnect & Void benchmark runs it with a 60 s window, to show what the margin is for.

    python -m bench.limited_worker --per-minute 100000 --in-flight 1000
    python -m bench.limited_worker --per-minute 500 --in-flight 10 --window-seconds 60
    python -m bench.limited_worker --per-minute 500 --in-flight 10 --process-only

With PostgreSQL the limiter takes a slot of the budget every process shares for each call, as shipped;
`--process-only` leaves that out (the limiter before the shared budget: each process keeps the limits alone).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal

import temporal_support
from logging_setup import configure_logging
from models.db import libpq_conninfo
from qbo.company_budget import company_limiter
from qbo.limits import WINDOW_SECONDS
from settings import get_settings
from worker import build_workers, worker_resources


async def run(per_minute: int, in_flight: int, window_seconds: float, process_only: bool) -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    client = await temporal_support.connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    limiter = company_limiter(
        None if process_only else libpq_conninfo(settings.database_url),
        per_minute=per_minute,
        max_in_flight=in_flight,
        window_seconds=window_seconds,
    )
    async with worker_resources(settings) as shipped:
        resources = dataclasses.replace(shipped, limiter=limiter)
        workers = build_workers(client, settings, resources)
        running = [asyncio.create_task(worker.run()) for worker in workers]
        await asyncio.wait([*running, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*running, return_exceptions=True)
    await limiter.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limited_worker", description=__doc__)
    parser.add_argument("--per-minute", type=int, required=True)
    parser.add_argument("--in-flight", type=int, required=True)
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=WINDOW_SECONDS,
        help=f"how long a call counts (default {WINDOW_SECONDS:g}, as shipped)",
    )
    parser.add_argument(
        "--process-only",
        action="store_true",
        help="no shared budget: this process keeps the limits alone (the engine before the shared budget)",
    )
    args = parser.parse_args()
    asyncio.run(run(args.per_minute, args.in_flight, args.window_seconds, args.process_only))


if __name__ == "__main__":
    main()

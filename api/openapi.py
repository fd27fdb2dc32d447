"""The OpenAPI document: readable operation ids, the project's error shape for every 422, and the outbound events
as OpenAPI 3.1 `webhooks` (one per type, with its payload and the Standard Webhooks headers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import models_json_schema

from models.domain import PLATFORM_EVENT_VERSIONS, InvoiceStatus, PlatformEventType
from models.signing import WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def operation_id(route: APIRoute) -> str:
    """`send_invoice` -> `sendInvoice`: the route function's name, camel-cased (names are unique across routes)."""
    first, *rest = route.name.split("_")
    return first + "".join(part.capitalize() for part in rest)


class InvoiceEventData(BaseModel):
    """`data` of invoice.* events (a type may add fields; `reason` on sync_failed and void_failed)."""

    model_config = ConfigDict(extra="allow")

    number: str
    status: InvoiceStatus
    qbo_invoice_id: str | None = None
    realm_id: str | None = None
    total_cents: int | None = None
    balance_cents: int | None = None
    reason: str | None = Field(default=None, description="What the user is shown (sync_failed, void_failed).")


class ConnectionEventData(BaseModel):
    """`data` of connection.* events."""

    model_config = ConfigDict(extra="allow")

    status: str
    realm_id: str | None = None
    reason: str | None = None
    expires_at: str | None = None
    mode: str | None = None


def _payload_model(event_type: PlatformEventType) -> type[BaseModel]:
    is_invoice = event_type.value.startswith("invoice.")
    name = "".join(part.capitalize() for part in event_type.value.replace(".", "_").split("_")) + "Event"
    version = PLATFORM_EVENT_VERSIONS[event_type]
    model: type[BaseModel] = create_model(
        name,
        __doc__=f"The body of `{event_type.value}` (version {version}).",
        id=(str, Field(description="The event's id, also in `webhook-id`: drop a delivery you have seen.")),
        type=(Literal[event_type.value], ...),  # type: ignore[arg-type]
        version=(Literal[version], Field(description="This type's payload version.")),  # type: ignore[arg-type]
        sequence=(
            int,
            Field(ge=1, description="Grows with each event of the subject: lower than seen is late."),
        ),
        account_id=(str, ...),
        invoice_id=(str | None, None) if not is_invoice else (str, ...),
        occurred_at=(datetime, ...),
        data=(InvoiceEventData if is_invoice else ConnectionEventData, ...),
    )
    return model


def _webhooks(schemas: dict[str, Any]) -> dict[str, Any]:
    models = {event_type: _payload_model(event_type) for event_type in PlatformEventType}
    _, definitions = models_json_schema(
        [(model, "validation") for model in models.values()], ref_template="#/components/schemas/{model}"
    )
    schemas.update(definitions.get("$defs", {}))
    headers = [
        (WEBHOOK_ID_HEADER, "The event's id (`evt_...`), the same on every retry and redelivery."),
        (WEBHOOK_TIMESTAMP_HEADER, "Unix seconds when this delivery was signed."),
        (
            WEBHOOK_SIGNATURE_HEADER,
            '`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, one per secret of PLATFORM_EVENTS_SECRET, '
            "space-separated: verify with standardwebhooks' Webhook(secret).verify(body, headers).",
        ),
    ]
    return {
        event_type.value: {
            "post": {
                "summary": event_type.value,
                "operationId": operation_id_of_event(event_type),
                "description": "POSTed to PLATFORM_EVENTS_URL, signed the Standard Webhooks way; retried by Temporal "
                "for up to three days until the platform answers 2xx.",
                "parameters": [
                    {
                        "name": name,
                        "in": "header",
                        "required": True,
                        "description": text,
                        "schema": {"type": "string"},
                    }
                    for name, text in headers
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
                    },
                },
                "responses": {"200": {"description": "Any 2xx: delivered. Anything else is retried."}},
            }
        }
        for event_type, model in models.items()
    }


def operation_id_of_event(event_type: PlatformEventType) -> str:
    first, *rest = event_type.value.replace(".", "_").split("_")
    return "on" + first.capitalize() + "".join(part.capitalize() for part in rest)


def _project_errors_only(document: dict[str, Any]) -> None:
    """FastAPI adds its own 422 (HTTPValidationError) to routes that declare none: the API answers every 422 with
    its ErrorResponse, so the document says so."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            unprocessable = operation.get("responses", {}).get("422")
            if unprocessable is None:
                continue
            content = unprocessable.setdefault("content", {}).setdefault("application/json", {})
            if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                content["schema"] = dict(ERROR_REF)
                unprocessable["description"] = (
                    "The request is not valid (`invalid_request`): `details` lists each field and its problem."
                )
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install_openapi(app: FastAPI) -> None:
    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            built = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _project_errors_only(built)
            built["webhooks"] = _webhooks(built.setdefault("components", {}).setdefault("schemas", {}))
            app.openapi_schema = built
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]

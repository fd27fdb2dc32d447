"""The Accounting API v3 routes under /v3/company/{realmId}/ (the gateway has already checked the token)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emulator import errors
from emulator.accounting import Books, canonical_entity, parse_include
from emulator.clock import response_time
from emulator.errors import QBOError
from emulator.pdf import invoice_pdf
from emulator.query import change_data_capture, execute
from emulator.store import Company, StoredResponse
from emulator.views import ViewKind, plain, view

if TYPE_CHECKING:
    from emulator.context import Emulator

MAX_REQUESTID_LENGTH = 50
MAX_BATCH_ITEMS = 30


def qbo_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(content=errors.dump(body), status_code=status, media_type=errors.JSON_TYPE)


def fault_response(error: QBOError, now: datetime) -> Response:
    return qbo_response(error.body(now), error.status)


def unknown_resource(name: str, now: datetime) -> Response:
    body = errors.fault_body(
        "404",
        "Resource not found",
        f"The resource {name} is not implemented by this emulator.",
        "",
        "ValidationFault",
        now,
    )
    return qbo_response(body, 404)


def router(emulator: Emulator) -> APIRouter:
    routes = APIRouter(prefix="/v3/company/{realm_id}")

    def company_of(realm_id: str) -> Company:
        # The gateway only lets through tokens issued for an existing company.
        return emulator.store.companies[realm_id]

    async def idempotent_write(
        request: Request, realm_id: str, perform: Callable[[Books, Any], dict[str, Any]]
    ) -> Response:
        """Runs a write once per (realm, requestid); a retry gets the first answer back byte for byte.

        `perform` returns the answer without its `time`, or raises the QBOError to answer with.
        """
        annotations: dict[str, Any] = request.scope.setdefault("qbo", {})
        raw = await request.body()
        now = emulator.clock.now()
        requestid = request.query_params.get("requestid")
        if requestid is not None:
            annotations["requestid"] = requestid
            if len(requestid) > MAX_REQUESTID_LENGTH:
                error = errors.business_error(
                    f"The requestid must be at most {MAX_REQUESTID_LENGTH} characters; it has {len(requestid)}."
                )
                return fault_response(error, now)
            previous = emulator.store.requestids.get(realm_id, {}).get(requestid)
            if previous is not None:
                annotations["replay"] = True
                return Response(
                    content=previous.body, status_code=previous.status, media_type=previous.content_type
                )
        books = emulator.books(company_of(realm_id), now)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            response = fault_response(errors.invalid_property("body", "is not valid JSON"), now)
        else:
            try:
                answer = perform(books, body)
            except QBOError as error:
                response = fault_response(error, now)
            else:
                response = qbo_response({**answer, "time": response_time(now)})
                emulator.commit(realm_id, books)
        if requestid is not None:
            emulator.store.requestids.setdefault(realm_id, {})[requestid] = StoredResponse(
                status=response.status_code, body=bytes(response.body).decode(), content_type=errors.JSON_TYPE
            )
            emulator.saver.mark_dirty()
        return response

    def printed(
        company: Company, entity: str, stored: dict[str, Any], kind: ViewKind, include: set[str]
    ) -> Any:
        if "status" in stored:
            return stored  # a deleted stub
        if entity == "CompanyInfo":
            return plain(stored)
        return view(company, entity, stored, kind, include)

    def write_one(
        books: Books, entity: str, operation: str | None, include: set[str], body: Any
    ) -> dict[str, Any]:
        is_create = operation in (None, "", "create") and not (isinstance(body, dict) and body.get("Id"))
        stored = books.write(entity, operation, include, body)
        return {entity: printed(books.company, entity, stored, "create" if is_create else "read", include)}

    async def run_query(realm_id: str, statement: str) -> Response:
        now = emulator.clock.now()
        try:
            return qbo_response(execute(company_of(realm_id), statement, now))
        except QBOError as error:
            return fault_response(error, now)

    @routes.post("/batch", response_model=None)
    async def batch(realm_id: str, request: Request) -> Response:
        """Up to 30 independent operations; each item answers for itself inside one HTTP 200."""

        def perform(books: Books, body: Any) -> dict[str, Any]:
            items = body.get("BatchItemRequest") if isinstance(body, dict) else None
            if not isinstance(items, list) or not items:
                raise errors.required_param("BatchItemRequest")
            if len(items) > MAX_BATCH_ITEMS:
                raise errors.business_error(
                    f"The batch has {len(items)} items; at most {MAX_BATCH_ITEMS} are allowed in one request."
                )
            return {"BatchItemResponse": [batch_item(books, item) for item in items]}

        return await idempotent_write(request, realm_id, perform)

    def batch_item(books: Books, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return {"Fault": errors.invalid_property("BatchItemRequest").body(books.now)["Fault"]}
        answer: dict[str, Any] = {"bId": item.get("bId")}
        try:
            if "Query" in item:
                answer["QueryResponse"] = execute(books.company, str(item["Query"]), books.now)[
                    "QueryResponse"
                ]
                return answer
            entities = [key for key in item if canonical_entity(key) is not None and key[0].isupper()]
            if len(entities) != 1:
                raise errors.required_param("BatchItemRequest entity")
            entity = str(canonical_entity(entities[0]))
            operation = item.get("operation")
            include = parse_include(item.get("optionsData"))
            if operation == "update" and "void" in include and entity != "Payment":
                operation = "void"
            answer.update(write_one(books, entity, operation, include, item[entities[0]]))
        except QBOError as error:
            answer["Fault"] = error.body(books.now)["Fault"]
        return answer

    @routes.get("/query", response_model=None)
    async def query_get(realm_id: str, request: Request) -> Response:
        return await run_query(realm_id, request.query_params.get("query", ""))

    @routes.post("/query", response_model=None)
    async def query_post(realm_id: str, request: Request) -> Response:
        # Clients send the statement raw, as application/text (python-quickbooks) or text/plain (Nango).
        raw = (await request.body()).decode("utf-8", errors="replace")
        statement = request.query_params.get("query") or raw
        return await run_query(realm_id, statement)

    @routes.get("/cdc", response_model=None)
    async def cdc(realm_id: str, request: Request) -> Response:
        now = emulator.clock.now()
        params = request.query_params
        try:
            body = change_data_capture(
                company_of(realm_id), params.get("entities"), params.get("changedSince"), now
            )
        except QBOError as error:
            return fault_response(error, now)
        return qbo_response(body)

    @routes.get("/preferences", response_model=None)
    async def preferences(realm_id: str) -> Response:
        now = emulator.clock.now()
        return qbo_response(
            {"Preferences": plain(company_of(realm_id).preferences), "time": response_time(now)}
        )

    @routes.post("/invoice/{invoice_id}/send", response_model=None)
    async def send_invoice(realm_id: str, invoice_id: str, request: Request) -> Response:
        send_to = request.query_params.get("sendTo")

        def perform(books: Books, _body: Any) -> dict[str, Any]:
            return {
                "Invoice": view(books.company, "Invoice", books.send_invoice(invoice_id, send_to), "send")
            }

        return await idempotent_write(request, realm_id, perform)

    @routes.get("/invoice/{invoice_id}/pdf", response_model=None)
    async def invoice_as_pdf(realm_id: str, invoice_id: str) -> Response:
        now = emulator.clock.now()
        company = company_of(realm_id)
        invoice = company.table("Invoice").get(invoice_id)
        if invoice is None:
            return fault_response(errors.object_not_found(), now)
        return Response(
            content=invoice_pdf(company, view(company, "Invoice", invoice, "read")),
            media_type="application/pdf",
        )

    @routes.get("/{entity}/{entity_id}", response_model=None)
    async def read(realm_id: str, entity: str, entity_id: str, request: Request) -> Response:
        now = emulator.clock.now()
        company = company_of(realm_id)
        name = canonical_entity(entity)
        if name is None:
            return unknown_resource(entity, now)
        if name == "CompanyInfo":
            if entity_id not in (realm_id, company.company_info.get("Id")):
                return fault_response(errors.object_not_found(), now)
            return qbo_response({"CompanyInfo": plain(company.company_info), "time": response_time(now)})
        stored = company.table(name).get(entity_id)
        if stored is None:
            return fault_response(errors.object_not_found(), now)
        include = parse_include(request.query_params.get("include"))
        return qbo_response({name: view(company, name, stored, "read", include), "time": response_time(now)})

    @routes.post("/{entity}", response_model=None)
    async def write(realm_id: str, entity: str, request: Request) -> Response:
        name = canonical_entity(entity)
        if name is None:
            return unknown_resource(entity, emulator.clock.now())
        operation = request.query_params.get("operation")
        include = parse_include(request.query_params.get("include"))

        def perform(books: Books, body: Any) -> dict[str, Any]:
            return write_one(books, name, operation, include, body)

        return await idempotent_write(request, realm_id, perform)

    return routes

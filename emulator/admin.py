"""The admin API for tests and demos (under /__admin; never rate-limited, not part of Intuit's surface)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from emulator import currency, pages
from emulator.accounting import Books
from emulator.errors import QBOError
from emulator.importer import import_entities
from emulator.preferences import PreferencesPatch, PreferencesRefused, changed_by_user
from emulator.store import ENTITY_TYPES, Company
from emulator.tax import TaxListError, add_tax_code, set_tax_code_active
from emulator.views import plain, view

if TYPE_CHECKING:
    from emulator.context import Emulator


class ConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = None
    webhook_format: Literal["classic", "cloudevents"] | None = None
    verifier_token: str | None = None
    webhook_retry_scale: float | None = Field(default=None, ge=0)
    webhook_batch_seconds: float | None = Field(default=None, ge=0)
    webhook_timeout_seconds: float | None = Field(default=None, gt=0)
    redirect_uris: list[str] | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    batch_rate_limit_per_minute: int | None = Field(default=None, ge=1)
    concurrency_limit: int | None = Field(default=None, ge=1)
    throttle_retry_after: int | None = Field(default=None, ge=0)


class CompanyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    country: Literal["US", "CA", "GB", "AU"] = "US"
    multicurrency: StrictBool = False
    home_currency: str | None = None
    preferences: PreferencesPatch | None = None

    @field_validator("home_currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is not None and not currency.is_known(value):
            raise ValueError(f"unknown currency {value!r}")
        return value


class TaxCodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    rate_percent: Decimal = Field(ge=0, le=100)
    taxable: StrictBool = True
    description: str | None = None


class TaxCodeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: StrictBool


class AuthorizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str
    redirect_uri: str
    state: str | None = None
    scope: str = "com.intuit.quickbooks.accounting"


class PaymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_id: str
    amount: str | float | None = None
    txn_date: str | None = None
    payment_ref_num: str | None = None


class FaultSpec(BaseModel):
    """See emulator.faults.Fault for the meaning of each field."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["http", "webhook_drop", "webhook_duplicate", "webhook_reorder"] = "http"
    count: int = Field(default=1, ge=1)
    rate: float | None = Field(default=None, gt=0, le=1)
    method: str | None = None
    path_contains: str | None = None
    realm_id: str | None = None
    status: int | None = Field(default=500, ge=100, le=599)
    fault_code: str | None = None
    fault_type: str | None = None
    message: str | None = None
    latency_ms: int = Field(default=0, ge=0)
    apply: Literal["before", "after"] = "before"
    drop_connection: bool = False
    oauth_error: str | None = None


class FaultSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = None


class ClockAdvance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advance_seconds: float = Field(ge=0)


def _validation_error(error: QBOError, emulator: Emulator) -> JSONResponse:
    return JSONResponse({"error": "validation", "fault": error.body(emulator.clock.now())}, status_code=400)


def _refused(message: str) -> JSONResponse:
    return JSONResponse({"error": "validation", "message": message}, status_code=400)


def _summary(company: Company) -> dict[str, Any]:
    return {
        "realm_id": company.realm_id,
        "name": company.name,
        "created_at": company.created_at.isoformat(),
        "country": company.country,
        "home_currency": company.home_currency,
        "multicurrency": company.multicurrency,
    }


def router(emulator: Emulator) -> APIRouter:
    routes = APIRouter(prefix="/__admin")

    def company_or_404(realm_id: str) -> Company:
        company = emulator.store.companies.get(realm_id)
        if company is None:
            raise HTTPException(status_code=404, detail=f"no company with realm id {realm_id}")
        return company

    def clock_state() -> dict[str, Any]:
        return {"now": emulator.clock.now().isoformat(), "offset_seconds": emulator.clock.offset_seconds}

    @routes.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/config")
    async def get_config() -> dict[str, Any]:
        return emulator.config.public()

    @routes.put("/config")
    async def put_config(update: ConfigUpdate) -> dict[str, Any]:
        for key in update.model_fields_set:
            setattr(emulator.config, key, getattr(update, key))
        return emulator.config.public()

    @routes.get("/companies")
    async def list_companies() -> dict[str, Any]:
        return {"companies": [_summary(c) for c in emulator.store.companies.values()]}

    @routes.post("/companies", status_code=201)
    async def create_company(request: CompanyCreate) -> dict[str, str]:
        company = emulator.create_company(
            request.name or f"Sandbox Company {request.country}",
            country=request.country,
            multicurrency=request.multicurrency,
            home_currency=request.home_currency,
            preference_changes=request.preferences.changes() if request.preferences else None,
        )
        return {"realm_id": company.realm_id}

    @routes.get("/companies/{realm_id}")
    async def dump_company(realm_id: str) -> dict[str, Any]:
        company = company_or_404(realm_id)
        dump: dict[str, Any] = _summary(company)
        for entity in ENTITY_TYPES:
            dump[entity.lower() + "s"] = [
                view(company, entity, body, "read") for body in company.table(entity).values()
            ]
        for entity, key in (
            ("TaxCode", "tax_codes"),
            ("TaxRate", "tax_rates"),
            ("CompanyCurrency", "currencies"),
        ):
            dump[key] = [view(company, entity, body, "read") for body in company.table(entity).values()]
        dump["deleted"] = [
            {"entity": d["entity"], "Id": d["Id"], "deleted_at": d["at"]} for d in company.deleted
        ]
        dump["company_info"] = plain(company.company_info)
        dump["preferences"] = plain(company.preferences)
        dump["authorizations"] = emulator.oauth.describe(realm_id)
        return dump

    @routes.put("/companies/{realm_id}/preferences")
    async def change_preferences(realm_id: str, request: PreferencesPatch) -> JSONResponse:
        """The user changes the company's settings in QuickBooks."""
        company = company_or_404(realm_id)
        try:
            company.preferences = changed_by_user(
                company.preferences, request.changes(), emulator.clock.now()
            )
        except PreferencesRefused as refusal:
            return _refused(str(refusal))
        emulator.saver.mark_dirty()
        return JSONResponse({"Preferences": plain(company.preferences)})

    @routes.post("/companies/{realm_id}/tax-codes", status_code=201)
    async def create_tax_code(realm_id: str, request: TaxCodeCreate) -> JSONResponse:
        """The user adds a sales tax rate in QuickBooks (one rate, and the code that applies it)."""
        company = company_or_404(realm_id)
        try:
            code, rate = add_tax_code(
                company,
                request.name,
                request.rate_percent,
                request.taxable,
                request.description,
                emulator.clock.now(),
            )
        except TaxListError as refusal:
            return _refused(str(refusal))
        emulator.saver.mark_dirty()
        return JSONResponse(
            {
                "TaxCode": view(company, "TaxCode", code, "read"),
                "TaxRate": view(company, "TaxRate", rate, "read"),
            },
            status_code=201,
        )

    @routes.put("/companies/{realm_id}/tax-codes/{code_id}")
    async def change_tax_code(realm_id: str, code_id: str, request: TaxCodeUpdate) -> JSONResponse:
        company = company_or_404(realm_id)
        if code_id not in company.table("TaxCode"):
            raise HTTPException(status_code=404, detail="no such tax code")
        try:
            code = set_tax_code_active(company, code_id, request.active, emulator.clock.now())
        except TaxListError as refusal:
            return _refused(str(refusal))
        emulator.saver.mark_dirty()
        return JSONResponse({"TaxCode": view(company, "TaxCode", code, "read")})

    @routes.post("/companies/{realm_id}/authorize")
    async def authorize(realm_id: str, request: AuthorizeRequest) -> JSONResponse:
        company_or_404(realm_id)
        service = emulator.oauth
        problem = service.authorize_request_error(request.client_id, request.redirect_uri)
        if problem is not None:
            return JSONResponse({"error": "invalid_request", "error_description": problem}, status_code=400)
        error = service.redirect_error("code", request.scope)
        if error is not None:
            return JSONResponse({"redirect_url": service.denied(request.redirect_uri, request.state, error)})
        url = service.approve(request.client_id, request.redirect_uri, request.scope, request.state, realm_id)
        return JSONResponse({"redirect_url": url})

    @routes.post("/companies/{realm_id}/revoke")
    async def revoke_company(realm_id: str) -> dict[str, int]:
        company_or_404(realm_id)
        return {"revoked_authorizations": emulator.oauth.revoke_realm(realm_id)}

    @routes.post("/companies/{realm_id}/import")
    async def import_company_data(realm_id: str, payload: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
        company = company_or_404(realm_id)
        try:
            counts = import_entities(company, payload)
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        emulator.saver.mark_dirty()
        return counts

    def user_action(realm_id: str, action: Any) -> JSONResponse:
        company = company_or_404(realm_id)
        books = emulator.books(company)
        try:
            entity, stored, status = action(books, company)
        except QBOError as error:
            if error.code == "610":
                raise HTTPException(status_code=404, detail="no such object") from None
            return _validation_error(error, emulator)
        emulator.commit(realm_id, books)
        body: dict[str, Any] = {entity.lower(): view(company, entity, stored, "read")}
        if entity == "Payment" and status == 201:
            body = {"payment_id": stored["Id"], **body}
        return JSONResponse(body, status_code=status)

    @routes.post("/companies/{realm_id}/payments", status_code=201)
    async def record_payment(realm_id: str, request: PaymentRequest) -> JSONResponse:
        def act(books: Books, company: Company) -> tuple[str, dict[str, Any], int]:
            invoice = books.get("Invoice", request.invoice_id)
            amount = request.amount if request.amount is not None else invoice["Balance"]
            body: dict[str, Any] = {
                "CustomerRef": {"value": invoice["CustomerRef"]["value"]},
                "TotalAmt": amount,
                "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
            }
            if request.txn_date:
                body["TxnDate"] = request.txn_date
            if request.payment_ref_num:
                body["PaymentRefNum"] = request.payment_ref_num
            return "Payment", books.write("Payment", None, set(), body), 201

        return user_action(realm_id, act)

    # --- The company page: a person plays the QuickBooks user in a local demo (make run) ---------------------

    def books_html(realm_id: str, message: str = "") -> HTMLResponse:
        company = company_or_404(realm_id)
        invoices = [
            {
                "id": invoice["Id"],
                "number": invoice.get("DocNumber") or f"#{invoice['Id']}",
                "customer": (invoice.get("CustomerRef") or {}).get("name", ""),
                "total": f"{Decimal(str(invoice.get('TotalAmt', 0))):.2f}",
                "balance": f"{Decimal(str(invoice.get('Balance', 0))):.2f}",
                "open": Decimal(str(invoice.get("Balance", 0))) > 0,
            }
            for invoice in sorted(company.table("Invoice").values(), key=lambda row: int(row["Id"]))
        ]
        page = pages.books_page(
            realm_id=realm_id, company_name=company.name, invoices=invoices, message=message
        )
        # Its own inline style only; nothing else runs or loads (names and numbers come from whoever sent them).
        policy = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
        return HTMLResponse(page, headers={"Content-Security-Policy": policy})

    @routes.get("/companies/{realm_id}/books", response_class=HTMLResponse)
    async def books(realm_id: str) -> HTMLResponse:
        return books_html(realm_id)

    @routes.post("/companies/{realm_id}/books/payments", response_class=HTMLResponse)
    async def receive_payment(
        realm_id: str, invoice_id: Annotated[str, Form()], amount: Annotated[Decimal, Form(gt=0)]
    ) -> Response:
        answer = await record_payment(realm_id, PaymentRequest(invoice_id=invoice_id, amount=str(amount)))
        if answer.status_code != 201:
            return books_html(
                realm_id, f"QuickBooks refused the payment: {bytes(answer.body).decode()[:300]}"
            )
        return RedirectResponse(f"/__admin/companies/{realm_id}/books", status_code=303)

    @routes.post("/companies/{realm_id}/books/revoke", response_class=HTMLResponse)
    async def revoke_from_books(realm_id: str) -> HTMLResponse:
        company_or_404(realm_id)
        revoked = emulator.oauth.revoke_realm(realm_id)
        return books_html(realm_id, f"{revoked} authorization(s) revoked: the apps are disconnected.")

    @routes.post("/companies/{realm_id}/payments/{payment_id}/void")
    async def void_payment(realm_id: str, payment_id: str) -> JSONResponse:
        def act(books: Books, company: Company) -> tuple[str, dict[str, Any], int]:
            current = books.get("Payment", payment_id)
            return "Payment", books.void_payment({"Id": payment_id, "SyncToken": current["SyncToken"]}), 200

        return user_action(realm_id, act)

    @routes.post("/companies/{realm_id}/payments/{payment_id}/delete")
    async def delete_payment(realm_id: str, payment_id: str) -> JSONResponse:
        company = company_or_404(realm_id)
        books = emulator.books(company)
        current = company.table("Payment").get(payment_id)
        if current is None:
            raise HTTPException(status_code=404, detail="no such payment")
        try:
            stub = books.delete_payment({"Id": payment_id, "SyncToken": current["SyncToken"]})
        except QBOError as error:
            return _validation_error(error, emulator)
        emulator.commit(realm_id, books)
        return JSONResponse({"payment": stub})

    @routes.post("/companies/{realm_id}/invoices/{invoice_id}/void")
    async def void_invoice(realm_id: str, invoice_id: str) -> JSONResponse:
        def act(books: Books, company: Company) -> tuple[str, dict[str, Any], int]:
            current = books.get("Invoice", invoice_id)
            return "Invoice", books.void_invoice({"Id": invoice_id, "SyncToken": current["SyncToken"]}), 200

        return user_action(realm_id, act)

    @routes.get("/clock")
    async def get_clock() -> dict[str, Any]:
        return clock_state()

    @routes.post("/clock")
    async def advance_clock(request: ClockAdvance) -> dict[str, Any]:
        emulator.advance_clock(request.advance_seconds)
        return clock_state()

    def faults_state() -> dict[str, Any]:
        faults = emulator.faults
        return {
            "faults": [fault.public() for fault in faults.pending()],
            "seed": faults.seed,
            "injected": faults.counts(),
        }

    @routes.get("/faults")
    async def list_faults() -> dict[str, Any]:
        return faults_state()

    @routes.put("/faults/seed")
    async def seed_faults(request: FaultSeed) -> dict[str, Any]:
        emulator.faults.reseed(request.seed)
        return faults_state()

    @routes.post("/faults", status_code=201)
    async def add_fault(spec: FaultSpec) -> dict[str, Any]:
        return emulator.faults.add(spec.model_dump()).public()

    @routes.delete("/faults")
    async def clear_faults() -> dict[str, int]:
        cleared = len(emulator.faults.pending())
        emulator.faults.clear()
        return {"cleared": cleared}

    @routes.get("/requests")
    async def requests(realm_id: str | None = None, since_seq: int = 0) -> dict[str, Any]:
        return {"requests": emulator.requests.since(since_seq, realm_id)}

    @routes.get("/requests/totals")
    async def request_totals(realm_id: str | None = None) -> dict[str, Any]:
        return {"realm_id": realm_id, "totals": emulator.requests.totals(realm_id)}

    @routes.get("/webhooks")
    async def webhooks(since_seq: int = 0) -> dict[str, Any]:
        deliveries = [entry for entry in emulator.webhooks.log if entry["seq"] > since_seq]
        return {"deliveries": deliveries, **emulator.webhooks.status()}

    @routes.delete("/webhooks")
    async def reset_webhooks() -> dict[str, int]:
        return {"discarded": await emulator.webhooks.reset()}

    @routes.get("/throttle")
    async def throttle() -> dict[str, Any]:
        return {"realms": emulator.throttle.snapshot()}

    return routes

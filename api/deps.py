"""Dependencies of the routes: services from the app's lifespan, the database session, authentication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from api.auth import account_of_token, is_service_token
from api.errors import ApiError
from models.crypto import TokenCipher
from models.db import SessionFactory
from models.tables import Account
from qbo.companies import CompanyVerifier
from qbo.oauth import QboOAuth
from settings import Settings


@dataclass
class Services:
    """Everything the routes use, created once in the app's lifespan."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    temporal: Client
    oauth: QboOAuth
    cipher: TokenCipher
    http: httpx.AsyncClient
    company_verifier: CompanyVerifier


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_temporal(services: ServicesDep) -> Client:
    return services.temporal


TemporalDep = Annotated[Client, Depends(get_temporal)]


def get_settings_dep(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

_bearer = HTTPBearer(auto_error=False, description="API_TOKEN (any account) or the account's own token")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass(frozen=True)
class Caller:
    account_id: str
    is_service: bool


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _presented_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("Send `Authorization: Bearer <token>` with the API token.")
    return credentials.credentials


def authenticate(
    services: ServicesDep,
    account_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")],
    credentials: BearerDep,
) -> Caller:
    """The caller may act for this account: the service token, or this account's own token."""
    presented = _presented_token(credentials)
    service_token = services.settings.api_token.get_secret_value()
    if is_service_token(service_token, presented):
        return Caller(account_id=account_id, is_service=True)
    owner = account_of_token(service_token, presented)
    if owner is None:
        raise _unauthorized("The API token is not valid.")
    if owner != account_id:
        raise ApiError(403, "forbidden", "This token belongs to another account.")
    return Caller(account_id=account_id, is_service=False)


CallerDep = Annotated[Caller, Depends(authenticate)]


def service_only(caller: CallerDep) -> Caller:
    """Only the platform's backend (the service token) may do this: an account's own token is refused."""
    if not caller.is_service:
        raise ApiError(403, "forbidden", "Only the platform's service token may do this.")
    return caller


ServiceCallerDep = Annotated[Caller, Depends(service_only)]


def service_token_only(services: ServicesDep, credentials: BearerDep) -> None:
    """For routes of no account (operations): the service token only."""
    presented = _presented_token(credentials)
    service_token = services.settings.api_token.get_secret_value()
    if is_service_token(service_token, presented):
        return
    if account_of_token(service_token, presented) is not None:
        raise ApiError(403, "forbidden", "Only the platform's service token may do this.")
    raise _unauthorized("The API token is not valid.")


ServiceTokenDep = Depends(service_token_only)


async def get_account(caller: CallerDep, session: SessionDep) -> Account:
    account = await session.get(Account, caller.account_id)
    if account is None:
        raise ApiError(
            404, "account_not_found", f"Account {caller.account_id} is unknown; set its plan with PUT first."
        )
    return account


AccountDep = Annotated[Account, Depends(get_account)]

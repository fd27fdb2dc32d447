"""Everything the emulator remembers (companies, OAuth grants, requestids) and how it is saved to disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("emulator.store")

# The Accounting API entities the emulator implements, by their API spelling.
ENTITY_TYPES = ("Customer", "Item", "Account", "Invoice", "Payment")
NAME_LISTS = ("Customer", "Item", "Account")
TRANSACTIONS = ("Invoice", "Payment")
# Lists QuickBooks keeps that the API only reads (the admin API changes them, as a user would).
READ_ONLY_LISTS = ("TaxCode", "TaxRate", "CompanyCurrency")
TABLES = (*ENTITY_TYPES, *READ_ONLY_LISTS)
STATE_VERSION = 1


def new_realm_id() -> str:
    """Sandbox realm ids are 16 digits; the first is never 0 so they survive int() round trips."""
    return str(secrets.randbelow(9 * 10**15) + 10**15)


@dataclass
class Company:
    """One QuickBooks company (realm). Entities are kept as the JSON QuickBooks would return."""

    realm_id: str
    name: str
    created_at: datetime
    user_id: str
    # "US", "CA", "GB" or "AU": which edition of QuickBooks the company uses (CompanyInfo.Country).
    country: str = "US"
    entities: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {entity: {} for entity in TABLES}
    )
    # Stubs of deleted transactions, for CDC: {"entity", "Id", "at"}.
    deleted: list[dict[str, Any]] = field(default_factory=list)
    company_info: dict[str, Any] = field(default_factory=dict)
    preferences: dict[str, Any] = field(default_factory=dict)
    # Sales terms by Id: {"Name": "Net 30", "DueDays": 30}.
    terms: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Next Id per sequence: "txn" (shared by all transactions), each name list, and "address".
    sequences: dict[str, int] = field(default_factory=dict)
    # The last numeric invoice number, which QuickBooks increments for the next invoice.
    last_doc_number: int = 1000

    def next_id(self, sequence: str) -> str:
        value = self.sequences.get(sequence, 1)
        self.sequences[sequence] = value + 1
        return str(value)

    def table(self, entity: str) -> dict[str, dict[str, Any]]:
        return self.entities[entity]

    @property
    def home_currency(self) -> str:
        return str(self.preferences["CurrencyPrefs"]["HomeCurrency"]["value"])

    @property
    def multicurrency(self) -> bool:
        return bool(self.preferences["CurrencyPrefs"]["MultiCurrencyEnabled"])

    def to_json(self) -> dict[str, Any]:
        return {
            "realm_id": self.realm_id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "user_id": self.user_id,
            "country": self.country,
            "entities": self.entities,
            "deleted": self.deleted,
            "company_info": self.company_info,
            "preferences": self.preferences,
            "terms": self.terms,
            "sequences": self.sequences,
            "last_doc_number": self.last_doc_number,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Company:
        # State files written before tax codes and countries existed load as US companies without tax codes.
        entities = {entity: dict(data["entities"].get(entity, {})) for entity in TABLES}
        return cls(
            realm_id=data["realm_id"],
            name=data["name"],
            created_at=datetime.fromisoformat(data["created_at"]),
            user_id=data["user_id"],
            country=data.get("country", "US"),
            entities=entities,
            deleted=list(data["deleted"]),
            company_info=data["company_info"],
            preferences=data["preferences"],
            terms=data["terms"],
            sequences=dict(data["sequences"]),
            last_doc_number=int(data["last_doc_number"]),
        )


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


@dataclass
class AuthCode:
    value: str
    client_id: str
    redirect_uri: str
    realm_id: str
    scope: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    grant_id: str | None = None


@dataclass
class Grant:
    """One authorization of the app for a company: every token issued from one consent."""

    id: str
    client_id: str
    realm_id: str
    scope: str
    user_email: str
    authorized_at: datetime
    hard_expires_at: datetime
    revoked_at: datetime | None = None


@dataclass
class RefreshToken:
    value: str
    grant_id: str
    issued_at: datetime
    expires_at: datetime
    superseded_at: datetime | None = None


@dataclass
class AccessToken:
    value: str
    grant_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass
class OAuthData:
    codes: dict[str, AuthCode] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "codes": [
                {
                    "value": c.value,
                    "client_id": c.client_id,
                    "redirect_uri": c.redirect_uri,
                    "realm_id": c.realm_id,
                    "scope": c.scope,
                    "issued_at": _dt(c.issued_at),
                    "expires_at": _dt(c.expires_at),
                    "used_at": _dt(c.used_at),
                    "grant_id": c.grant_id,
                }
                for c in self.codes.values()
            ],
            "grants": [
                {
                    "id": g.id,
                    "client_id": g.client_id,
                    "realm_id": g.realm_id,
                    "scope": g.scope,
                    "user_email": g.user_email,
                    "authorized_at": _dt(g.authorized_at),
                    "hard_expires_at": _dt(g.hard_expires_at),
                    "revoked_at": _dt(g.revoked_at),
                }
                for g in self.grants.values()
            ],
            "refresh_tokens": [
                {
                    "value": t.value,
                    "grant_id": t.grant_id,
                    "issued_at": _dt(t.issued_at),
                    "expires_at": _dt(t.expires_at),
                    "superseded_at": _dt(t.superseded_at),
                }
                for t in self.refresh_tokens.values()
            ],
            "access_tokens": [
                {
                    "value": t.value,
                    "grant_id": t.grant_id,
                    "issued_at": _dt(t.issued_at),
                    "expires_at": _dt(t.expires_at),
                }
                for t in self.access_tokens.values()
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OAuthData:
        oauth = cls()
        for c in data.get("codes", []):
            oauth.codes[c["value"]] = AuthCode(
                value=c["value"],
                client_id=c["client_id"],
                redirect_uri=c["redirect_uri"],
                realm_id=c["realm_id"],
                scope=c["scope"],
                issued_at=datetime.fromisoformat(c["issued_at"]),
                expires_at=datetime.fromisoformat(c["expires_at"]),
                used_at=_parse_dt(c["used_at"]),
                grant_id=c["grant_id"],
            )
        for g in data.get("grants", []):
            oauth.grants[g["id"]] = Grant(
                id=g["id"],
                client_id=g["client_id"],
                realm_id=g["realm_id"],
                scope=g["scope"],
                user_email=g["user_email"],
                authorized_at=datetime.fromisoformat(g["authorized_at"]),
                hard_expires_at=datetime.fromisoformat(g["hard_expires_at"]),
                revoked_at=_parse_dt(g["revoked_at"]),
            )
        for t in data.get("refresh_tokens", []):
            oauth.refresh_tokens[t["value"]] = RefreshToken(
                value=t["value"],
                grant_id=t["grant_id"],
                issued_at=datetime.fromisoformat(t["issued_at"]),
                expires_at=datetime.fromisoformat(t["expires_at"]),
                superseded_at=_parse_dt(t["superseded_at"]),
            )
        for t in data.get("access_tokens", []):
            oauth.access_tokens[t["value"]] = AccessToken(
                value=t["value"],
                grant_id=t["grant_id"],
                issued_at=datetime.fromisoformat(t["issued_at"]),
                expires_at=datetime.fromisoformat(t["expires_at"]),
            )
        return oauth


@dataclass
class StoredResponse:
    """The exact answer given to a write that carried a requestid, replayed verbatim on a retry."""

    status: int
    body: str
    content_type: str


@dataclass
class Store:
    companies: dict[str, Company] = field(default_factory=dict)
    oauth: OAuthData = field(default_factory=OAuthData)
    # realm -> requestid -> response
    requestids: dict[str, dict[str, StoredResponse]] = field(default_factory=dict)
    clock_offset_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "clock_offset_seconds": self.clock_offset_seconds,
            "companies": [company.to_json() for company in self.companies.values()],
            "oauth": self.oauth.to_json(),
            "requestids": {
                realm: {
                    key: {"status": r.status, "body": r.body, "content_type": r.content_type}
                    for key, r in responses.items()
                }
                for realm, responses in self.requestids.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Store:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state file version {data.get('version')!r}")
        store = cls(clock_offset_seconds=float(data.get("clock_offset_seconds", 0.0)))
        for raw in data.get("companies", []):
            company = Company.from_json(raw)
            store.companies[company.realm_id] = company
        store.oauth = OAuthData.from_json(data.get("oauth", {}))
        for realm, responses in data.get("requestids", {}).items():
            store.requestids[realm] = {
                key: StoredResponse(r["status"], r["body"], r["content_type"]) for key, r in responses.items()
            }
        return store


def load_store(path: Path) -> Store:
    """The saved state, or a fresh one when the file does not exist yet."""
    if not path.exists():
        return Store()
    with path.open(encoding="utf-8") as handle:
        return Store.from_json(json.load(handle))


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target then rename, so a crash never leaves a half-written state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StateSaver:
    """Rewrites the state file at most once per debounce interval after changes, and once at shutdown.

    Each save serialises the whole state once, so a burst of writes costs one save, not one per write.
    """

    def __init__(self, store: Store, path: Path | None, debounce_seconds: float) -> None:
        self._store = store
        self._path = path
        self._debounce = debounce_seconds
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.saves = 0

    def mark_dirty(self) -> None:
        if self._path is not None:
            self._dirty.set()

    def start(self) -> None:
        if self._path is not None:
            self._task = asyncio.create_task(self._run(), name="state-saver")

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._debounce)
            await self._save()

    async def _save(self) -> None:
        assert self._path is not None
        self._dirty.clear()
        # Serialise on the event loop, where nothing else mutates the state mid-way; write in a thread.
        text = json.dumps(self._store.to_json(), separators=(",", ":"))
        try:
            await asyncio.to_thread(write_atomically, self._path, text)
            self.saves += 1
        except OSError:
            logger.exception("could not save the state file %s", self._path)
            self._dirty.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._path is not None:
            self._dirty.clear()
            text = json.dumps(self._store.to_json(), separators=(",", ":"))
            write_atomically(self._path, text)

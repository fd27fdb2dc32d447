"""The running emulator: its configuration, clock, state and services, shared by every route."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from emulator.accounting import Books
from emulator.clock import Clock
from emulator.config import EmulatorConfig
from emulator.faults import FaultInjector
from emulator.oauth import OAuthService
from emulator.requestlog import RequestLog
from emulator.seed import new_company, upgrade
from emulator.store import Company, StateSaver, Store, load_store
from emulator.throttle import Throttle
from emulator.webhooks import WebhookDispatcher


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        path = Path(config.state_file) if config.state_file else None
        self.store: Store = load_store(path) if path is not None else Store()
        for company in self.store.companies.values():
            upgrade(company)
        self.clock = Clock(self.store.clock_offset_seconds)
        self.saver = StateSaver(self.store, path, config.save_debounce_seconds)
        self.faults = FaultInjector(config.fault_seed)
        self.throttle = Throttle(config)
        self.requests = RequestLog()
        self.oauth = OAuthService(self.store, config, self.clock, self.saver.mark_dirty)
        self.webhooks = WebhookDispatcher(config, self.clock, self.faults, self.oauth.ever_authorized)

    async def start(self) -> None:
        self.saver.start()
        self.webhooks.start()

    async def stop(self) -> None:
        await self.webhooks.stop()
        await self.saver.close()

    def create_company(self, name: str, **options: Any) -> Company:
        """A new company; `options` are seed.new_company's (country, multicurrency, ...)."""
        company = new_company(name, self.clock.now(), **options)
        while company.realm_id in self.store.companies:
            company = new_company(name, self.clock.now(), **options)
        self.store.companies[company.realm_id] = company
        self.saver.mark_dirty()
        return company

    def books(self, company: Company, now: datetime | None = None) -> Books:
        return Books(company, now or self.clock.now())

    def commit(self, realm_id: str, books: Books) -> None:
        """After a successful write: announce its changes and schedule a save."""
        self.webhooks.publish(realm_id, books.changes)
        self.saver.mark_dirty()

    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.store.clock_offset_seconds = self.clock.offset_seconds
        self.saver.mark_dirty()

"""Fixtures for the qbo tests: a company on the session emulator, connected through the real OAuth flow."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.qbo.helpers import Company, connect
from tests.support import Emulator


@pytest.fixture
async def qbo_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
async def company(emulator: Emulator, qbo_http: httpx.AsyncClient) -> Company:
    """A fresh company of this test's own, so tests never see each other's data, faults or limits."""
    return await connect(emulator, qbo_http)

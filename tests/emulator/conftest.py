"""Fixtures of the emulator's own tests: a freshly connected company per test."""

from __future__ import annotations

import pytest

from tests.emulator.helpers import Connection, EmulatorHandle, connect


@pytest.fixture
async def conn(emulator: EmulatorHandle) -> Connection:
    """A new company on the session emulator, authorized for the test app, with fresh tokens."""
    return await connect(emulator)

"""Fixtures for the coordinator tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.coordinator.harness import RunningCoordinator, running_coordinator


@pytest.fixture
async def coord() -> AsyncIterator[RunningCoordinator]:
    """A coordinator with the default configuration (open auth, random selector)."""
    async with running_coordinator() as running:
        yield running

"""Shared test set-up: every test starts with no plugin environment variables and a fresh
plugin system, so a developer's shell (or an earlier test) cannot change what loads."""

from __future__ import annotations

import pytest

from rlhfx import registry


@pytest.fixture(autouse=True)
def _clean_plugin_state(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(registry.ENV_LOAD, raising=False)
    monkeypatch.delenv(registry.ENV_STRICT, raising=False)
    registry.reset_plugins()
    yield
    registry.reset_plugins()

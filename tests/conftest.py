"""Shared test set-up: every test starts with no plugin environment variables and a fresh
plugin system, so a developer's shell (or an earlier test) cannot change what loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhfx import registry

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # one worker per core: a torch thread each (and for the runs it starts), not one per core
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clean_plugin_state(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(registry.ENV_LOAD, raising=False)
    monkeypatch.delenv(registry.ENV_STRICT, raising=False)
    registry.reset_plugins()
    yield
    registry.reset_plugins()


@pytest.fixture
def teststages(rlhfx_installed_plugin):
    """Install tests/plugin_teststages.py as the fake distribution `rlhfx-teststages`.

    Returns the site directory (put it on PYTHONPATH for a subprocess)."""
    source = (Path(__file__).parent / "plugin_teststages.py").read_text(encoding="utf-8")
    return rlhfx_installed_plugin(
        "rlhfx-teststages", {"rlhfx_teststages": source}, {"teststages": "rlhfx_teststages"}
    )

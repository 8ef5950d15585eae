"""Pytest fixtures for plugin authors (loaded automatically when rlhfx is installed).

    def test_my_reward(rlhfx_plugins):
        system = rlhfx_plugins(my_plugin_module)
        entry = system.get("reward_source", "my_reward")

    def test_recipe(rlhfx_cli, tmp_path):
        result = rlhfx_cli("validate", str(recipe_path))
        assert result.exit_code == 0, result.output
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rlhfx import registry


@pytest.fixture
def rlhfx_plugins() -> Iterator[Callable[..., registry.PluginSystem]]:
    """Load the installed plugins plus the given plugin objects into a fresh plugin system."""

    def load(*plugins: object) -> registry.PluginSystem:
        registry.reset_plugins()
        extra = [(p, getattr(p, "__name__", type(p).__name__)) for p in plugins]
        return registry.get_plugins(extra=extra)

    registry.reset_plugins()
    yield load
    registry.reset_plugins()


@pytest.fixture
def rlhfx_cli(rlhfx_plugins: Any) -> Callable[..., Any]:
    """Run the `rlhfx` CLI in-process: `rlhfx_cli("validate", path)` -> click Result."""
    from click.testing import CliRunner

    from rlhfx.cli import cli

    def invoke(*args: str, **kwargs: Any) -> Any:
        registry.reset_plugins()
        registry.get_plugins().add_commands(cli)
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kwargs)

    return invoke

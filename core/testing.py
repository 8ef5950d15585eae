"""Pytest fixtures for plugin authors (loaded automatically when rlhfx is installed).

    def test_my_reward(rlhfx_plugins):
        system = rlhfx_plugins(my_plugin_module)      # installed plugins + this module
        entry = system.get("reward_source", "my_reward")

    def test_recipe(rlhfx_plugins, rlhfx_cli, tmp_path):
        rlhfx_plugins(my_plugin_module)                # stays loaded for rlhfx_cli calls
        result = rlhfx_cli("validate", str(recipe_path))
        assert result.exit_code == 0, result.output

    def test_entry_point(rlhfx_installed_plugin):
        # a fake installed distribution: the entry-point path `pip install` would give
        rlhfx_installed_plugin("my-dist", {"my_mod": SOURCE}, {"mine": "my_mod"})
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from rlhfx import registry


class _Extra:
    """Plugin objects a test added with `rlhfx_plugins`, re-added on every reload."""

    plugins: tuple[object, ...] = ()


def _load(plugins: tuple[object, ...]) -> registry.PluginSystem:
    registry.reset_plugins()
    extra = [(p, getattr(p, "__name__", type(p).__name__)) for p in plugins]
    return registry.get_plugins(extra=extra)


@pytest.fixture
def rlhfx_plugins() -> Iterator[Callable[..., registry.PluginSystem]]:
    """Load the installed plugins plus the given plugin objects into a fresh plugin system.

    The plugin objects stay loaded for later `rlhfx_cli` calls in the same test.
    """

    def load(*plugins: object) -> registry.PluginSystem:
        _Extra.plugins = plugins
        return _load(plugins)

    registry.reset_plugins()
    yield load
    _Extra.plugins = ()
    registry.reset_plugins()


@pytest.fixture
def rlhfx_cli(rlhfx_plugins: Any) -> Callable[..., Any]:
    """Run the `rlhfx` CLI in-process: `rlhfx_cli("validate", path)` -> click Result.

    Plugins are reloaded on each call (so environment variables set with monkeypatch apply),
    together with any plugin objects given to `rlhfx_plugins`.
    """
    from click.testing import CliRunner

    from rlhfx.cli import cli
    from rlhfx.errors import UserError

    def invoke(*args: str, **kwargs: Any) -> Any:
        try:
            _load(_Extra.plugins)
        except UserError:  # e.g. strict mode: let the CLI itself report it
            registry.reset_plugins()
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kwargs)

    return invoke


def write_plugin_distribution(
    site: str | Path,
    dist: str,
    modules: Mapping[str, str],
    entry_points: Mapping[str, str],
    version: str = "0.1.0",
) -> Path:
    """Write modules and a `<dist>-<version>.dist-info` (with `rlhfx` entry points) into `site`.

    With `site` on `sys.path` (or PYTHONPATH for a subprocess), `importlib.metadata` sees an
    installed distribution, so rlhfx loads the plugin through its real entry-point path,
    without pip. `modules` maps a module name to its source; `entry_points` maps an entry-point
    name to a module.
    """
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text(
        "[rlhfx]\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    return site


@pytest.fixture
def rlhfx_installed_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """Install a fake plugin distribution for this test only (see `write_plugin_distribution`).

    Returns the directory that was put on `sys.path`; the plugin system is reset so the next
    `rlhfx_plugins()` or `rlhfx_cli(...)` call sees it.
    """
    site = tmp_path / "site-packages"
    added: list[str] = []

    def install(
        dist: str, modules: Mapping[str, str], entry_points: Mapping[str, str], **kw: Any
    ) -> Path:
        write_plugin_distribution(site, dist, modules, entry_points, **kw)
        if str(site) not in sys.path:
            monkeypatch.syspath_prepend(str(site))
        added.extend(modules)
        importlib.invalidate_caches()
        registry.reset_plugins()
        return site

    yield install
    for name in added:  # the next test may reuse a module name with other source
        sys.modules.pop(name, None)
    registry.reset_plugins()


def rlhfx_command() -> list[str]:
    """The installed `rlhfx` script beside this interpreter (or `python -m rlhfx.cli`)."""
    script = Path(sys.executable).with_name("rlhfx")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlhfx.cli"]


def run_rlhfx(
    *args: str,
    cwd: str | Path,
    pythonpath: str | Path | None = None,
    timeout: float = 120,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run `rlhfx ARGS` in a real process (real exit status, stdout and stderr).

    `RLHFX_*` variables of the calling environment are dropped; pass them as keywords.
    `pythonpath` puts e.g. a `write_plugin_distribution` site directory on the path.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RLHFX_")}
    if pythonpath is not None:
        environ["PYTHONPATH"] = str(pythonpath)
    environ.update(env)
    return subprocess.run(
        [*rlhfx_command(), *args], cwd=cwd, env=environ, capture_output=True, text=True,
        timeout=timeout,
    )

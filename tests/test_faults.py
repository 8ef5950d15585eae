"""Faults in plugin code name the component, its plugin and the recipe key (core/faults.py), and
the plugin system's own faults name their cause (RLHFX_PLUGINS, hook rules, Ctrl-C)."""

from __future__ import annotations

import math
import types

import pytest

from rlhfx import CleanResult, RewardSource, Stage, hookimpl
from rlhfx.errors import UserError
from rlhfx.faults import (
    PluginFault,
    call_plugin,
    check_cleaned,
    check_scores,
    check_selection,
    nonfinite_indices,
)

POLITE = '''\
import json

from rlhfx import CleanResult, ComponentConfig, EmptyConfig, Ranker, ResponseCleaner
from rlhfx import RewardSource, UserError, hookimpl
from rlhfx import PreferenceFormat


class Polite(RewardSource):
    name = "polite"

    def score(self, prompts, responses):
        return [len(responses[0]) / 0]  # DIVIDE


class Parsing(RewardSource):
    name = "parsing"

    def score(self, prompts, responses):
        return [json.loads(responses[0])]  # PARSE


class Careful(RewardSource):
    name = "careful"

    def score(self, prompts, responses):
        raise UserError("careful: set a threshold")


class Strip(ResponseCleaner):
    name = "strip_all"


class Pick(Ranker):
    name = "pick_some"


class Weird(PreferenceFormat):
    name = "weird"

    def parse(self, record):
        return record["missing"]  # FORMAT


@hookimpl
def rlhfx_register_reward_sources(register):
    register(Polite)
    register(Parsing)
    register(Careful)


@hookimpl
def rlhfx_register_cleaners(register):
    register(Strip)


@hookimpl
def rlhfx_register_rankers(register):
    register(Pick)


@hookimpl
def rlhfx_register_data_formats(register):
    register(Weird)
'''
PROVIDER = "(plugin 'polite', rlhfx-polite 0.1.0)"
KEY = "r.toml: stages.align.reward"


def line_of(marker: str) -> int:
    return next(i for i, line in enumerate(POLITE.splitlines(), 1) if marker in line)


@pytest.fixture
def polite(rlhfx_installed_plugin, rlhfx_plugins):
    """The plugin installed as the distribution `rlhfx-polite` 0.1.0 and loaded."""
    site = rlhfx_installed_plugin("rlhfx-polite", {"rlhfx_polite": POLITE},
                                  {"polite": "rlhfx_polite"})
    system = rlhfx_plugins()
    component = {
        name: system.get(kind, name).cls()
        for kind, name in [("reward_source", "polite"), ("reward_source", "parsing"),
                           ("reward_source", "careful"), ("cleaner", "strip_all"),
                           ("ranker", "pick_some"), ("data_format", "weird")]
    }
    component["site"] = site
    return component


# ------------------------------------------------------------------------------ call_plugin


def test_a_fault_names_component_plugin_key_and_the_plugins_line(polite):
    reward = polite["polite"]
    with pytest.raises(PluginFault) as e:
        call_plugin(reward, KEY, reward.score, ["p"], ["hello"])
    assert str(e.value) == (
        f"{KEY}: reward source 'polite' {PROVIDER} failed: ZeroDivisionError: division by zero "
        f"(at rlhfx_polite.py:{line_of('# DIVIDE')} in score)"
    )
    assert isinstance(e.value, UserError)  # the CLI prints it in one line, exit status 2
    assert isinstance(e.value.__cause__, ZeroDivisionError)  # the traceback, for RLHFX_DEBUG


def test_the_plugins_own_frame_is_named_not_the_librarys(polite):
    reward = polite["parsing"]
    with pytest.raises(PluginFault) as e:
        call_plugin(reward, KEY, reward.score, ["p"], ["{oops"])
    message = str(e.value)
    assert message.startswith(f"{KEY}: reward source 'parsing' {PROVIDER} failed: "
                              "JSONDecodeError: Expecting property name enclosed in double quotes")
    assert message.endswith(f"(at rlhfx_polite.py:{line_of('# PARSE')} in score)")


def test_user_errors_and_ctrl_c_pass_through_unchanged(polite):
    reward = polite["careful"]
    with pytest.raises(UserError) as e:
        call_plugin(reward, KEY, reward.score, ["p"], ["x"])
    assert not isinstance(e.value, PluginFault) and str(e.value) == "careful: set a threshold"

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_plugin(reward, KEY, interrupted)
    assert call_plugin(reward, KEY, lambda a, b=0: a + b, 1, b=2) == 3


def test_a_component_not_in_the_registry_is_named_by_its_class(rlhfx_plugins):
    rlhfx_plugins()

    class Loose(RewardSource):
        name = "loose"

        def score(self, prompts, responses):
            raise ValueError("bad\nsecond line")

    reward = Loose()
    with pytest.raises(PluginFault) as e:
        call_plugin(reward, "", reward.score, [], [])
    message = str(e.value)
    assert message.startswith(f"reward source 'loose' ({__name__}.")
    assert "Loose) failed: ValueError: bad (at test_faults.py:" in message
    assert "\n" not in message


# ------------------------------------------------------------------------------ result checks


def test_scores_must_be_one_real_number_per_response(polite):
    import numpy as np
    import torch

    reward = polite["polite"]
    assert check_scores([1, 2.5, np.float32(0.5), torch.tensor(3.0)], 4, reward, KEY) == [
        1.0, 2.5, 0.5, 3.0,
    ]
    assert check_scores(torch.tensor([1.0, 2.0]), 2, reward, KEY) == [1.0, 2.0]
    assert check_scores(np.array([1, 2]), 2, reward, KEY) == [1.0, 2.0]
    values = check_scores([1.0, float("nan"), float("inf")], 3, reward, KEY)
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == math.inf
    assert nonfinite_indices(values) == [1, 2]
    assert nonfinite_indices([0.0, -1e308]) == []

    def problem(values, expected=2):
        with pytest.raises(PluginFault) as e:
            check_scores(values, expected, reward, KEY)
        prefix = f"{KEY}: reward source 'polite' {PROVIDER} "
        assert str(e.value).startswith(prefix)
        return str(e.value)[len(prefix):]

    assert problem([1.0]) == "returned 1 scores for 2 responses (one number each)"
    assert problem(None) == "returned None, not a list of 2 numbers"
    assert problem("0.5") == "returned str, not a list of 2 numbers"
    assert problem(torch.zeros(2, 1)) == "returned Tensor of shape (2, 1), not a list of 2 numbers"
    assert problem([1.0, None]) == "returned a score that is not a number at [1]: None (None)"
    assert problem([1.0, "2"]) == "returned a score that is not a number at [1]: '2' (str)"
    assert problem([True, 1.0]) == "returned a score that is not a number at [0]: True (bool)"
    assert problem([1.0, np.bool_(True)]).startswith("returned a score that is not a number at [1]")


def test_a_cleaner_must_return_a_clean_result(polite):
    cleaner = polite["strip_all"]
    key = "r.toml: stages.align.cleaners[0]"
    ok = CleanResult("text", changed=True)
    assert check_cleaned(ok, cleaner, key) is ok
    prefix = f"{key}: response cleaner 'strip_all' {PROVIDER} returned "
    with pytest.raises(PluginFault) as e:
        check_cleaned("text", cleaner, key)
    assert str(e.value) == prefix + "str, not a CleanResult"
    with pytest.raises(PluginFault) as e:
        check_cleaned(CleanResult(None), cleaner, key)  # type: ignore[arg-type]
    assert str(e.value) == prefix + "a CleanResult whose text is None, not a string"
    with pytest.raises(PluginFault) as e:
        check_cleaned(CleanResult("t", discard_reason=3), cleaner, key)  # type: ignore[arg-type]
    assert str(e.value) == prefix + (
        "a CleanResult whose discard_reason is int, not a string or None"
    )


def test_a_ranker_must_return_indices_in_range(polite):
    import numpy as np

    ranker = polite["pick_some"]
    key = "r.toml: stages.align.algorithm.ranker"
    assert check_selection([2, 0], 3, ranker, key) == [2, 0]
    assert check_selection((np.int64(1),), 3, ranker, key) == [1]
    assert check_selection([], 3, ranker, key) == []
    prefix = f"{key}: ranker 'pick_some' {PROVIDER} returned "
    cases = [
        (None, 3, "None, not a list of indices"),
        ({1, 2}, 3, "set, not a list of indices"),
        ([0, 3], 3, "index 3 at [1], out of range for 3 samples (valid: 0..2)"),
        ([-1], 3, "index -1 at [0], out of range for 3 samples (valid: 0..2)"),
        ([0], 0, "index 0 at [0], out of range for 0 samples (valid: none: there are no samples)"),
        ([1.0], 3, "a selection whose [0] is 1.0 (float), not an int"),
        ([True], 3, "a selection whose [0] is True (bool), not an int"),
    ]
    for indices, n, problem in cases:
        with pytest.raises(PluginFault) as e:
            check_selection(indices, n, ranker, key)
        assert str(e.value) == prefix + problem


# ------------------------------------------------------------------------------ through the CLI


def test_a_data_format_fault_stops_the_data_stage_in_one_line(polite, rlhfx_cli, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"chosen": "a", "rejected": "b"}\n')
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[run]\noutput_dir = "{tmp_path / "run"}"\n\n'
                      f'[stages.data]\nsource = "{data}"\nformat = "weird"\neval_size = 0\n')
    result = rlhfx_cli("run", str(recipe))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: {recipe}: stages.data.format: data format 'weird' {PROVIDER} failed: "
        f"KeyError: 'missing' (at rlhfx_polite.py:{line_of('# FORMAT')} in parse)"
    )
    assert "Traceback" not in result.output
    log = (tmp_path / "run" / "run.log").read_text()
    assert "Traceback" in log and "KeyError" in log  # kept for the plugin's author


FAILING = """\
[run]
output_dir = "out"

[stages.m]
name = "make"
count = 1
fail_once = true
"""


def test_debug_setting_prints_the_traceback_too(teststages, rlhfx_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text(FAILING)
    monkeypatch.setenv("RLHFX_DEBUG", "1")
    result = rlhfx_cli("run", "r.toml")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise RuntimeError("planned failure")' in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "error: r.toml: stages.m: stage 'make' (plugin 'teststages', rlhfx-teststages 0.1.0) "
        "failed: RuntimeError: planned failure"
    )
    monkeypatch.delenv("RLHFX_DEBUG")
    result = rlhfx_cli("run", "r.toml")  # the run directory resumes; fail_once fails no more
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------ Ctrl-C


class Interrupted(Stage):
    name = "interrupted"

    def run(self, ctx):
        raise KeyboardInterrupt


def test_ctrl_c_in_a_stage_logs_its_reason(rlhfx_plugins, rlhfx_cli, tmp_path, monkeypatch):
    plugin = types.ModuleType("ctrlc")
    plugin.rlhfx_register_stages = hookimpl(lambda register: register(Interrupted))
    rlhfx_plugins(plugin)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text('[run]\noutput_dir = "out"\n[stages.s]\nname = '
                                     '"interrupted"\n')
    result = rlhfx_cli("run", "r.toml")
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    log = (tmp_path / "out" / "run.log").read_text()
    assert ("stage s stopped: interrupted by the user (Ctrl-C); run the same command to "
            "resume") in log


# ------------------------------------------------------------------------------ plugin system


def test_rlhfx_plugins_naming_an_absent_plugin_warns_with_the_installed_ones(
    polite, rlhfx_cli, monkeypatch, tmp_path
):
    monkeypatch.setenv("RLHFX_PLUGINS", "politte")
    result = rlhfx_cli("plugins", "list")
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: RLHFX_PLUGINS names 'politte', which is not installed; installed third-party "
        "plugins: polite"
    ]
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.s]\nname = "make"\ncount = 1\n')
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"error: {recipe}: stages.s.name: unknown stage 'make'"
    )
    assert result.stderr.splitlines()[-1].endswith(
        "RLHFX_PLUGINS left out the installed plugin 'polite' (rlhfx-polite): add it to "
        "RLHFX_PLUGINS if it provides 'make'"
    )


def test_a_hook_argument_with_a_default_value_is_named(rlhfx_plugins, rlhfx_cli):
    plugin = types.ModuleType("defaults")

    def rlhfx_register_reward_sources(register=None):
        register(RewardSource)

    plugin.rlhfx_register_reward_sources = hookimpl(rlhfx_register_reward_sources)
    system = rlhfx_plugins(plugin)
    info = system.plugins["defaults"]
    assert info.status == "failed"
    assert info.error == (
        "HookRuleError: hook rlhfx_register_reward_sources gives 'register' a default value; "
        "pluggy never passes an argument with a default, so remove the default (write "
        "`def rlhfx_register_reward_sources(register)`)"
    )
    result = rlhfx_cli("plugins", "list")
    assert result.exit_code == 0
    assert ("warning: plugin 'defaults' (defaults) failed to load and is skipped: "
            "HookRuleError: hook rlhfx_register_reward_sources gives 'register' a default value"
            ) in result.stderr


def test_a_plugin_fault_in_a_real_process_exits_2_and_debug_shows_the_traceback(
    teststages, tmp_path
):
    from rlhfx.testing import run_rlhfx

    (tmp_path / "r.toml").write_text(FAILING)
    result = run_rlhfx("run", "r.toml", cwd=tmp_path, pythonpath=teststages)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: r.toml: stages.m: stage 'make' (plugin 'teststages', rlhfx-teststages 0.1.0) "
        "failed: RuntimeError: planned failure (at rlhfx_teststages.py:65 in run)"
    )


def test_the_debug_flag_prints_the_traceback(teststages, rlhfx_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLHFX_DEBUG", "0")  # restored after the test (--debug sets it)
    (tmp_path / "r.toml").write_text(FAILING)
    result = rlhfx_cli("--debug", "run", "r.toml")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "The above exception was the direct cause" in result.stderr

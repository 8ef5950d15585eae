"""`--set KEY=VALUE` on `rlhfx run` and `rlhfx validate`: TOML values, checked like the file,
kept in the run's recipe copy, and a resumed run refusing other settings unless asked."""

from __future__ import annotations

import json
import tomllib

import pytest

from rlhfx.errors import UserError
from rlhfx.overrides import apply_settings, changed_settings, parse_settings

RECIPE = """\
[run]
output_dir = "out"
seed = 100

[stages.m]
name = "make"
count = 3
fail_once = true

[stages.c]
name = "consume"
source = "@m.rows"
reward = "length"
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch, teststages):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text(RECIPE, encoding="utf-8")
    return "r.toml"


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_values_are_toml_and_a_bare_word_is_text():
    settings = parse_settings([
        "a.n=32", "a.x=1e-5", "a.flag=true", "a.list=[1, 2]", "a.t={ name = \"raft\" }",
        "run.device=cpu", "a.src=@sft.model", "a.q=\"two words\"", "a.n=33",
    ])
    assert settings == {
        "a.x": 1e-5, "a.flag": True, "a.list": [1, 2], "a.t": {"name": "raft"},
        "run.device": "cpu", "a.src": "@sft.model", "a.q": "two words", "a.n": 33,
    }


@pytest.mark.parametrize("text, words", [
    ("a.b", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("a..b=3", "not a dotted key"),
    ("a.b=[1, 2", "the value is not TOML"),
])
def test_malformed_settings_are_named(text, words):
    with pytest.raises(UserError, match=words) as info:
        parse_settings([text])
    assert f"--set {text}" in str(info.value)


def test_settings_make_tables_and_refuse_to_go_inside_a_value():
    data = {"run": {"seed": 1}, "stages": {"m": {"count": 3}}}
    out = apply_settings(data, {"stages.m.window.stop": 2, "run.seed": 5}, "r.toml")
    assert out == {"run": {"seed": 5}, "stages": {"m": {"count": 3, "window": {"stop": 2}}}}
    assert data["run"]["seed"] == 1  # the parsed file is left as it was
    with pytest.raises(UserError, match=r"r.toml: stages.m.count: is 3, not a table"):
        apply_settings(data, {"stages.m.count.x": 1}, "r.toml")


def test_changed_settings_say_what_changed():
    assert changed_settings({"a": 1, "b": "x"}, {"a": 2, "c": True}) == [
        "a: 1 before, 2 now", "b = \"x\" before, not set now", "c = true now, not set before",
    ]


def test_validate_checks_settings_like_the_file(rlhfx_cli, recipe):
    good = rlhfx_cli("validate", recipe, "--set", "stages.m.count=5",
                     "--set", "stages.m.mode=fancy")
    assert good.exit_code == 0, good.output
    typo = rlhfx_cli("validate", recipe, "--set", "stages.m.cuont=5")
    assert typo.exit_code == 2
    assert error_lines(typo)[0].startswith("error: r.toml: stages.m.cuont: unknown key")
    bad = rlhfx_cli("validate", recipe, "--set", "stages.m.count=-1")
    assert bad.exit_code == 2
    assert error_lines(bad) == [
        "error: r.toml: stages.m.count: Input should be greater than or equal to 0 (got -1)"
    ]
    assert "Traceback" not in typo.output + bad.output


def test_run_keeps_settings_and_refuses_other_ones_on_resume(rlhfx_cli, recipe, tmp_path):
    first = rlhfx_cli("run", recipe, "--set", "stages.m.count=5")
    assert first.exit_code == 2  # fail_once: the run is interrupted in stage m
    copy = (tmp_path / "out/recipe.toml").read_text(encoding="utf-8")
    assert "--set stages.m.count=5" in copy
    assert tomllib.loads(copy)["stages"]["m"]["count"] == 5

    other = rlhfx_cli("run", recipe, "--set", "stages.c.reward=\"length\"")
    assert other.exit_code == 2
    assert error_lines(other) == [
        "error: out: this interrupted run was started with other --set values; rerun with "
        "--allow-changed-settings to resume with these, or set another run.output_dir:",
        "error:   stages.m.count = 5 before, not set now",
        "error:   stages.c.reward = \"length\" now, not set before",
    ]
    assert "Traceback" not in other.output
    state = json.loads((tmp_path / "out/run_state.json").read_text())
    assert state["settings"] == {"stages.m.count": 5}  # the refused command changed nothing

    # Asked for, it resumes; stage m's table is what it was (count 5 from --set again).
    allowed = rlhfx_cli("run", recipe, "--set", "stages.m.count=5",
                        "--set", "stages.c.reward=\"length\"", "--allow-changed-settings")
    assert allowed.exit_code == 0, allowed.output
    rows = (tmp_path / "out/stages/m/rows.jsonl").read_text().splitlines()
    assert len(rows) == 5
    state = json.loads((tmp_path / "out/run_state.json").read_text())
    assert state["settings"] == {"stages.m.count": 5, "stages.c.reward": "length"}


def test_the_same_settings_resume_without_a_flag(rlhfx_cli, recipe, tmp_path):
    assert rlhfx_cli("run", recipe, "--set", "stages.m.count=4").exit_code == 2
    again = rlhfx_cli("run", recipe, "--set", "stages.m.count=4")
    assert again.exit_code == 0, again.output
    assert len((tmp_path / "out/stages/m/rows.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("setting, message", [
    ("stages.align.algorithm.unfinished_penalty=-1",
     "stages.align.algorithm.unfinished_penalty: Input should be greater than or equal to 0"),
    ('stages.data.system_prompt="Be brief."',
     'stages.data: system_prompt needs template = "chat"'),
    ("stages.align.algorithm.length_control=maybe",
     "stages.align.algorithm.length_control: must be true or false, not a string (got 'maybe')"),
])
def test_whole_answer_settings_refuse_bad_values_in_one_line(rlhfx_cli, setting, message):
    """The levers for answers that end (a penalty, a system prompt, the length control) on a
    shipped recipe whose data stage renders without a chat template."""
    from pathlib import Path

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "hh_pipeline_tiny.toml")
    result = rlhfx_cli("validate", recipe, "--set", setting)
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1
    assert message in error_lines(result)[0] and "hh_pipeline_tiny.toml" in error_lines(result)[0]
    assert "Traceback" not in result.output

"""The environment plugin kind: listed, shown, in the schema, validated in recipes."""

from __future__ import annotations

import json

import pytest


def test_listed_and_shown(rlhfx_cli):
    listed = rlhfx_cli("plugins", "list")
    assert listed.exit_code == 0, listed.output
    assert "environment:calculator" in listed.output
    assert "environment:guess_number" in listed.output
    shown = rlhfx_cli("components", "show", "environment:guess_number")
    assert shown.exit_code == 0, shown.output
    for option in ("max_turns", "tool_timeout", "choices"):  # (long names wrap in the table)
        assert option in shown.output


def test_schema_checks_the_align_stage_environment(rlhfx_cli):
    result = rlhfx_cli("schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    defs = schema["definitions"]
    assert {"environment", "environment.calculator", "environment.guess_number"} <= set(defs)
    assert "max_turns" in defs["environment.guess_number"]["properties"]
    assert {"$ref": "#/definitions/environment"} in (
        defs["stage.align"]["properties"]["environment"]["anyOf"])


RECIPE = '''[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"
reward = "none"
algorithm = { name = "grpo" }
environment = ENV
'''


@pytest.mark.parametrize(("env", "message"), [
    ('{ name = "guess_numbr" }', "unknown environment 'guess_numbr' (did you mean "
                                  "'guess_number'?)"),
    ('{ name = "guess_number", max_turns = 0 }', "stages.align.environment.max_turns"),
    ('{ name = "guess_number", low = 5, high = 5 }', "high (5) must be above low (5)"),
    ('{ name = "calculator", tool_timeout = "1" }', "stages.align.environment.tool_timeout"),
])
def test_bad_environments_are_one_line_errors(rlhfx_cli, tmp_path, env, message):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.replace("ENV", env), encoding="utf-8")
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_good_environment_validates(rlhfx_cli, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.replace("ENV", '{ name = "calculator", max_turns = 3 }'),
                      encoding="utf-8")
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 0, result.output

"""`rlhfx components list|show`, `rlhfx validate --explain` and `rlhfx schema`."""

from __future__ import annotations

import json
import tomllib
import types
from pathlib import Path

import pytest
from pydantic import Field

from rlhfx import ComponentConfig, RewardSource, hookimpl

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


class ShoutConfig(ComponentConfig):
    #: Reward per capital letter in the answer.
    per_capital: float = Field(default=0.5, gt=0)
    language: str = Field(description="Which language to expect.")


class Shout(RewardSource):
    """Rewards capital letters (a third-party test component)."""

    name = "shout"
    Config = ShoutConfig

    def score(self, prompts, responses):
        return [0.0 for _ in responses]


third_party = types.ModuleType("shout_plugin")


@hookimpl
def _register(register):
    register(Shout)


third_party.rlhfx_register_reward_sources = _register  # type: ignore[attr-defined]


def test_show_a_builtin_component(rlhfx_cli):
    result = rlhfx_cli("components", "show", "cleaner:discard", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["builtin"] and info["summary"].startswith("Discard responses")
    options = {o["name"]: o for o in info["options"]}
    assert options["min_chars"] == {
        "name": "min_chars", "type": "int", "required": False, "default": 2,
        "constraints": [">= 0"],
        "help": "Responses shorter than this many characters (after earlier cleaners) are "
                "discarded.",
    }
    assert options["patterns"]["type"] == "list[str]" and "#" in options["patterns"]["default"]
    # Nested component refs and sources are named by what they are.
    align = json.loads(rlhfx_cli("components", "show", "stage:align", "--json").stdout)
    types_ = {o["name"]: o["type"] for o in align["options"]}
    assert types_["reward"] == "reward source" and types_["policy"] == "model source"
    assert types_["cleaners"] == "list[response cleaner]"
    cleaners = next(o for o in align["options"] if o["name"] == "cleaners")
    assert [c["name"] for c in cleaners["default"]] == ["stop_markers", "strip", "discard"]
    table = rlhfx_cli("components", "show", "cleaner:discard")
    assert "min_chars" in table.stdout and "Responses shorter" in table.stdout


def test_show_and_list_a_third_party_component(rlhfx_plugins, rlhfx_cli):
    rlhfx_plugins(third_party)
    result = rlhfx_cli("components", "show", "reward_source:shout", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert not info["builtin"] and info["plugin"] == "shout_plugin"
    per_capital, language = info["options"]
    assert per_capital["help"] == "Reward per capital letter in the answer."
    assert per_capital["constraints"] == ["> 0"] and per_capital["default"] == 0.5
    assert language["required"] and language["help"] == "Which language to expect."
    listing = json.loads(rlhfx_cli("components", "list", "--kind", "reward_source",
                                   "--json").stdout)
    assert {"kind": "reward_source", "name": "shout", "builtin": False}.items() <= next(
        r for r in listing if r["name"] == "shout").items()
    assert all(r["kind"] == "reward_source" for r in listing)


@pytest.mark.parametrize(("spec", "message"), [
    ("discard", "'discard': write KIND:NAME"),
    ("cleaner:discrad", "unknown response cleaner 'discrad' (did you mean 'discard'?)"),
    ("widget:x", "unknown kind 'widget'"),
])
def test_show_mistakes(rlhfx_cli, spec, message):
    result = rlhfx_cli("components", "show", spec)
    assert result.exit_code == 2 and message in result.output


def test_validate_explain_fills_in_every_default(rlhfx_cli, tmp_path):
    recipe = next(r for r in RECIPES if r.name == "tiny_raft.toml")
    result = rlhfx_cli("validate", "--explain", str(recipe))
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    align = data["stages"]["align"]
    # The recipe writes no cleaners: the default chain, with each cleaner's options.
    assert align["cleaners"] == [
        {"name": "stop_markers", "markers": ["###Human"]},
        {"name": "strip", "chars": "#"},
        {"name": "discard", "patterns": ["#", r"(?:[:;]-?\)\s*){2,}"], "min_chars": 2},
    ]
    assert align["algorithm"]["name"] == "raft" and "eval_temperature" in align["algorithm"]
    assert data["run"]["log_level"] == "info"
    # The explained recipe is itself a valid recipe that means the same.
    again = tmp_path / "explained.toml"
    again.write_text(result.stdout)
    assert rlhfx_cli("validate", str(again)).exit_code == 0


# Characters a hand-written TOML writer gets wrong: DEL (U+007F) and other control characters,
# both quote kinds, backslashes, newlines, tabs and non-ASCII text.
AWKWARD = "del\x7f \x1b \"double\" 'single' '''three''' back\\slash \\u0041\nline\ttab é 漢字 🙂"


def test_validate_explain_round_trips_awkward_strings(rlhfx_cli, tmp_path):
    import re

    import tomli_w

    data = tomllib.loads(next(r for r in RECIPES if r.name == "tiny_raft.toml").read_text())
    data["run"]["name"] = AWKWARD
    cleaners = [{"name": "strip", "chars": AWKWARD},
                {"name": "discard", "patterns": [re.escape(AWKWARD)], "min_chars": 2}]
    data["stages"]["align"]["cleaners"] = cleaners
    recipe = tmp_path / "awkward.toml"
    recipe.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = rlhfx_cli("validate", "--explain", str(recipe))
    assert result.exit_code == 0, result.output
    explained = tomllib.loads(result.stdout)
    assert explained["run"]["name"] == AWKWARD
    assert explained["stages"]["align"]["cleaners"] == cleaners
    # Options left unset are named in the leading comments only; the result validates again.
    assert "stages.align.algorithm.lora" in result.stdout.split("\n\n")[0]
    again = tmp_path / "explained.toml"
    again.write_text(result.stdout, encoding="utf-8")
    assert rlhfx_cli("validate", str(again)).exit_code == 0


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    from rlhfx.registry import get_plugins, reset_plugins

    reset_plugins()
    from rlhfx.plugins.components.schema import recipe_schema

    schema = recipe_schema(get_plugins())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_schema_accepts_every_shipped_recipe(validator, recipe):
    errors = [e.message for e in validator.iter_errors(tomllib.loads(recipe.read_text()))]
    assert errors == []


def _tiny() -> dict:
    return tomllib.loads(next(r for r in RECIPES if r.name == "tiny_raft.toml").read_text())


@pytest.mark.parametrize("breakage", [
    lambda d: d["stages"]["align"]["algorithm"].update(itrations=3),  # misspelled option
    lambda d: d["stages"]["align"]["algorithm"].update(iterations="three"),  # wrong type
    lambda d: d["stages"]["align"]["reward"].update(name="pattern_penalt"),  # unknown name
    lambda d: d["stages"]["align"].update(cleaners=[{"name": "strip", "chars": 3}]),
    lambda d: d["run"].update(log_level="loud"),
    lambda d: d.update(stage={}),  # unknown top-level table
])
def test_schema_rejects_a_broken_recipe(validator, breakage):
    data = _tiny()
    assert list(validator.iter_errors(data)) == []
    breakage(data)
    assert list(validator.iter_errors(data)) != []


def test_schema_knows_a_stage_named_by_name_and_writes_a_file(validator, rlhfx_cli, tmp_path):
    data = _tiny()
    data["stages"] = {"my_align": {**data["stages"]["align"], "name": "align"}}
    assert list(validator.iter_errors(data)) == []
    data["stages"]["my_align"]["algorithm"]["k"] = "many"
    assert list(validator.iter_errors(data)) != []
    out = tmp_path / "rlhfx.schema.json"
    result = rlhfx_cli("schema", "-o", str(out))
    assert result.exit_code == 0 and f"#:schema {out}" in result.stdout
    schema = json.loads(out.read_text())
    assert "reward_source.length" in schema["definitions"]
    props = schema["definitions"]["cleaner.discard"]["properties"]
    assert props["min_chars"]["description"].startswith("Responses shorter")

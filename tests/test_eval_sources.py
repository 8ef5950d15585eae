"""What `rlhfx eval` loads: models named by run or stage directory, judges from a run."""

from __future__ import annotations

import json

import pytest

from rlhfx import UserError
from rlhfx.plugins.evaluate.sources import (
    judge_from,
    labels_for,
    parse_inline_judge,
    resolve_model,
)


def fake_run(tmp_path):
    run = tmp_path / "run"
    (run / "stages/align/model").mkdir(parents=True)
    (run / "stages/align/model/config.json").write_text("{}")
    (run / "stages/reward_model/model").mkdir(parents=True)
    (run / "stages/polish").mkdir(parents=True)
    (run / "stages/polish/alignment.json").write_text("{}")  # what the alignment loop writes
    (run / "recipe.toml").write_text(
        '[stages.reward_model]\nmodel = "m"\n'
        '[stages.polish]\nname = "align"\npolicy = "p"\nprompts = "x.txt"\n'
        'reward = { name = "reward_model", model = "@reward_model.model", batch_size = 4 }\n'
        '[stages.polish.algorithm]\nname = "raft"\n'
    )
    (run / "run_state.json").write_text(json.dumps({"stages": {
        "reward_model": {"status": "completed", "outputs": {"model": "stages/reward_model/model"}},
        "polish": {"status": "completed", "outputs": {"model": "stages/align/model"}},
    }}))
    return run


def test_models_by_run_and_stage_directory(tmp_path):
    run = fake_run(tmp_path)
    # The run's align stage (here under the id `polish`) gives the model.
    assert resolve_model(str(run)) == str(run / "stages/align/model")
    assert resolve_model(str(run / "stages/align")) == str(run / "stages/align/model")
    assert resolve_model("org/model-id") == "org/model-id"
    assert labels_for(["a", "b/", "a"]) == ["a", "b", "a #2"]


def test_judge_from_a_run_resolves_its_outputs(tmp_path):
    run = fake_run(tmp_path)
    table = judge_from(str(run), None)
    assert table == {"name": "reward_model", "model": str(run / "stages/reward_model/model"),
                     "batch_size": 4}
    # From the recipe file alone, a stage output cannot be resolved.
    with pytest.raises(UserError, match="has not completed"):
        judge_from(str(tmp_path / "run" / "recipe.toml"), None)
    with pytest.raises(UserError, match=r"no key 'stages\.nope\.reward'"):
        judge_from(str(run), "stages.nope.reward")


def test_inline_judges():
    assert parse_inline_judge("length") == {"name": "length"}
    assert parse_inline_judge('{ name = "length", unit = "chars" }') == {
        "name": "length", "unit": "chars"}
    with pytest.raises(UserError, match="give a table with a `name`"):
        parse_inline_judge('{ unit = "chars" }')


def test_prompt_sets_inside_a_package():
    from pathlib import Path

    from rlhfx.plugins.evaluate.sources import resolve_prompts

    path = resolve_prompts("pkg:rlhfx.plugins.quickstart/data/prompts_eval.jsonl")
    assert Path(path).is_file() and path.endswith("prompts_eval.jsonl")
    assert resolve_prompts("builtin:tiny-eval-prompts") == "builtin:tiny-eval-prompts"

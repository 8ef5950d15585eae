"""The `evaluate` stage in a tiny recipe (tiny policy, a rule judge) and the report's verdict
table, on a real run and on a fake one with hand-picked numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from report_fakes import Page, make_raft_run

from rlhfx.plugins.report import write_report

TINY_RECIPE = """\
[run]
output_dir = "{run}"
seed = 1

[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"
eval_prompts = "builtin:tiny-eval-prompts"
reward = {{ name = "pattern_penalty", rules = [{{ pattern = "[A-Za-z]{{3,}}", penalty = -1.0 }}] }}

[stages.align.algorithm]
name = "raft"
iterations = 1
batch_size = 8
k = 2
min_new_tokens = 8
max_new_tokens = 8
epochs = 1
learning_rate = 3e-3
eval_max_prompts = 6
torch_threads = 1

[stages.evaluate]
models = ["builtin:tiny-gpt-neo", "@align.model", "builtin:tiny-gpt-neo"]
labels = ["before", "after", "again"]
judge = {{ name = "length", unit = "chars" }}
prompts = "builtin:tiny-eval-prompts"
max_prompts = 6
max_new_tokens = 8
temperature = 0
"""


def test_evaluate_stage_in_a_tiny_recipe_and_its_report(rlhfx_cli, tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY_RECIPE.format(run=run), encoding="utf-8")
    result = rlhfx_cli("run", str(recipe))
    assert result.exit_code == 0, result.output
    stage = run / "stages" / "evaluate"
    verdict = json.loads((stage / "eval.json").read_text())
    assert (stage / "eval.html").exists() and len(verdict["rows"]) == 6
    assert verdict["judge"] == {"name": "length", "unit": "chars"}
    after, again = verdict["comparisons"]  # each later model over the first
    assert (after["a"], after["b"], again["a"], again["b"]) == ("after", "before", "again",
                                                                "before")
    # The same model answering greedily twice: every prompt a tie, whatever the judge.
    assert (again["ties"], again["win_rate"], again["ci_low"], again["ci_high"]) == (6, 0.5,
                                                                                    0.5, 0.5)
    assert after["wins"] + after["losses"] + after["ties"] == 6
    assert after["ci_low"] <= after["win_rate"] <= after["ci_high"]

    (metrics,) = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert metrics["after_over_before/win_rate"] == after["win_rate"]
    assert metrics["after_over_before/ties"] == after["ties"]
    assert metrics["again_over_before/ci_high"] == 0.5
    means = {m["label"]: m["mean_reward"] for m in verdict["models"]}
    assert metrics["before/mean_reward"] == means["before"] == means["again"]

    page = Page(write_report(run).read_text(encoding="utf-8"))
    head, first, second = page.tables["verdict-evaluate"]
    assert head[0] == "comparison" and first[0] == "after over before"
    assert first[1] == f"{after['win_rate']:.4g}"
    # The same answers, the same lengths: at equal length every prompt is still a tie.
    assert again["mean_length_a"] == again["mean_length_b"]
    assert again["lc_win_rate"] == pytest.approx(0.5) and again["length_coefficient"] == 0
    assert first[5] == (f"{after['lc_win_rate']:.4g} [{after['lc_ci_low']:.4g} – "
                        f"{after['lc_ci_high']:.4g}]")
    assert first[6] == f"{means['before']:.4g} → {means['after']:.4g}"
    align = [json.loads(x) for x in
             (run / "stages" / "align" / "metrics.jsonl").read_text().splitlines()]
    start, end = align[0]["eval_reward_mean"], align[-1]["eval_reward_mean"]
    assert first[7] == f"{start:.4g} → {end:.4g} (align, step 0 → 1)"
    # `again` is written as the align stage's `policy` is: its starting policy, step 0.
    assert second[7] == f"{start:.4g} → {start:.4g} (align, step 0 → 0)"

    # The aligned model's card: written when align ended, rewritten with the judge's verdict.
    card = (run / "stages" / "align" / "model" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\ntags:\n- rlhfx\n- raft\n---\n")
    assert f"{start:.4g} before (step 0), {end:.4g} after (step 1)" in card
    assert (f"win rate of after over before {after['win_rate']:.3g} (95% interval "
            f"{after['ci_low']:.3g}-{after['ci_high']:.3g}; {after['wins']} wins") in card
    assert "win rate of again over before" not in card  # not about this model


def fake_verdict(stage: Path, sources: list[str],
                 ci: tuple[float, float] = (0.6, 0.85), lengths: bool = True) -> None:
    """An evaluate stage's result; without `lengths`, as results were before the
    length-controlled win rate."""
    stage.mkdir(parents=True, exist_ok=True)
    length_fields = {"mean_length_a": 212.4, "mean_length_b": 180.2, "lc_win_rate": 0.61,
                     "lc_ci_low": 0.52, "lc_ci_high": 0.7, "length_coefficient": 0.9}
    verdict = {
        "prompts": "p.jsonl", "judge": {"name": "reward_model", "model": "/j/model"},
        "num_prompts": 40,
        "models": [
            {"label": "before", "source": sources[0], "mean_reward": -0.5, "scored": 38,
             "discarded": 2, "finished": 10, "finished_rate": 0.25},
            {"label": "after", "source": sources[1], "mean_reward": 0.25, "scored": 40,
             "discarded": 0, "finished": 30, "finished_rate": 0.75},
        ],
        "comparisons": [{"a": "after", "b": "before", "n": 40, "wins": 28, "losses": 10,
                         "ties": 2, "win_rate": 0.725, "ci_low": ci[0], "ci_high": ci[1],
                         "ci_level": 0.95, "sign_test_p": 0.0049,
                         "mean_reward_difference": 0.7}],
        "rows": [],
    }
    if lengths:
        verdict["comparisons"][0].update(length_fields)
        verdict["models"][0]["mean_length"] = 180.2
        verdict["models"][1]["mean_length"] = 212.4
    (stage / "eval.json").write_text(json.dumps(verdict), encoding="utf-8")


@pytest.mark.parametrize("by", ["recipe", "path"])
def test_report_shows_the_judge_beside_the_training_reward(tmp_path, by):
    run = make_raft_run(tmp_path / "run")  # align eval reward 1.0 at step 0 -> 7.0 at step 3
    recipe = (run / "recipe.toml").read_text()
    if by == "recipe":
        recipe += ('\n[stages.verdict]\nname = "evaluate"\nmodels = ["builtin:tiny-gpt-neo", '
                   '"@align.model"]\n')
        sources = ["/cache/tiny", "/elsewhere/model"]
    else:  # no models in the recipe: the aligned one is found by its path
        recipe += '\n[stages.verdict]\nname = "evaluate"\n'
        sources = ["/cache/tiny", str(run / "stages/align/model")]
    (run / "recipe.toml").write_text(recipe)
    fake_verdict(run / "stages" / "verdict", sources)
    page = Page(write_report(run).read_text(encoding="utf-8"))
    head, row = page.tables["verdict-verdict"]
    assert head[1:3] == ["win rate", "interval"]
    assert row[:7] == ["after over before", "0.725", "0.6 – 0.85 (95%)", "28 / 10 / 2",
                       "0.0049", "0.61 [0.52 – 0.7]", "-0.5 → 0.25"]
    if by == "recipe":
        assert row[7] == "1 → 7 (align, step 0 → 3)"
    else:  # the starting policy is not named: no training-reward figure for the pair
        assert row[7] == "—"
    models = page.tables["verdict-models-verdict"]
    assert models[1] == ["before", "/cache/tiny", "-0.5", "38", "2", "0.25", "180.2"]
    # The reward-model table does not mistake this eval.json for an accuracy file.
    assert "rm-verdict" not in page.tables


@pytest.mark.parametrize(("ci", "words", "lengths"), [
    ((0.6, 0.85), "after is better than before", True),
    ((0.45, 0.85), "no clear difference between after and before", True),
    ((0.1, 0.4), "after is worse than before", False),
])
def test_the_judges_verdict_opens_the_report(tmp_path, ci, words, lengths):
    run = make_raft_run(tmp_path / "run")  # align eval reward 1.0 at step 0 -> 7.0 at step 3
    recipe = (run / "recipe.toml").read_text() + (
        '\n[stages.verdict]\nname = "evaluate"\nmodels = ["builtin:tiny-gpt-neo", '
        '"@align.model"]\n')
    (run / "recipe.toml").write_text(recipe)
    fake_verdict(run / "stages" / "verdict", ["/cache/tiny", "/elsewhere/model"], ci, lengths)
    text = write_report(run).read_text(encoding="utf-8")
    page = Page(text)
    # before the stages table and every stage's details
    assert text.index('id="verdict"') < text.index('id="stages"') < text.index(
        'id="verdict-verdict"')
    head, row = page.tables["verdict-summary"]
    assert head[2:4] == ["judge: win rate", "95% interval"]
    assert head[7] == "judge at equal length"
    assert row == ["verdict", "after over before", "0.725", f"{ci[0]:g} – {ci[1]:g}",
                   "28 / 10 / 2", "0.0049", "40", "0.61 [0.52 – 0.7]" if lengths else "—",
                   "1 → 7", "0.25 → 0.75"]
    sentence = text[text.index('<ul id="verdict-words">'):text.index("</ul>")]
    assert words in sentence and "wins on 28 prompts, loses on 10, ties on 2" in sentence
    equal = "average 212 characters against before's 180; at equal length the judge's fit"
    assert (equal in sentence) == lengths


def test_a_run_without_a_judge_has_no_verdict_section(tmp_path):
    text = write_report(make_raft_run(tmp_path / "run")).read_text(encoding="utf-8")
    assert 'id="verdict"' not in text and "verdict-summary" not in text


NO_VLLM = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None,
                             reason="vLLM is installed")


@pytest.mark.parametrize(("options", "message"), [
    ('labels = ["only one"]', "r.toml: stages.evaluate: labels: 1 names for 2 models"),
    pytest.param('rollouts = { engine = "vllm" }',
                 "r.toml: stages.evaluate.rollouts: vLLM is not installed: "
                 "pip install 'rlhfx[vllm]'",
                 marks=NO_VLLM),
], ids=["labels", "vllm-missing"])
def test_evaluate_stage_options_are_checked(rlhfx_cli, tmp_path, options, message):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[stages.evaluate]\nmodels = ["builtin:tiny-gpt-neo", "builtin:tiny-gpt-neo"]\n'
        f'judge = "length"\nprompts = "builtin:tiny-eval-prompts"\n{options}\n',
        encoding="utf-8")
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output

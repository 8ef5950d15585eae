"""PPO runs end to end on the built-in tiny policy, in-process (no subprocess start-up cost)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records, write_algorithm_recipe

# TRL's classic statistics under the loop's schema (docs/metrics.md): objective/kl is kl_mean,
# env/reward_mean is reward_mean, the rest PPO's own under ppo/.
CLASSIC_STATS = (
    "kl_mean", "ppo/kl_coef", "ppo/entropy", "ppo/scores_mean",
    "ppo/scores_std", "ppo/mean_non_score_reward", "ppo/loss/policy", "ppo/loss/value",
    "ppo/loss/total", "ppo/policy/entropy", "ppo/policy/approxkl", "ppo/policy/policykl",
    "ppo/policy/clipfrac", "ppo/val/var_explained", "ppo/returns/mean", "ppo/val/error",
    "ppo/queries_len_mean", "response_tokens_mean", "reward_mean",
    "seconds_generate", "seconds_score", "ppo/time/forward_pass", "ppo/time/optimize_step",
    "ppo/time/total", "learning_rate", "train_loss",
)
WORD_BONUS = '{ name = "pattern_penalty", rules = [{ pattern = "[A-Za-z]{3,}", penalty = -1.0 }] }'


def records(run_dir: Path) -> list[dict]:
    return run_records(run_dir)


def write_recipe(tmp_path: Path, algorithm: dict, **kw) -> Path:
    return write_algorithm_recipe(tmp_path, "ppo", algorithm, **kw)


def load_checkpoint(folder: Path) -> dict:
    from rlhfx.alignment.checkpoints import Checkpoints

    return Checkpoints(folder.parent).load_algorithm_state(folder)


def run_in_process(rlhfx_cli, tmp_path: Path, algorithm: dict, **kw) -> Path:
    return run(rlhfx_cli, write_recipe(tmp_path, algorithm, **kw), tmp_path / "run")


SMALL = dict(iterations=2, batch_size=8, mini_batch_size=4, ppo_epochs=2, learning_rate=1e-3,
             min_new_tokens=8, max_new_tokens=11, save_samples=True)


def _tiny_reward_model(path: Path) -> None:
    """A GPT-Neo classifier with a word-level tokenizer: nothing like the policy's BPE."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPTNeoConfig, GPTNeoForSequenceClassification, PreTrainedTokenizerFast

    from rlhfx.tiny import _corpus

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    tokenizer.save_pretrained(path)
    config = GPTNeoConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2,
        attention_types=[[["global"], 1]], max_position_embeddings=128, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None,
    )
    torch.manual_seed(0)
    GPTNeoForSequenceClassification(config).save_pretrained(path)


def test_reward_model_with_another_tokenizer(rlhfx_cli, tmp_path):
    """The RM reads (prompt, cleaned response) as text with its own word-level tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhfx.tiny import tiny_tokenizer

    rm_dir = tmp_path / "rm"
    _tiny_reward_model(rm_dir)
    out = run_in_process(rlhfx_cli, tmp_path, SMALL,
                         reward=f'{{ name = "reward_model", model = "{rm_dir}" }}')
    rows = [json.loads(line) for line in
            (out / "stages" / "align" / "iterations" / "iter-0002" / "samples.jsonl")
            .read_text().splitlines()]
    trained = [r for r in rows if r["trained"]]
    assert trained

    rm_tok = AutoTokenizer.from_pretrained(rm_dir)
    policy_tok = tiny_tokenizer("builtin:tiny-gpt-neo")
    text = trained[0]["prompt"] + " " + trained[0]["response"]
    assert rm_tok(text)["input_ids"] != policy_tok(text)["input_ids"]
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    with torch.no_grad():
        for row in trained:
            enc = rm_tok(row["prompt"] + " " + row["response"], return_tensors="pt")
            assert row["reward"] == pytest.approx(rm(**enc).logits[0, 0].item(), abs=1e-4)
    assert len({round(r["reward"], 6) for r in trained}) > 1


def test_reward_model_with_the_policys_tokenizer_reads_the_sampled_ids(rlhfx_cli, tmp_path):
    """No decode and re-tokenise: the RM is given prompt + response ids as sampled, which is
    what it scores whenever the text re-tokenises to those same ids."""
    import torch
    from transformers import AutoModelForSequenceClassification, GPTNeoConfig

    from rlhfx.rollouts import encode_prompts
    from rlhfx.tiny import tiny_tokenizer

    tok = tiny_tokenizer("builtin:tiny-gpt-neo")
    config = GPTNeoConfig(vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                          attention_types=[[["global"], 1]], max_position_embeddings=128,
                          num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    rm_dir = tmp_path / "rm"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    out = run_in_process(rlhfx_cli, tmp_path, {**SMALL, "iterations": 1},
                         reward=f'{{ name = "reward_model", model = "{rm_dir}" }}')
    assert "reward 'reward_model' reads the policy's token ids" in (out / "run.log").read_text()
    rows = [json.loads(line) for line in
            (out / "stages" / "align" / "iterations" / "iter-0001" / "samples.jsonl")
            .read_text().splitlines()]
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    checked = 0
    for row in rows:
        if row["token_status"] != "kept" or row["reward"] is None:
            continue
        [prompt] = encode_prompts(tok, [row["prompt"]])
        response = tok(row["raw_response"], add_special_tokens=False)["input_ids"]
        if len(response) != row["response_tokens"]:
            continue  # re-tokenising changed the ids (or an EOS ended it): not comparable
        with torch.no_grad():
            logit = rm(input_ids=torch.tensor([prompt + response])).logits[0, 0].item()
        assert row["reward"] == pytest.approx(logit, abs=1e-4)
        checked += 1
    assert checked >= len(rows) // 2


EVAL_KEYS = ("eval_reward_mean", "eval_reward_std", "eval_discarded_rate", "eval_distinct_2")


def test_mixed_precision_left_by_an_earlier_stage_does_not_leak_into_ppo(rlhfx_cli, tmp_path):
    # An SFT or RAFT stage in bf16 before PPO in one process leaves accelerate's process-wide
    # state in bf16; PPO used to inherit it and run the policy (not the reference) in bf16.
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)  # whatever earlier tests left
    Accelerator(cpu=True, mixed_precision="bf16")
    try:
        out = run_in_process(rlhfx_cli, tmp_path, {**SMALL, "iterations": 1})
    finally:
        AcceleratorState._reset_state(reset_partial_state=False)
    [record] = [r for r in records(out) if r["step"] == 1]
    assert record["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # policy == reference


def test_lora_policy_is_merged_at_the_end(rlhfx_cli, tmp_path):
    """Also the evals: the initial policy at step 0, files per eval, the report's table."""
    from report_fakes import Page
    from transformers import AutoModelForCausalLM

    out = run_in_process(
        rlhfx_cli, tmp_path,
        {**SMALL, "lora": {"r": 4, "alpha": 8}, "eval_every": 2, "eval_max_prompts": 6},
        extra='eval_prompts = "builtin:tiny-eval-prompts"\n',
    )
    recs = records(out)
    assert [r["step"] for r in recs] == [0, 1, 2]
    # step 0: the initial policy's eval only, under the names later evals use
    assert set(recs[0]) == {"step", "time", "iteration", "seconds_eval", *EVAL_KEYS}
    assert "eval_reward_mean" not in recs[1] and set(EVAL_KEYS) <= set(recs[2])
    # LoRA's B starts at zero: policy == reference (the base, adapter off) at step 1
    assert recs[1]["kl_mean"] == pytest.approx(0.0, abs=1e-6)
    eval_dir = out / "stages" / "align" / "iterations"
    assert sorted(p.parent.name for p in eval_dir.glob("*/eval.jsonl")) == ["iter-0000",
                                                                            "iter-0002"]
    from rlhfx.data.prompts import read_prompt_set

    prompts = read_prompt_set("builtin:tiny-eval-prompts")[:6]
    files = {}
    for step, rec in ((0, recs[0]), (2, recs[2])):
        rows = [json.loads(line) for line in
                (eval_dir / f"iter-{step:04d}" / "eval.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == prompts  # the eval set's order
        for r in rows:
            assert set(r) == {"prompt", "response", "reward", "discarded"}
            assert (r["reward"] is None) == r["discarded"]
        scored = [r["reward"] for r in rows if not r["discarded"]]
        assert rec["eval_discarded_rate"] == pytest.approx(1 - len(scored) / len(rows))
        if scored:
            assert rec["eval_reward_mean"] == pytest.approx(sum(scored) / len(scored), abs=1e-6)
        files[step] = rows
    # `rlhfx report`: the eval table pairs step 0 (before) with the last eval (after)
    result = rlhfx_cli("report", str(out))
    assert result.exit_code == 0, result.output
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    table = page.tables["eval-align"]
    assert table[0] == ["prompt", "response at step 0", "reward", "response at step 2", "reward",
                        "change"]
    # prompts shown as conversations: "user: <question>", the template markers hidden
    questions = [p.removeprefix("###Human: ").removesuffix(" ###Assistant:") for p in prompts]
    assert [row[0] for row in table[1:-1]] == [f"user: {q}" for q in questions]
    assert table[-1][0] == "mean reward"
    assert table[1][1].startswith(files[0][0]["response"].strip())
    assert table[1][3].startswith(files[2][0]["response"].strip())
    assert "samples-align" not in page.tables  # no fallback to training samples
    model_dir = out / "stages" / "align" / "model"
    assert not (model_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    saved = (out / "stages" / "align" / "checkpoints").glob("iter-*/")
    state = load_checkpoint(next(iter(saved)))["model"]
    assert state and all("lora" in k or k.startswith("v_head") for k in state)


@pytest.mark.parametrize(
    "options",
    [
        {"kl_penalty": "full", "whiten_rewards": True, "use_score_scaling": True,
         "use_score_norm": True, "score_clip": 3.0},
        {"kl_penalty": "abs", "early_stopping": True, "target_kl": 0.001, "ppo_epochs": 4,
         "adap_kl_ctrl": False, "max_grad_norm": 1.0, "gradient_accumulation_steps": 2,
         "mini_batch_size": 2},
        {"kl_penalty": "mse", "min_response_tokens": 1000},  # every response too short
    ],
    ids=["full-kl-scaled-scores", "early-stop-accumulate", "all-dropped"],
)
def test_options_run(rlhfx_cli, tmp_path, options):
    out = run_in_process(rlhfx_cli, tmp_path, {**SMALL, **options})
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2]
    if options.get("min_response_tokens"):
        assert all(r["ppo/kept"] == 0 and r["ppo/too_short"] == 8 for r in recs)
        return
    for r in recs:
        assert math.isfinite(r["kl_mean"]) and math.isfinite(r["ppo/loss/total"])
    if options.get("early_stopping"):
        # a tiny target_kl: the epochs stop after the first one once the policy has moved
        assert recs[1]["ppo/epochs"] < 4
    if options.get("score_clip"):
        assert all(abs(r["ppo/scores_mean"]) <= 3.0 for r in recs)


def test_lora_that_fits_no_module_is_a_one_line_error(rlhfx_cli, tmp_path):
    recipe = write_recipe(tmp_path, {**SMALL, "lora": {"target_modules": ["nonexistent"]}})
    result = rlhfx_cli("run", str(recipe), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "nonexistent" in line]
    assert len(lines) == 1 and "stages.align.algorithm.lora: Target modules" in lines[0]


def test_lora_dropout_is_off_in_the_update(rlhfx_cli, tmp_path):
    """One mini-batch per step, one epoch: with dropout off, every mini-batch is the first of
    its step and its ratio is exactly 1. Step 2 matters: LoRA's B is zero at step 1, so the
    adapter's dropout cannot show there."""
    options = {**SMALL, "mini_batch_size": 8, "ppo_epochs": 1, "learning_rate": 1e-2,
               "lora": {"r": 4, "alpha": 8, "dropout": 0.05}}
    for sub in ("off", "on"):
        (tmp_path / sub).mkdir()
    recs = records(run_in_process(rlhfx_cli, tmp_path / "off", options))
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        assert r["ppo/policy/approxkl"] == pytest.approx(0.0, abs=1e-9)
        assert r["ppo/policy/clipfrac"] == 0.0
    # the control: with dropout on, the same step's ratio is not 1
    recs = records(run_in_process(rlhfx_cli, tmp_path / "on", {**options,
                                                                 "disable_dropout": False}))
    assert recs[1]["ppo/policy/approxkl"] > 1e-6


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["full", "lora"])
def test_bfloat16_keeps_float32_weights_and_trains(rlhfx_cli, tmp_path, lora):
    """bf16 autocast runs on the CPU too; the trained weights (the checkpoint) stay float32."""
    import torch

    options = {**SMALL, "iterations": 1, "dtype": "bfloat16"}
    if lora:
        options["lora"] = lora
    out = run_in_process(rlhfx_cli, tmp_path, options)
    (rec,) = records(out)
    assert math.isfinite(rec["kl_mean"]) and math.isfinite(rec["ppo/loss/total"])
    path = next((out / "stages" / "align" / "checkpoints").glob("iter-*/"))
    state = load_checkpoint(path)["model"]
    assert any(k.startswith("v_head") for k in state) and len(state) > 2
    assert all(("lora" in k) == bool(lora) for k in state if not k.startswith("v_head"))
    assert {v.dtype for v in state.values()} == {torch.float32}


def test_float16_on_the_cpu_is_a_one_line_error(rlhfx_cli, tmp_path):
    recipe = write_recipe(tmp_path, {**SMALL, "dtype": "float16"})
    result = rlhfx_cli("run", str(recipe), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "stages.align.algorithm.dtype: float16 needs a CUDA device" in result.output

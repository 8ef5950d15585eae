"""The reward_model stage: pairwise accuracy on held-out pairs of a learnable set rises well
above chance, and the saved (merged) model scores the same through the reward source."""

from __future__ import annotations

import json

import pytest
from fixtures.stages import make_ctx, run_stage
from fixtures.synthetic import corpus, make_rows, write
from fixtures.tiny import save_tiny_lm

from rlhfx.files import read_jsonl
from rlhfx.plugins.data.config import DataConfig
from rlhfx.plugins.data.prepare import prepare
from rlhfx.plugins.reward_model import RewardModelStage
from rlhfx.plugins.rewards.reward_model import SequenceReward
from rlhfx.registry import get_plugins

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rm")
    source = write(tmp / "pairs.jsonl", 200, seed=5)
    paths, _ = prepare(DataConfig(source=str(source), eval_size=0), tmp / "data", 0,
                       get_plugins())
    base = save_tiny_lm(tmp / "base", corpus(make_rows(100, seed=6)), seed=0)
    return tmp, paths["rm"], base


def train(tmp, rm, base, name, **options):
    ctx = make_ctx(tmp / name, "reward_model")
    settings = dict(model=str(base), data=rm, batch_size=8, epochs=1, max_length=96,
                    validation_split_percentage=25, eval_before_training=True,
                    logging_steps=5, save_steps=1000,
                    precision="no")  # float32 on every CPU: scores compared pair by pair
    settings.update(options)
    out = run_stage(RewardModelStage, ctx, **settings)
    return ctx, out, json.loads((ctx.stage_dir / "eval.json").read_text())


@pytest.mark.slow
def test_lora_reward_model_learns_the_preference(setup):
    tmp, rm, base = setup
    ctx, out, results = train(tmp, rm, base, "lora", learning_rate=5e-3)  # LoRA is the default
    before, after = results["before"]["accuracy"], results["after"]["accuracy"]
    print(f"LoRA reward model: held-out pairwise accuracy {before:.3f} -> {after:.3f} "
          f"on {results['validation_pairs']} pairs")
    assert results["validation_pairs"] == 50 and results["train_pairs"] == 150
    assert after >= 0.85 and after >= before + 0.2
    # a merged, plain sequence-classification model with no adapter left
    model_dir = ctx.stage_dir / "model"
    assert out == {"model": str(model_dir)}
    assert not (model_dir / "adapter_config.json").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["GPTNeoForSequenceClassification"]
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert not (ctx.stage_dir / "checkpoints").exists()  # dropped once the model is saved
    # the reward source scores held-out pairs the way the stage measured them
    held = list(read_jsonl(rm))[-50:]
    source = SequenceReward(SequenceReward.Config(model=str(model_dir)))
    chosen = source.score([""] * 50, [p["chosen"] for p in held])
    rejected = source.score([""] * 50, [p["rejected"] for p in held])
    agree = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / 50
    assert agree == pytest.approx(after)
    metrics = [json.loads(x) for x in ctx.metrics_file.read_text().splitlines()]
    assert any("eval/accuracy" in m for m in metrics)
    assert any("loss" in m for m in metrics)


@pytest.mark.slow
def test_full_training_and_finished_stage_is_not_redone(setup):
    tmp, rm, base = setup
    ctx, out, results = train(tmp, rm, base, "full", method="full", learning_rate=1e-3)
    print(f"full reward model: held-out pairwise accuracy {results['before']['accuracy']:.3f} "
          f"-> {results['after']['accuracy']:.3f}")
    assert results["after"]["accuracy"] >= 0.9
    stamp = (ctx.stage_dir / "model" / "model.safetensors").stat().st_mtime_ns
    again = run_stage(RewardModelStage, ctx, model=str(base), data=rm, method="full")
    assert again == out
    assert (ctx.stage_dir / "model" / "model.safetensors").stat().st_mtime_ns == stamp


def test_model_without_eos_token(setup):
    """BERT-like reward models (the MiniLM backbone) have no EOS: nothing is appended."""
    from fixtures.tiny import save_tiny_bert_rm

    tmp, rm, _ = setup
    bert = save_tiny_bert_rm(tmp / "bert", corpus(make_rows(100, seed=6)))
    ctx, out, results = train(tmp, rm, bert, "bert", method="full", learning_rate=1e-3,
                              max_steps=6, eval_before_training=False)
    info = json.loads((ctx.stage_dir / "model" / "rlhfx_reward.json").read_text())
    assert info == {"append_eos": False}
    assert results["validation_pairs"] == 50 and 0 <= results["after"]["accuracy"] <= 1
    source = SequenceReward(SequenceReward.Config(model=out["model"]))
    held = list(read_jsonl(rm))[-50:]
    chosen = source.score([""] * 50, [p["chosen"] for p in held])
    rejected = source.score([""] * 50, [p["rejected"] for p in held])
    agree = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / 50
    assert agree == pytest.approx(results["after"]["accuracy"])


def test_validation_pairs_from_their_own_set(setup, tmp_path):
    """`eval_data` (the data stage's `eval_rm`) is the validation set; all of `data` trains."""
    from rlhfx.files import write_jsonl

    tmp, rm, base = setup
    pairs = list(read_jsonl(rm))
    held = tmp_path / "held.jsonl"
    write_jsonl(held, pairs[:30])
    ctx = make_ctx(tmp / "eval_data", "reward_model")
    run_stage(RewardModelStage, ctx, model=str(base), data=rm, eval_data=str(held),
              method="full", learning_rate=1e-3, batch_size=8, max_steps=2, max_length=96)
    results = json.loads((ctx.stage_dir / "eval.json").read_text())
    assert results["train_pairs"] == len(pairs) and results["validation_pairs"] == 30


def test_length_grouped_batches():
    from datasets import Dataset

    from rlhfx.plugins.reward_model import length_grouped

    lengths = [5, 40, 6, 41, 7, 42, 8, 43]
    data = Dataset.from_dict({"chosen_ids": [[1] * n for n in lengths],
                              "rejected_ids": [[2] * 3 for _ in lengths]})
    grouped = length_grouped(data, 2, seed=0)
    got = [len(ids) for ids in grouped["chosen_ids"]]
    assert sorted(got) == sorted(lengths)  # every pair once
    batches = [sorted(got[i : i + 2]) for i in range(0, 8, 2)]
    assert sorted(batches) == [[5, 6], [7, 8], [40, 41], [42, 43]]
    assert length_grouped(data, 2, seed=0)["chosen_ids"] == grouped["chosen_ids"]
    orders = {tuple(len(x) for x in length_grouped(data, 2, seed=s)["chosen_ids"])
              for s in range(6)}
    assert len(orders) > 1  # the batch order follows the seed, not the lengths


def test_stage_trains_on_length_grouped_batches(setup):
    tmp, rm, base = setup
    ctx = make_ctx(tmp / "grouped", "reward_model")
    run_stage(RewardModelStage, ctx, model=str(base), data=rm, method="full",
              learning_rate=1e-3, batch_size=8, max_steps=3, max_length=96,
              group_by_length=True)
    results = json.loads((ctx.stage_dir / "eval.json").read_text())
    assert results["train_pairs"] == 180 and 0 <= results["after"]["accuracy"] <= 1


def test_eval_data_and_a_split_are_not_both_asked_for():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="set one of them"):
        RewardModelStage.Config(model="m", data="d.jsonl", eval_data="e.jsonl",
                                validation_split_percentage=10)
    c = RewardModelStage.Config(model="m", data="d.jsonl", eval_data="e.jsonl",
                                validation_split_percentage=0)
    assert c.eval_data == "e.jsonl"


def test_defaults_follow_the_seed():
    c = RewardModelStage.Config(model="m", data="d.jsonl")
    assert c.method == "lora" and (c.lora.r, c.lora.alpha, c.lora.dropout) == (16, 32, 0.1)
    assert c.learning_rate == 3e-5 and c.epochs == 1 and c.validation_split_percentage == 10


def test_unknown_training_args_are_reported(setup):
    from rlhfx import UserError

    tmp, rm, base = setup
    ctx = make_ctx(tmp / "bad", "reward_model")
    with pytest.raises(UserError, match=r"stages\.reward_model\.training_args\.nope: not an "
                       r"option of trl\.RewardConfig"):
        run_stage(RewardModelStage, ctx, model=str(base), data=rm, training_args={"nope": 1})

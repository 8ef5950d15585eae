"""The dpo stage on a tiny GPT-Neo: pairs split into prompt and answers, training raises the
chosen-vs-rejected margin, LoRA merges, an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.stages import make_ctx, run_stage
from fixtures.synthetic import corpus, make_rows
from fixtures.tiny import save_tiny_lm
from pydantic import ValidationError

from rlhfx import UserError
from rlhfx.files import write_jsonl
from rlhfx.plugins.dpo import DPOOptions, DPOStage, held_out_report, split_pair, to_triples

torch = pytest.importorskip("torch")
pytest.importorskip("trl")


# ----------------------------------------------------------------------------- pure parts
def test_split_pair_cuts_at_a_word_boundary():
    chosen = "###Human: Hi? ###Assistant: Sure, glad to help."
    rejected = "###Human: Hi? ###Assistant: Seriously? No."
    # the texts share "...###Assistant: S"; the cut goes back to before the space, which
    # starts the answers (a BPE tokenizer joins it to the next word)
    assert split_pair(chosen, rejected) == (
        "###Human: Hi? ###Assistant:", " Sure, glad to help.", " Seriously? No.",
    )
    # a run of whitespace stays whole; a shared first word stays in the prompt (it cancels
    # in the DPO loss)
    assert split_pair("Q:\n\nA yes", "Q:\n\nA no") == ("Q:\n\nA", " yes", " no")
    assert split_pair("Q:\n\nyes", "Q:\n\nno") == ("Q:", "\n\nyes", "\n\nno")


def test_to_triples_needs_a_common_prompt():
    with pytest.raises(UserError, match="no pair has a common prompt"):
        to_triples([("hello there", "goodbye")], "pairs.jsonl")


def test_held_out_report_numbers():
    # margins before 1, -2; after 3, -1 -> accuracy 1/2 -> 1/2; implicit rewards
    # 0.5 * (3 - 1) = 1, 0.5 * (-1 - -2) = 0.5 -> mean 0.75, both positive
    report = held_out_report([1.0, -2.0], [3.0, -1.0], beta=0.5)
    assert report == {"pairs": 2.0, "accuracy_before": 0.5, "accuracy_after": 0.5,
                      "reward_margin": 0.75, "reward_accuracy": 1.0}


def test_options_refuse_two_validation_sets_and_bad_beta():
    base = dict(model="m", data="d.jsonl")
    with pytest.raises(ValidationError, match="set one of them"):
        DPOOptions.model_validate({**base, "eval_data": "e.jsonl",
                                   "validation_split_percentage": 10})
    with pytest.raises(ValidationError, match="beta"):
        DPOOptions.model_validate({**base, "beta": -0.1})


def test_unknown_loss_type_is_refused_before_loading(tmp_path):
    from trl import DPOConfig

    from rlhfx.plugins.dpo import check_loss_types

    check_loss_types(DPOConfig, ["sigmoid", "ipo"], "r.toml: stages.dpo")  # known: fine
    with pytest.raises(UserError, match=r"stages.dpo.loss_type: unknown loss type 'sigmod' "
                                        r"\(TRL's: sigmoid, hinge, ipo"):
        check_loss_types(DPOConfig, ["sigmod"], "r.toml: stages.dpo")
    ctx = make_ctx(tmp_path, "dpo")
    with pytest.raises(UserError, match="unknown loss type 'nope'"):
        run_stage(DPOStage, ctx, model="no/such/model", data="no_such.jsonl", loss_type="nope")


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo")
    rows = make_rows(48, seed=3)
    data = tmp / "rm.jsonl"
    write_jsonl(data, rows)  # whole dialogues: chosen / rejected, as the data stage writes
    base = save_tiny_lm(tmp / "base", corpus(rows), seed=0)
    return tmp, data, base


OPTIONS = dict(batch_size=8, max_length=96, logging_steps=1, save_steps=3, beta=0.1,
               validation_split_percentage=25, eval_batch_size=16)


def logged(ctx, key):
    rows = [json.loads(x) for x in ctx.metrics_file.read_text().splitlines()]
    return [r[key] for r in rows if key in r]


@pytest.mark.slow
def test_full_dpo_raises_the_chosen_margin_and_saves_a_model(setup):
    from transformers import AutoModelForCausalLM

    tmp, data, base = setup
    ctx = make_ctx(tmp / "full", "dpo")
    out = run_stage(DPOStage, ctx, model=str(base), data=str(data), learning_rate=1e-3,
                    max_steps=8, **OPTIONS)
    assert out == {"model": str(ctx.stage_dir / "model")}
    # TRL's per-step implicit reward margin on the training batches climbs from 0
    margins = logged(ctx, "rewards/margins")
    assert len(margins) == 8
    assert abs(margins[0]) < 1e-3 and sum(margins[-3:]) / 3 > 0.05
    # on the 12 held-out pairs: the implicit reward margin is positive, accuracy not lower
    report = json.loads((ctx.stage_dir / "eval.json").read_text())["held_out"]
    assert report["pairs"] == 12
    assert report["reward_margin"] > 0 and report["reward_accuracy"] > 0.5
    assert report["accuracy_after"] >= report["accuracy_before"]
    model = AutoModelForCausalLM.from_pretrained(out["model"])
    original = AutoModelForCausalLM.from_pretrained(str(base))
    changed = [n for n, p in model.state_dict().items()
               if not torch.equal(p, original.state_dict()[n])]
    assert changed
    assert not (ctx.stage_dir / "checkpoints").exists()


@pytest.mark.slow
def test_lora_dpo_resumes_after_an_interruption_and_merges(setup, monkeypatch):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    tmp, data, base = setup
    ctx = make_ctx(tmp / "lora", "dpo")
    options = dict(model=str(base), data=str(data), method="lora",
                   lora={"r": 8, "alpha": 16, "dropout": 0.0}, learning_rate=1e-2,
                   max_steps=5, **OPTIONS)
    steps: list[int] = []
    crash_at = [4]

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)
            if state.global_step == crash_at[0]:
                raise KeyboardInterrupt

    from rlhfx import trainer_stage

    original = trainer_stage.run_trainer

    def run_with_crash(trainer, ctx, *rest):
        trainer.add_callback(Crash())
        original(trainer, ctx, *rest)

    monkeypatch.setattr(trainer_stage, "run_trainer", run_with_crash)
    with pytest.raises(KeyboardInterrupt):
        run_stage(DPOStage, ctx, **options)
    assert steps == [1, 2, 3, 4]
    assert (ctx.stage_dir / "checkpoints" / "checkpoint-3").is_dir()
    assert not (ctx.stage_dir / "model").exists()

    steps.clear()
    crash_at[0] = -1
    out = run_stage(DPOStage, ctx, **options)
    assert steps == [4, 5]  # resumed after checkpoint-3
    assert set(out) == {"model", "adapter"}
    merged = load_file(f"{out['model']}/model.safetensors")
    assert not any("lora" in k for k in merged)
    before = load_file(f"{base}/model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], merged[k])]
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)
    # a finished stage run again does nothing
    steps.clear()
    assert run_stage(DPOStage, ctx, **options) == out and steps == []


# ----------------------------------------------------------------------------- processes
DPO_RECIPE = """[run]
seed = 7
parallelism = "{parallelism}"

[stages.data]
source = "{source}"
eval_size = 8
tokenizer = "builtin:tiny-gpt-neo"
max_prompt_tokens = 64

[stages.dpo]
model = "builtin:tiny-gpt-neo"
data = "@data.rm"
method = "full"
beta = 0.1
learning_rate = 1e-3
max_steps = 3
batch_size = 4
max_length = 64
logging_steps = 1
save_steps = 10
precision = "no"  # float32 on every CPU: the layouts compare to float32 noise
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_two_processes_with_and_without_sharding(tmp_path):
    """Under torchrun with 2 processes the stage trains; `fsdp` holds half of `ddp`'s
    parameter and optimizer memory per process and ends with the same weights (float32
    rounding: the gradients are reduce-scattered instead of all-reduced)."""
    from safetensors.torch import load_file

    source = Path(__file__).parent / "fixtures" / "hh_synthetic.jsonl"
    runs = {}
    for parallelism in ("ddp", "fsdp"):
        recipe = tmp_path / f"{parallelism}.toml"
        recipe.write_text(DPO_RECIPE.format(parallelism=parallelism, source=source),
                          encoding="utf-8")
        out = runs[parallelism] = tmp_path / parallelism
        result = subprocess.run(
            [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node",
             "2", "-m", "rlhfx.cli", "run", str(recipe), "-o", str(out)],
            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    def records(parallelism):
        lines = (runs[parallelism] / "stages" / "dpo" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def held_mb(parallelism):
        return next(r["memory/params_optimizer_mb"] for r in records(parallelism)
                if "memory/params_optimizer_mb" in r)

    assert held_mb("fsdp") == pytest.approx(held_mb("ddp") / 2, rel=0.02)
    losses = {p: [r["loss"] for r in records(p) if "loss" in r] for p in runs}
    assert len(losses["ddp"]) == 3 and losses["ddp"][-1] < losses["ddp"][0]
    assert losses["fsdp"] == pytest.approx(losses["ddp"], rel=1e-4)
    got, want = (load_file(str(runs[p] / "stages" / "dpo" / "model" / "model.safetensors"))
                 for p in ("fsdp", "ddp"))
    assert got.keys() == want.keys()  # a plain checkpoint, gathered
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=0, msg=name)

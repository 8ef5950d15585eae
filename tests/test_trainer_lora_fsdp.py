"""LoRA under `parallelism = "fsdp"` in the Trainer stages, as two torchrun CPU processes:
the adapters train over a base sharded by accelerate's FSDP2 (each process holds about half
the parameters), and the saved adapter and merged model equal the `ddp` run's (the reward
model's held-out accuracy too, measured on the sharded adapters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_align_fsdp import needs_torchrun, torchrun

HH = Path(__file__).resolve().parent / "fixtures" / "hh_synthetic.jsonl"
LORA = 'lora = { r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }'
# float32 on every CPU: bf16 autocast (a native-bf16 CPU's "auto") rounds differently per layout
LORA += '\nprecision = "no"'
STAGES = {
    "sft": f'[stages.sft]\nmodel = "builtin:tiny-gpt-neo"\ndata = "@data.sft"\nmethod = "lora"\n'
           f"{LORA}\nmax_steps = 3\nbatch_size = 2\nmax_length = 48\nlogging_steps = 1\n"
           "learning_rate = 1e-2\n",
    "dpo": f'[stages.dpo]\nmodel = "builtin:tiny-gpt-neo"\ndata = "@data.rm"\nmethod = "lora"\n'
           f"{LORA}\nmax_steps = 2\nbatch_size = 2\nmax_length = 48\nlogging_steps = 1\n"
           "learning_rate = 1e-2\n",
    "reward_model": f'[stages.reward_model]\nmodel = "builtin:tiny-gpt-neo"\ndata = "@data.rm"\n'
                    f'method = "lora"\n{LORA}\nmax_steps = 2\nbatch_size = 2\nmax_length = 256\n'
                    'logging_steps = 1\nlearning_rate = 1e-2\nvalidation_split_percentage = 10\n',
}
#: What each stage saves; the reward model keeps no adapter of its own.
OUTPUTS = {"sft": ("adapter", "model"), "dpo": ("adapter", "model"), "reward_model": ("model",)}
#: The full-model fsdp Trainer runs meet their ddp runs within float32 summation noise.
TOLERANCE = 1e-5


def write_recipe(folder: Path, stage: str, parallelism: str) -> Path:
    path = folder / f"{stage}-{parallelism}.toml"
    path.write_text(
        f'[run]\nseed = 3\nparallelism = "{parallelism}"\n\n'
        f'[stages.data]\nsource = "{HH}"\neval_size = 0\ntokenizer = "builtin:tiny-gpt-neo"\n\n'
        + STAGES[stage], encoding="utf-8",
    )
    return path


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (file,) = folder.glob("*.safetensors")
    return load_file(file)


def metrics(run: Path, stage: str) -> list[dict]:
    lines = (run / "stages" / stage / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module", params=sorted(STAGES))
def trainer_runs(request, tmp_path_factory):
    stage = request.param
    folder = tmp_path_factory.mktemp(f"lora_fsdp_{stage}")
    ddp, fsdp = folder / "ddp", folder / "fsdp"
    torchrun(write_recipe(folder, stage, "ddp"), ddp)
    torchrun(write_recipe(folder, stage, "fsdp"), fsdp)
    return stage, ddp, fsdp


@needs_torchrun
@pytest.mark.slow
def test_adapter_and_merged_model_equal_the_ddp_run(trainer_runs):
    stage, ddp, fsdp = trainer_runs
    for output in OUTPUTS[stage]:
        got = tensors(fsdp / "stages" / stage / output)
        want = tensors(ddp / "stages" / stage / output)
        assert got.keys() == want.keys() and got, output
        for name in sorted(want):
            torch.testing.assert_close(got[name], want[name], atol=TOLERANCE, rtol=0,
                                       msg=f"{output}: {name}")
    merged = tensors(fsdp / "stages" / stage / "model")
    assert not any("lora_" in k for k in merged)
    from rlhfx.models import load_causal_lm

    base = load_causal_lm("builtin:tiny-gpt-neo").state_dict()
    moved = {k for k in merged if k in base and not torch.equal(merged[k], base[k])}
    assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved), moved
    losses = [[r["loss"] for r in metrics(run, stage) if "loss" in r] for run in (ddp, fsdp)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and len(losses[0]) >= 2
    if stage == "reward_model":  # held-out accuracy, measured on the sharded adapters
        got, want = (json.loads((run / "stages" / stage / "eval.json").read_text())["after"]
                     for run in (fsdp, ddp))
        assert got["pairs"] == want["pairs"] > 0 and got["accuracy"] == want["accuracy"]
        assert got["mean_margin"] == pytest.approx(want["mean_margin"], abs=1e-4)


@needs_torchrun
@pytest.mark.slow
def test_each_process_holds_about_half_of_the_lora_model(trainer_runs):
    stage, ddp, fsdp = trainer_runs
    key = "memory/params_optimizer_mb"
    full = [r[key] for r in metrics(ddp, stage) if key in r]
    half = [r[key] for r in metrics(fsdp, stage) if key in r]
    assert len(full) == len(half) == 1
    assert half[0] == pytest.approx(full[0] / 2, rel=0.05)

"""LoRA under `parallelism = "fsdp"` in the alignment loop, as two torchrun CPU processes: the
adapters train over a sharded base (each process holds about half the parameters), and the
merged final model matches the `ddp` run of the same recipe, as the full-model fsdp runs do
(tests/test_align_fsdp.py), after the sharded run was stopped and resumed from its checkpoint.
GRPO stands for the critic-free algorithms (RLOO, REINFORCE++ share its update); RAFT trains
through a Trainer; PPO adds its value head, sharded beside the adapted policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_align_fsdp import needs_torchrun, records, torchrun

#: Sized like tests/test_align_fsdp.py's runs, so both processes train every iteration.
ALGORITHMS = {
    "grpo": dict(batch_size=3, k=2, mini_batch_size=1, epochs=2, learning_rate=1e-2),
    "raft": dict(batch_size=4, k=2, epochs=2, train_batch_size=1, learning_rate=1e-2),
    "ppo": dict(batch_size=4, mini_batch_size=2, ppo_epochs=2, learning_rate=1e-2),
}
SHARED = dict(min_new_tokens=6, max_new_tokens=6, inference_batch_size=8, save_every=1)
LORA = '{ r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }'
#: The fsdp runs of full models meet their ddp runs within 1e-5 (RAFT's Trainer 5e-5); the
#: adapters' product is added to the base weights, so the same bound holds after merging.
TOLERANCE = 5e-5


def write_recipe(folder: Path, algorithm: str, parallelism: str, iterations: int = 2) -> Path:
    settings = {**ALGORITHMS[algorithm], **SHARED, "iterations": iterations}
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    path = folder / f"{algorithm}-lora-{parallelism}.toml"
    path.write_text(
        f'[run]\nseed = 3\nparallelism = "{parallelism}"\n\n'
        '[stages.align]\npolicy = "builtin:tiny-gpt-neo"\nprompts = "builtin:tiny-prompts"\n'
        'reward = { name = "length", unit = "chars" }\n'
        f'algorithm = {{ name = "{algorithm}", {options}, lora = {LORA} }}\n',
        encoding="utf-8",
    )
    return path


def saved(run: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "stages" / "align" / "model")
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module", params=sorted(ALGORITHMS))
def lora_runs(request, tmp_path_factory):
    algorithm = request.param
    folder = tmp_path_factory.mktemp(f"lora_fsdp_{algorithm}")
    ddp, fsdp = folder / "ddp", folder / "fsdp"
    torchrun(write_recipe(folder, algorithm, "ddp"), ddp)
    torchrun(write_recipe(folder, algorithm, "fsdp", iterations=1), fsdp)  # then resumed:
    torchrun(write_recipe(folder, algorithm, "fsdp"), fsdp)
    return algorithm, ddp, fsdp


@needs_torchrun
@pytest.mark.slow
def test_lora_over_a_sharded_base_ends_where_ddp_does(lora_runs):
    from rlhfx.models import load_causal_lm

    _, ddp, fsdp = lora_runs
    got, want = saved(fsdp), saved(ddp)
    assert got.keys() == want.keys()
    assert not any("lora_" in k for k in got)  # merged: a plain model
    for name in sorted(want):
        torch.testing.assert_close(got[name], want[name], atol=TOLERANCE, rtol=0, msg=name)
    # The adapters trained: exactly the adapted projections moved away from the base.
    base = load_causal_lm("builtin:tiny-gpt-neo").state_dict()
    moved = {k for k in got if not torch.equal(got[k], base[k])}
    assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved), moved
    assert len(records(fsdp)) == len(records(ddp)) == 2  # one record per iteration
    assert "resuming after iteration 1" in (fsdp / "run.log").read_text()


@needs_torchrun
@pytest.mark.slow
def test_each_process_holds_about_half_of_the_lora_model(lora_runs):
    """The frozen base is sharded too: parameters (and the adapters' optimizer state) per
    process are about half of what each `ddp` process holds."""
    algorithm, ddp, fsdp = lora_runs
    key = f"{algorithm}/memory/params_optimizer_mb"
    full = {r[key] for r in records(ddp) if key in r}
    half = {r[key] for r in records(fsdp) if key in r}
    assert len(full) == 1 and len(half) == 1
    assert half.pop() == pytest.approx(full.pop() / 2, rel=0.05)

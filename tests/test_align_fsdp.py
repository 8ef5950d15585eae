"""The alignment loop under `parallelism = "fsdp"` (FSDP2), as two torchrun CPU processes, for
PPO (value head, accelerate-wrapped optimizer), RAFT (a Trainer per iteration over the sharded
policy), GRPO (the critic-free update RLOO and REINFORCE++ share) and online DPO: each process
holds about half the parameter and optimizer memory of `ddp`, the final weights match the `ddp`
run of the same recipe, and a run resumed from a checkpoint ends where an uninterrupted one does.

The reference run is `ddp` with two processes rather than one process: the loop shards the
prompts over processes and seeds each process's sampling by rank, so only a run with the same
number of processes sees the same samples. The two differ in how the numbers are summed:
gradients reduce-scattered over shards instead of all-reduced, hence a float32 tolerance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

needs_torchrun = pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
    reason="torchrun is not installed",
)

PPO = dict(batch_size=4, mini_batch_size=2, ppo_epochs=2, learning_rate=1e-3, min_new_tokens=6,
           max_new_tokens=6, save_every=1, keep_checkpoints=5, inference_batch_size=8)
#: Two processes, sharded or not, may add the same float32 numbers in another order (with two
#: processes the averages come out identical: measured 0.0 difference).
TOLERANCE = 1e-5


#: The other algorithms, sized so that both processes train every iteration. GRPO's prompts
#: split 2 / 1 over the processes and one response per mini-batch: the process with fewer
#: rows sits some mini-batches out, which under fsdp still takes part in the collectives.
OTHERS = {
    "raft": dict(batch_size=4, k=2, epochs=2, train_batch_size=1, learning_rate=1e-3),
    "grpo": dict(batch_size=3, k=2, mini_batch_size=1, epochs=2, learning_rate=1e-3),
    "online_dpo": dict(batch_size=4, k=2, mini_batch_size=2, epochs=2, learning_rate=1e-3),
}
SHARED = dict(min_new_tokens=6, max_new_tokens=6, save_every=1, keep_checkpoints=5,
              inference_batch_size=8)
#: RAFT's Trainer averages gradients through accelerate's FSDP wrapper (float32 shards, another
#: summation order) and Adam magnifies tiny gradients: measured 1.1e-5 after two iterations.
RAFT_TOLERANCE = 5e-5
#: Algorithms whose sharded run is also stopped after one iteration and resumed.
RESUMED = {"raft", "grpo"}


def write_recipe(folder: Path, parallelism: str, iterations: int, algorithm: str = "ppo") -> Path:
    settings = PPO if algorithm == "ppo" else {**OTHERS[algorithm], **SHARED}
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in
                        {**settings, "iterations": iterations}.items())
    path = folder / f"{algorithm}-{parallelism}-{iterations}.toml"
    path.write_text(
        f'[run]\nseed = 3\nparallelism = "{parallelism}"\n\n'
        '[stages.align]\npolicy = "builtin:tiny-gpt-neo"\nprompts = "builtin:tiny-prompts"\n'
        'reward = { name = "length", unit = "chars" }\n'
        f'algorithm = {{ name = "{algorithm}", {options} }}\n',
        encoding="utf-8",
    )
    return path


def torchrun(recipe: Path, out: Path) -> None:
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node",
               "2", "-m", "rlhfx.cli", "run", str(recipe), "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def records(out: Path) -> list[dict]:
    lines = (out / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def final_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The saved policy and value head, named as in a loop checkpoint."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    weights = {f"policy.{k}": v.clone() for k, v in model.state_dict().items()}
    from safetensors.torch import load_file

    head = load_file(model_dir / "value_head.safetensors")
    weights.update({f"v_head.{k}": v for k, v in head.items()})
    return weights


def checkpoint_weights(run: Path, iteration: int) -> dict[str, torch.Tensor]:
    from rlhfx.alignment.checkpoints import Checkpoints

    folder = run / "stages" / "align" / "checkpoints" / f"iter-{iteration:04d}"
    return Checkpoints(folder.parent).load_algorithm_state(folder)["model"]


def assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    shared = set(got) & set(want)
    assert len(shared) > 10 and all(k.startswith("v_head.") for k in set(want) - shared)
    for name in sorted(shared):
        torch.testing.assert_close(got[name], want[name], atol=TOLERANCE, rtol=0, msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`ddp` for three iterations; `fsdp` for two (its model kept aside), then the same recipe
    with three iterations: the loop resumes after the checkpoint of iteration 2 (gathered
    weights and optimizer state in it) and the third iteration runs sharded again."""
    folder = tmp_path_factory.mktemp("fsdp_align")
    ddp, fsdp = folder / "ddp", folder / "fsdp"
    torchrun(write_recipe(folder, "ddp", 3), ddp)
    torchrun(write_recipe(folder, "fsdp", 2), fsdp)
    shutil.copytree(fsdp / "stages" / "align" / "model", folder / "fsdp-after-2")
    first = records(fsdp)
    torchrun(write_recipe(folder, "fsdp", 3), fsdp)
    return ddp, fsdp, folder / "fsdp-after-2", first


@pytest.mark.slow
@needs_torchrun
def test_each_process_holds_about_half_the_parameters_and_optimizer_state(runs):
    ddp, fsdp, _, _ = runs
    key = "ppo/memory/params_optimizer_mb"
    full = {r[key] for r in records(ddp)}
    half = {r[key] for r in records(fsdp)}
    # policy + value head in float32 with Adam's two moments: the same every iteration
    assert len(full) == 1 and len(half) == 1
    assert half.pop() == pytest.approx(full.pop() / 2, rel=0.02)


@pytest.mark.slow
@needs_torchrun
def test_sharded_training_ends_with_the_weights_of_the_unsharded_run(runs):
    ddp, _, after_two, first = runs
    config = json.loads((after_two / "config.json").read_text())
    assert config["architectures"] == ["GPTNeoForCausalLM"]  # a plain checkpoint
    want = checkpoint_weights(ddp, 2)  # the ddp run after the same two iterations
    assert_close(final_weights(after_two), want)
    from rlhfx.tiny import tiny_causal_lm

    start = tiny_causal_lm("builtin:tiny-gpt-neo").state_dict()
    moved = max((want[f"policy.{k}"] - v).abs().max().item() for k, v in start.items()
                if f"policy.{k}" in want)
    assert moved > 100 * TOLERANCE  # training moved the weights well beyond the tolerance
    for a, b in zip(records(ddp)[:2], first, strict=True):
        for key in ("reward_mean", "kl_mean", "ppo/loss/total"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (a["step"], key)


@pytest.mark.slow
@needs_torchrun
def test_a_sharded_run_resumes_from_its_checkpoint(runs):
    ddp, fsdp, _, _ = runs
    assert "resuming after iteration 2" in (fsdp / "run.log").read_text()
    assert [r["step"] for r in records(fsdp)] == [1, 2, 3]
    # the checkpoint holds full (gathered) weights, those of the ddp run
    assert_close(checkpoint_weights(fsdp, 2), checkpoint_weights(ddp, 2))
    assert_close(final_weights(fsdp / "stages" / "align" / "model"),
                 final_weights(ddp / "stages" / "align" / "model"))
    for a, b in zip(records(ddp), records(fsdp), strict=True):
        for key in ("reward_mean", "kl_mean", "ppo/loss/total", "ppo/kl_coef"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (a["step"], key)


# ------------------------------------------------------------------ RAFT, GRPO, online DPO


def saved_policy(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "stages" / "align" / "model" / "model.safetensors"))


@pytest.fixture(scope="module", params=sorted(OTHERS))
def other_runs(request, tmp_path_factory):
    """`ddp` for two iterations; `fsdp` for one, then the same recipe with two iterations
    (resumed after the first: gathered weights, and AdamW state for GRPO). Online DPO keeps
    its optimizer state exactly as GRPO does (`WithOptimizerState`): it runs straight through."""
    algorithm = request.param
    folder = tmp_path_factory.mktemp(f"fsdp_{algorithm}")
    ddp, fsdp = folder / "ddp", folder / "fsdp"
    torchrun(write_recipe(folder, "ddp", 2, algorithm), ddp)
    if algorithm in RESUMED:
        torchrun(write_recipe(folder, "fsdp", 1, algorithm), fsdp)
    torchrun(write_recipe(folder, "fsdp", 2, algorithm), fsdp)
    return algorithm, ddp, fsdp


@pytest.mark.slow
@needs_torchrun
def test_other_algorithms_shard_train_like_ddp_and_resume(other_runs):
    algorithm, ddp, fsdp = other_runs
    if algorithm in RESUMED:
        assert "resuming after iteration 1" in (fsdp / "run.log").read_text()
    key = f"{algorithm}/memory/params_optimizer_mb"
    full = {r[key] for r in records(ddp)}
    half = {r[key] for r in records(fsdp)}
    assert len(full) == 1 and len(half) == 1
    assert half.pop() == pytest.approx(full.pop() / 2, rel=0.02)

    tolerance = RAFT_TOLERANCE if algorithm == "raft" else TOLERANCE
    got, want = saved_policy(fsdp), saved_policy(ddp)
    assert got.keys() == want.keys()
    for name in sorted(want):
        torch.testing.assert_close(got[name], want[name], atol=tolerance, rtol=0, msg=name)
    from rlhfx.tiny import tiny_causal_lm

    start = tiny_causal_lm("builtin:tiny-gpt-neo").state_dict()
    moved = max((want[k] - v).abs().max().item() for k, v in start.items() if k in want)
    assert moved > 50 * tolerance  # training moved the weights well beyond the tolerance
    for a, b in zip(records(ddp), records(fsdp), strict=True):
        for name in ("reward_mean", "train_loss"):
            assert a[name] == pytest.approx(b[name], rel=1e-3, abs=1e-5), (a["step"], name)
    if algorithm == "grpo":
        # the process with fewer rows sat mini-batches out, sharded, without hanging
        assert all(r["grpo/idle_minibatches"] > 0 for r in records(fsdp))


@pytest.mark.slow
@needs_torchrun
def test_a_sharded_policy_samples_in_bf16(tmp_path):
    """`rollouts = { engine = "hf", dtype = "bfloat16" }` under fsdp: the sharded policy keeps
    its weights and samples under autocast (no bf16 copies of shards), and trains on."""
    recipe = write_recipe(tmp_path, "fsdp", 2, "grpo")
    text = recipe.read_text(encoding="utf-8").replace(
        "[stages.align]\n", '[stages.align]\nrollouts = { engine = "hf", dtype = "bfloat16" }\n')
    recipe.write_text(text, encoding="utf-8")
    torchrun(recipe, tmp_path / "run")
    recs = records(tmp_path / "run")
    assert [r["step"] for r in recs] == [1, 2]
    assert all(r["reward_mean"] > 0 and r["train_loss"] == r["train_loss"] for r in recs)

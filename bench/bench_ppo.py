"""Seconds per PPO update: rlhfx's `ppo` against TRL 1.12's experimental PPOTrainer, one run.

    python bench/bench_ppo.py                          # rlhfx only, per-phase split
    python bench/bench_ppo.py --trl-python .venv-trl112/bin/python   # race TRL 1.12
    python bench/bench_ppo.py --baseline /tmp/old      # also an older checkout's plugins

TRL deleted its PPOTrainer in 1.13, so its side runs in another environment with trl==1.12.0
(`python3 -m venv .venv-trl112 && .venv-trl112/bin/pip install torch==2.13.0 trl==1.12.0`);
rlhfx's sides run in this one. `--baseline DIR` races the `plugins/` folder of another rlhfx
checkout (say the previous commit's, `git archive HEAD~1 plugins | tar -x -C DIR`) against this
one: only the plugins come from there, so it compares changes to an algorithm's plugin.

Every side gets the same tiny policy (the built-in GPT-Neo, saved to a folder once), the same
prompts (the built-in tiny set), the same reward model (a tiny GPT-Neo classifier sharing the
policy's tokenizer, as TRL's PPOTrainer requires; both score the sampled token ids), batch and
mini-batch sizes, PPO epochs, learning rate, KL coefficient, a fixed response length (no stop
at EOS, no cleaning), fp32, no gradient checkpointing, one torch thread. rlhfx loads its
GPT-Neos with torch's fused tanh-GELU (`rlhfx.models.fused_gelu`: the same function up to
rounding), TRL with transformers' Python one. TRL's value model is a separate network (its
design); rlhfx's is a head on the policy (TRL classic's). Each measurement runs in a fresh
process; the sides alternate (rlhfx, TRL, rlhfx, TRL, ...) so the machine's load hits them
alike, and the load average is printed with every run. The first update is warm-up and left
out; a run's figure is the mean of the rest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

HERE = Path(__file__).resolve()
PHASES = {  # rlhfx's metric -> label
    "seconds_generate": "generation",
    "seconds_score": "scoring",
    "ppo/time/forward_pass": "forward passes",
    "ppo/time/optimize_step": "optimisation",
}


# ------------------------------------------------------------------------------ set-up
def build_models(folder: Path) -> None:
    """The tiny policy and a tiny reward model with the policy's tokenizer, saved."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForSequenceClassification

    from rlhfx.models import load_causal_lm, load_tokenizer

    policy = load_causal_lm("builtin:tiny-gpt-neo")
    tokenizer = load_tokenizer("builtin:tiny-gpt-neo")
    policy.save_pretrained(folder / "policy")
    tokenizer.save_pretrained(folder / "policy")
    config = GPTNeoConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_layers=2, num_heads=4,
        attention_types=[[["global", "local"], 1]], max_position_embeddings=256, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None,
    )
    torch.manual_seed(0)
    GPTNeoForSequenceClassification(config).save_pretrained(folder / "rm")
    tokenizer.save_pretrained(folder / "rm")
    from rlhfx import tiny
    from rlhfx.data.sets import read_prompts

    prompts = read_prompts(str(tiny.prompt_set_path("builtin:tiny-prompts")))
    (folder / "prompts.json").write_text(json.dumps(prompts), encoding="utf-8")


# ------------------------------------------------------------------------------ rlhfx's side
def rlhfx_side(s: dict, baseline: str | None) -> dict:
    if baseline:  # an older checkout's plugins shadow this one's
        import rlhfx.plugins

        rlhfx.plugins.__path__.insert(0, str(Path(baseline) / "plugins"))
    from rich.console import Console

    from rlhfx.recipe import load_recipe
    from rlhfx.runner import run_recipe

    folder = Path(s["folder"])
    algorithm = {
        "iterations": s["updates"], "batch_size": s["batch_size"],
        "mini_batch_size": s["mini_batch_size"], "ppo_epochs": s["epochs"],
        "learning_rate": s["learning_rate"], "init_kl_coef": s["kl_coef"],
        "adap_kl_ctrl": False, "min_new_tokens": s["length"], "max_new_tokens": s["length"],
        "inference_batch_size": s["batch_size"], "save_every": s["updates"],
        "save_samples": False, "torch_threads": 1,
    }
    algorithm.update(s.get("rlhfx_options", {}))
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in algorithm.items())
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "bench_ppo.toml"
        recipe.write_text(
            f'[run]\nseed = {s["seed"]}\ndevice = "cpu"\n\n[stages.align]\n'
            f'policy = "{folder / "policy"}"\nprompts = "builtin:tiny-prompts"\ncleaners = []\n'
            f'reward = {{ name = "reward_model", model = "{folder / "rm"}" }}\n'
            f'algorithm = {{ name = "ppo", {options} }}\n', encoding="utf-8")
        run_dir = run_recipe(load_recipe(recipe), console=Console(stderr=True, quiet=True),
                             output_dir=Path(tmp) / "run")
        lines = (run_dir / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
    recs = [r for r in map(json.loads, lines) if r.get("step", 0) >= 2]  # 1: warm-up
    phases = {label: statistics.mean(r.get(key, 0.0) for r in recs)
              for key, label in PHASES.items()}
    return {"updates": [r["seconds_iteration"] for r in recs], "phases": phases}


# ------------------------------------------------------------------------------ TRL's side
def trl_side(s: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.set_num_threads(1)
    folder = Path(s["folder"])
    tokenizer = AutoTokenizer.from_pretrained(folder / "policy")
    prompts = json.loads((folder / "prompts.json").read_text(encoding="utf-8"))
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    total = s["batch_size"] * s["updates"]
    rows = (rows * (total // len(rows) + 1))[:total]
    dataset = Dataset.from_dict({"input_ids": rows})
    # TRL's default is gradient checkpointing on; newer versions also have another name
    checkpointing = {k: False for k in ("gradient_checkpointing", "activation_checkpointing")
                     if k in PPOConfig.__dataclass_fields__}
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        # TRL 1.12 takes its rollout batch from per_device_train_batch_size (times the
        # accumulation steps) and splits it into num_mini_batches optimiser steps: batch 64,
        # mini-batch 8 is 64 x 1 in 8 mini-batches (8 x 8 would be a batch of 8).
        args = PPOConfig(
            output_dir=out, per_device_train_batch_size=s["batch_size"],
            gradient_accumulation_steps=1,
            num_mini_batches=s["batch_size"] // s["mini_batch_size"],
            local_rollout_forward_batch_size=s["batch_size"],
            total_episodes=total, num_ppo_epochs=s["epochs"], response_length=s["length"],
            stop_token=None, temperature=1.0, learning_rate=s["learning_rate"],
            lr_scheduler_type="constant", kl_coef=s["kl_coef"], missing_eos_penalty=None,
            num_sample_generations=0, bf16=False, fp16=False, use_cpu=True, report_to=[],
            save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=s["seed"],
            **checkpointing,
        )
        policy = AutoModelForCausalLM.from_pretrained(folder / "policy")
        policy.generation_config.eos_token_id = None  # fixed length: no stop at EOS
        trainer = PPOTrainer(
            args=args, processing_class=tokenizer, model=policy,
            ref_model=AutoModelForCausalLM.from_pretrained(folder / "policy"),
            reward_model=AutoModelForSequenceClassification.from_pretrained(folder / "rm"),
            value_model=AutoModelForSequenceClassification.from_pretrained(folder / "rm"),
            train_dataset=dataset, callbacks=[Clock()],
        )
        start = time.perf_counter()
        trainer.train()
    marks = [start, *stamps]
    return {"updates": [b - a for a, b in itertools.pairwise(marks)][1:], "phases": {}}


# ------------------------------------------------------------------------------ the race
def run_side(side: str, settings: Path, python: str, baseline: str | None) -> dict:
    cmd = [python, str(HERE), "--side", side, "--settings", str(settings)]
    if baseline and side == "baseline":
        cmd += ["--baseline", baseline]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--length", type=int, default=64, help="response tokens, fixed")
    parser.add_argument("--updates", type=int, default=4, help="per run; the first is warm-up")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--trl-python", help="python of an environment with trl==1.12.0")
    parser.add_argument("--baseline", help="another rlhfx checkout whose plugins/ to race")
    parser.add_argument("--rlhfx-options", default="{}",
                        help='more ppo options for the rlhfx sides, JSON')
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:
        s = json.loads(Path(args.settings).read_text(encoding="utf-8"))
        result = trl_side(s) if args.side == "trl" else rlhfx_side(s, args.baseline)
        print(json.dumps(result))
        return 0

    sides = {"rlhfx": sys.executable}
    if args.baseline:
        sides["baseline"] = sys.executable
    if args.trl_python:
        sides["trl"] = args.trl_python
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_models(folder)
        settings = folder / "settings.json"
        settings.write_text(json.dumps({
            "folder": str(folder), "batch_size": args.batch_size,
            "mini_batch_size": args.mini_batch_size, "epochs": args.epochs,
            "length": args.length, "updates": args.updates, "learning_rate": 1e-4,
            "kl_coef": 0.05, "seed": 1, "rlhfx_options": json.loads(args.rlhfx_options),
        }), encoding="utf-8")
        print(f"PPO, batch {args.batch_size}, mini-batch {args.mini_batch_size}, "
              f"{args.epochs} epochs, {args.length} response tokens (fixed), fp32, 1 thread, "
              f"{args.updates} updates per run (first left out), {os.cpu_count()} CPUs")
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for run in range(args.runs):
            for side, python in sides.items():
                load = os.getloadavg()[0]
                result = run_side(side, settings, python, args.baseline)
                results[side].append(result)
                print(f"run {run + 1} {side:<8} {statistics.mean(result['updates']):7.2f} s "
                      f"per update  (load {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)

    means = {side: statistics.mean(statistics.mean(r["updates"]) for r in rs)
             for side, rs in results.items()}
    print("\nseconds per update (mean of runs), ratio to TRL where raced:")
    for side, value in means.items():
        ratio = f"  {value / means['trl']:.2f}x TRL" if "trl" in means else ""
        print(f"  {side:<8} {value:7.2f} s{ratio}")
    if "baseline" in means:
        print(f"  rlhfx / baseline: {means['rlhfx'] / means['baseline']:.2f}x")
    for side in ("rlhfx", "baseline"):
        if side in results:
            phases = {k: statistics.mean(r["phases"][k] for r in results[side])
                      for k in results[side][0]["phases"]}
            print(f"  {side} phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())

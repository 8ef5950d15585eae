"""Seconds per update of rlhfx's `grpo` and `rloo` against TRL 1.16's GRPOTrainer and
RLOOTrainer, measured side by side in one run.

    python bench/bench_grpo_trl.py                    # grpo and rloo, 3 runs each, alternating
    python bench/bench_grpo_trl.py --algorithms grpo --runs 5 --steps 10

Both sides train the built-in tiny GPT-Neo on the built-in tiny prompts with the same reward
(one point per word of 3+ letters, no model), the same group size, prompts per update,
response length (16 new tokens), epochs per batch, learning rate (constant), KL coefficient,
clip range, gradient clipping and AdamW, the same precision (`--precision`, float32 unless
told: TRL's own default is bf16 autocast even on a CPU, which is slow on a CPU without
native bf16; both sides are pinned to the one chosen), with one torch thread, one process
per run, the runs alternating (TRL, rlhfx, TRL, ...). An update is everything one step
does: generate, score, the update's forward and backward passes, the optimiser step. The first
steps of each run are left out (warm-up); each run's median is taken, and the table shows
the median of runs (each run's figure is printed too, with the ratio of the two sides' best
runs: on a shared machine a slow spell can fall on a few runs of one side). Settings that
still differ are printed under the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

WORDS = re.compile(r"[A-Za-z]{3,}")
SETTINGS = {
    "grpo": {"beta": 0.04, "trl": "GRPO"},
    "rloo": {"beta": 0.05, "trl": "RLOO"},
}


def word_bonus(completions: list, **_: object) -> list[float]:
    """The reward of recipes/tiny_ppo.toml: one point per real-looking word."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(len(WORDS.findall(t))) for t in texts]


# ------------------------------------------------------------------------------ one run each


def run_trl(args: argparse.Namespace, algorithm: str) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from rlhfx.data.prompts import read_prompt_set
    from rlhfx.tiny import tiny_causal_lm, tiny_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = tempfile.mkdtemp(prefix="bench-trl-")
    # saved and named by path: TRL loads its reference model from the policy's name
    policy_dir = str(Path(out) / "policy")
    tiny_causal_lm("builtin:tiny-gpt-neo").save_pretrained(policy_dir)
    tokenizer = tiny_tokenizer("builtin:tiny-gpt-neo")
    tokenizer.save_pretrained(policy_dir)
    tokenizer.padding_side = "left"
    model = policy_dir
    prompts = read_prompt_set("builtin:tiny-prompts")
    data = Dataset.from_dict({"prompt": prompts})
    common = dict(
        output_dir=out, per_device_train_batch_size=args.prompts * args.k,
        num_generations=args.k, max_completion_length=args.length, num_iterations=args.epochs,
        learning_rate=args.lr, lr_scheduler_type="constant", beta=SETTINGS[algorithm]["beta"],
        epsilon=0.2, max_grad_norm=1.0, temperature=1.0, max_steps=args.steps,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=args.seed,
        disable_dropout=True, dataloader_num_workers=0,
        bf16=args.precision == "bfloat16", fp16=False,
        generation_kwargs={"min_new_tokens": args.length},  # fixed length: no EOS stop
    )
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    if algorithm == "grpo":
        config = trl.GRPOConfig(**common, loss_type="grpo", scale_rewards="group")
        trainer = trl.GRPOTrainer(model=model, reward_funcs=word_bonus, args=config,
                                  train_dataset=data, processing_class=tokenizer,
                                  callbacks=[Timer()])
    else:
        config = trl.RLOOConfig(**common)
        trainer = trl.RLOOTrainer(model=model, reward_funcs=word_bonus, args=config,
                                  train_dataset=data, processing_class=tokenizer,
                                  callbacks=[Timer()])
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    lengths = [h.get("completions/mean_length") for h in trainer.state.log_history
               if "completions/mean_length" in h]
    return {"times": times, "reward": rewards, "length": lengths}


def run_rlhfx(args: argparse.Namespace, algorithm: str) -> dict:
    from click.testing import CliRunner

    from rlhfx.cli import cli

    out = Path(tempfile.mkdtemp(prefix="bench-rlhfx-"))
    options = {
        "name": algorithm, "iterations": args.steps, "batch_size": args.prompts, "k": args.k,
        "epochs": args.epochs, "learning_rate": args.lr, "beta": SETTINGS[algorithm]["beta"],
        "clip_low": 0.2, "clip_high": 0.2, "max_grad_norm": 1.0,
        "min_new_tokens": args.length, "max_new_tokens": args.length,
        "inference_batch_size": args.prompts * args.k, "torch_threads": 1,
        "save_every": args.steps, "save_samples": False, "eval_every": 0,
        "dtype": args.precision,
    }
    if algorithm == "grpo":
        options["loss_type"] = "sequence"
    fields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    recipe = out / "recipe.toml"
    recipe.write_text(
        f'[run]\nseed = {args.seed}\ndevice = "cpu"\n\n[stages.align]\n'
        'policy = "builtin:tiny-gpt-neo"\nprompts = "builtin:tiny-prompts"\n'
        'reward = { name = "pattern_penalty", rules = [{ pattern = "[A-Za-z]{3,}", '
        'penalty = -1.0 }] }\n'
        f"algorithm = {{ {fields} }}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(recipe), "-o", str(out / "run")],
                                catch_exceptions=False)
    if result.exit_code:
        raise SystemExit(result.output)
    recs = [json.loads(line) for line in
            (out / "run" / "stages" / "align" / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r.get("step", 0) > 0]
    return {
        "times": [r["seconds_iteration"] for r in recs],
        "phases": {p: [r[f"seconds_{p}"] for r in recs] for p in ("generate", "score", "update")},
        "reward": [r["reward_mean"] for r in recs],
        "length": [r["response_tokens_mean"] for r in recs],
    }


# ------------------------------------------------------------------------------ the race


def child(args: argparse.Namespace) -> int:
    side, algorithm = args.child.split(":")
    result = (run_trl if side == "trl" else run_rlhfx)(args, algorithm)
    print("RESULT " + json.dumps(result))
    return 0


def one_run(args: argparse.Namespace, side: str, algorithm: str) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{side}:{algorithm}", "--steps",
           str(args.steps), "--prompts", str(args.prompts), "--k", str(args.k), "--length",
           str(args.length), "--epochs", str(args.epochs), "--lr", str(args.lr), "--seed",
           str(args.seed), "--precision", args.precision]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} {algorithm} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def per_update(result: dict, warmup: int) -> float:
    return statistics.median(result["times"][warmup:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "rloo"],
                        choices=sorted(SETTINGS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per update")
    parser.add_argument("--k", type=int, default=4, help="responses per prompt")
    parser.add_argument("--length", type=int, default=16, help="new tokens per response")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="both sides' compute precision (bfloat16: autocast)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import trl

    rows = []
    for algorithm in args.algorithms:
        sides: dict[str, list[dict]] = {"trl": [], "rlhfx": []}
        loads = []
        for _ in range(args.runs):
            for side in ("trl", "rlhfx"):
                loads.append(os.getloadavg()[0])
                sides[side].append(one_run(args, side, algorithm))
        runs = {side: [per_update(r, args.warmup) for r in sides[side]] for side in sides}
        t_trl, t_ours = statistics.median(runs["trl"]), statistics.median(runs["rlhfx"])
        print(f"{algorithm}: each run's seconds per update, TRL "
              + " ".join(f"{t:.3f}" for t in runs["trl"]) + "; rlhfx "
              + " ".join(f"{t:.3f}" for t in runs["rlhfx"])
              + f"; best runs {min(runs['rlhfx']) / min(runs['trl']):.2f}x", flush=True)
        phases = {p: statistics.median(statistics.median(r["phases"][p][args.warmup:])
                                       for r in sides["rlhfx"])
                  for p in ("generate", "score", "update")}
        length = {s: statistics.mean(x for r in sides[s] for x in r["length"] if x is not None)
                  for s in sides}
        rows.append((algorithm, t_trl, t_ours, phases, length, min(loads), max(loads)))

    print(f"\nrlhfx vs TRL {trl.__version__}: seconds per update (median of {args.runs} runs, "
          f"each the median of steps {args.warmup + 1}-{args.steps}); "
          f"{args.prompts} prompts x {args.k} responses x {args.length} tokens, "
          f"{args.epochs} epoch(s), lr {args.lr}, {args.precision} on both sides, 1 thread, "
          f"{os.cpu_count()} CPUs")
    print(describe())
    print(f"{'algorithm':10} {'TRL s':>8} {'rlhfx s':>8} {'ratio':>6}  rlhfx phases (s)"
          "                       resp. tokens (TRL/rlhfx)  load 1-min")
    for algorithm, t_trl, t_ours, phases, length, lo, hi in rows:
        split = ", ".join(f"{p} {v:.3f}" for p, v in phases.items())
        print(f"{algorithm:10} {t_trl:8.3f} {t_ours:8.3f} {t_ours / t_trl:6.2f}  {split:38} "
              f"{length['trl']:5.1f}/{length['rlhfx']:<5.1f}             {lo:.1f}-{hi:.1f}")
    print("\nSettings that still differ:")
    print("- generation: TRL's generate() with min_new_tokens (EOS masked until the length); "
          "rlhfx samples with its own length sampler, min = max (a row that samples EOS "
          "stops early; the tiny policy rarely does: see resp. tokens)")
    print("- TRL's step also logs completions and metrics through the HF Trainer; rlhfx's "
          "iteration writes metrics.jsonl and redraws its plots (outside the timed span)")
    print("- rloo: both treat a response as one action with a sequence-level ratio; TRL "
          "normalises nothing (normalize_advantages = False), neither does rlhfx")
    print("- rlhfx loads GPT-Neo with torch's fused tanh-GELU (rlhfx.models.fused_gelu, the "
          "same function up to rounding); TRL's from_pretrained keeps transformers' Python one")
    return 0


if __name__ == "__main__":
    sys.exit(main())

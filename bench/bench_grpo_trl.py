"""Seconds per update: rlhfx's grpo / rloo against TRL's GRPOTrainer / RLOOTrainer, one run.

    python bench/bench_grpo_trl.py                   # both algorithms, 3 alternating rounds
    python bench/bench_grpo_trl.py --algorithms grpo --runs 5 --updates 8

Both sides get the same tiny policy (the built-in GPT-Neo, saved to a folder once), the same
prompts (the built-in tiny set), the same reward function (+1 per word-like run of 3+ letters,
the tiny recipes' word bonus), group size k, a fixed response length (no stop at EOS: both
generate exactly `--length` tokens), optimisation epochs per batch, learning rate, KL
coefficient, fp32, and one torch thread. Each measurement runs in a fresh process; the sides
alternate (rlhfx, TRL, rlhfx, TRL, ...) so that machine load hits both alike, and the load
average is printed with every run.

An update is one batch: P prompts x k samples generated, scored, and trained on for `epochs`
passes (TRL: `num_iterations` optimizer steps on one generation batch). The first update is
warm-up and left out; the figure is the mean of the rest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

WORD = re.compile(r"[A-Za-z]{3,}")


@dataclass(frozen=True)
class Settings:
    algorithm: str          # "grpo" or "rloo"
    policy_dir: str
    prompts: int            # P: prompts per update
    k: int                  # samples per prompt (group size)
    length: int             # response tokens, fixed
    epochs: int             # optimisation passes over each batch
    updates: int            # batches (the first is warm-up)
    learning_rate: float
    beta: float             # KL coefficient (0: no reference model)
    clip: float
    seed: int


def word_bonus(texts: list[str]) -> list[float]:
    """+1 per word-like run of 3+ letters: the reward of recipes/tiny_raft.toml."""
    return [float(len(WORD.findall(t))) for t in texts]


def read_prompts() -> list[str]:
    from rlhfx import tiny
    from rlhfx.plugins.data.sets import read_prompts as read

    return read(str(tiny.prompt_set_path("builtin:tiny-prompts")))


def save_policy(folder: Path) -> None:
    from rlhfx.models import load_causal_lm, load_tokenizer

    load_causal_lm("builtin:tiny-gpt-neo").save_pretrained(folder)
    load_tokenizer("builtin:tiny-gpt-neo").save_pretrained(folder)


# ------------------------------------------------------------------------------ TRL's side


def trl_side(s: Settings) -> list[float]:
    """Seconds of each update with TRL's GRPOTrainer or RLOOTrainer."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(1)
    if s.algorithm == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

    batch = s.prompts * s.k
    # transformers 5 renamed gradient_checkpointing (the old name warns)
    fields = Config.__dataclass_fields__
    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in fields
                     else "gradient_checkpointing")
    extra = dict(loss_type="dapo", scale_rewards="group") if s.algorithm == "grpo" else {}
    with tempfile.TemporaryDirectory() as out:
        args = Config(
            output_dir=out,
            per_device_train_batch_size=batch,     # one generation batch = P x k samples
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_generations=s.k,
            num_iterations=s.epochs,               # optimizer steps per generation batch
            max_steps=s.updates * s.epochs,
            max_completion_length=s.length,
            generation_kwargs={"min_new_tokens": s.length},  # no early stop at EOS
            temperature=1.0, top_p=1.0, top_k=0,
            learning_rate=s.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            beta=s.beta,
            epsilon=s.clip,
            bf16=False, fp16=False,                # TRL's defaults: bf16 on, checkpointing on
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            log_completions=False,
            dataloader_num_workers=0,
            seed=s.seed,
            **extra,
            **{checkpointing: False},
        )
        prompts = read_prompts()
        model = AutoModelForCausalLM.from_pretrained(s.policy_dir)
        tokenizer = AutoTokenizer.from_pretrained(s.policy_dir)

        def reward(prompts, completions, **kwargs):
            return word_bonus(list(completions))

        stamps: list[float] = []

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % s.epochs == 0:
                    stamps.append(time.perf_counter())

        trainer = Trainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
            callbacks=[Clock()],
        )
        start = time.perf_counter()
        trainer.train()
    marks = [start, *stamps]
    return [b - a for a, b in itertools.pairwise(marks)]


# ------------------------------------------------------------------------------ rlhfx's side


def rlhfx_side(s: Settings) -> list[float]:
    """Seconds of each update with rlhfx's `grpo` / `rloo` algorithm.

    TO BE COMPLETED once those algorithms exist on the alignment loop: run the `align` stage
    with policy = s.policy_dir, the built-in tiny prompts, the word-bonus reward
    (`{ name = "pattern_penalty", rules = [{ pattern = "[A-Za-z]{3,}", penalty = -1.0 }] }`),
    no cleaners that cut responses (so both sides score the same text), k = s.k samples per
    prompt, s.prompts prompts per update, min = max new tokens = s.length, s.epochs epochs,
    s.learning_rate (constant), beta = s.beta, clip = s.clip, temperature 1.0, top_k 0,
    fp32, torch_threads = 1, and return the per-update seconds from its metrics
    (time/step), as trl_side does.
    """
    raise NotImplementedError("the rlhfx side of this race is not written yet")


SIDES = {"trl": trl_side, "rlhfx": rlhfx_side}

DIFFERENCES = [
    "reward input: TRL scores the raw completion; rlhfx scores the cleaned response (with "
    "cleaners that do not cut, the same text)",
    "fixed length: TRL via generation_kwargs min_new_tokens (EOS masked while sampling, but "
    "not in the log-probs it trains on); rlhfx via min_new_tokens = max_new_tokens",
    "batching: TRL trains each generation batch in one forward/backward of P x k sequences "
    "per step; rlhfx per its own train batch size",
    "dropout: both keep the model's own (GPT-Neo tiny: 0.0 everywhere)",
    "grpo loss: TRL loss_type 'dapo' (token-level, global token count); rlhfx's must be set "
    "to loss_type = 'token' to match",
    "rloo KL: TRL subtracts beta x sequence KL from the reward; rlhfx's rloo must put the KL "
    "in the reward as well to match",
    "data order: both shuffle the prompts with the seed, but not the same way",
]


# ------------------------------------------------------------------------------ driver


def one_run(side: str, settings: Settings) -> dict:
    """Run one side in a fresh process (isolated threads, allocator, caches)."""
    command = [sys.executable, __file__, "--one", side, "--settings", json.dumps(asdict(settings))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"side": side, "error": tail[0], "load": load}
    seconds = json.loads(done.stdout.strip().splitlines()[-1])
    timed = seconds[1:] or seconds  # the first update is warm-up
    return {"side": side, "per_update": statistics.mean(timed), "updates": seconds,
            "load": load}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "rloo"],
                        choices=["grpo", "rloo"])
    parser.add_argument("--runs", type=int, default=3, help="rounds of alternating runs")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--length", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--clip", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--one", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # a child: one measurement, seconds per update on the last line
        settings = Settings(**json.loads(args.settings))
        print(json.dumps(SIDES[args.one](settings)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy"
        save_policy(policy)
        print("settings (both sides): tiny GPT-Neo policy (hidden 64, 2 layers), built-in tiny "
              f"prompts, word-bonus reward, P = {args.prompts} prompts x k = {args.k} samples "
              f"per update, {args.length} tokens per response (fixed), {args.epochs} epochs per "
              f"batch, lr {args.learning_rate} (constant), beta {args.beta}, clip {args.clip}, "
              "temperature 1.0, fp32, 1 torch thread, CPU")
        print("settings that still differ:")
        for line in DIFFERENCES:
            print(f"  - {line}")
        for algorithm in args.algorithms:
            settings = Settings(algorithm, str(policy), args.prompts, args.k, args.length,
                                args.epochs, args.updates, args.learning_rate, args.beta,
                                args.clip, args.seed)
            results: dict[str, list[float]] = {"rlhfx": [], "trl": []}
            for run in range(1, args.runs + 1):
                for side in ("rlhfx", "trl"):
                    r = one_run(side, settings)
                    if "error" in r:
                        print(f"{algorithm} run {run} {side:<5}: failed ({r['error']}); "
                              f"load {r['load']:.2f}")
                        continue
                    results[side].append(r["per_update"])
                    print(f"{algorithm} run {run} {side:<5}: {r['per_update']:.3f} s per update "
                          f"(updates: {', '.join(f'{x:.2f}' for x in r['updates'])}); "
                          f"load {r['load']:.2f}", flush=True)
            means = {side: statistics.mean(v) for side, v in results.items() if v}
            line = ", ".join(f"{side} {m:.3f} s" for side, m in means.items())
            print(f"{algorithm}: mean seconds per update over {args.runs} runs: {line}")
            if len(means) == 2:
                print(f"{algorithm}: rlhfx / TRL = {means['rlhfx'] / means['trl']:.2f}x "
                      "(target: at most 0.7x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

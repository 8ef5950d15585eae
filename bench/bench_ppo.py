"""Seconds per PPO step on the tiny built-in policy, split by phase, measured in one run.

    python bench/bench_ppo.py                 # word-bonus reward (no model): scoring ~ 0
    python bench/bench_ppo.py --tiny-rm       # a tiny GPT-Neo reward model, its own tokenizer
    python bench/bench_ppo.py --lora          # LoRA adapters, reference = adapter off

Runs the real `align` stage (rlhfx.runner) with the `ppo` algorithm in a temporary directory and
reads the timings the run logged for each step: generation, scoring (cleaning included), the
rollout forward passes (policy log-probs and values, reference log-probs), the PPO optimisation
(epochs x mini-batches of forward + backward + Adam), and what is left of the step (rewards,
GAE, gathering, logging). The first step is left out of the means (warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

WORD_BONUS = '{ name = "pattern_penalty", rules = [{ pattern = "[A-Za-z]{3,}", penalty = -1.0 }] }'
PHASES = {
    "generation": "time/generation",
    "scoring": "time/scoring",
    "forward passes": "time/ppo/forward_pass",
    "optimisation": "time/ppo/optimize_step",
}


def build_tiny_rm(path: Path) -> None:
    """A 1-layer GPT-Neo classifier with a word-level tokenizer (not the policy's BPE)."""
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
        vocab_size=len(tokenizer), hidden_size=64, num_layers=2, num_heads=4,
        attention_types=[[["global", "local"], 1]], max_position_embeddings=256, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None,
    )
    torch.manual_seed(0)
    GPTNeoForSequenceClassification(config).save_pretrained(path)


def recipe_text(args: argparse.Namespace, rm_dir: Path | None) -> str:
    algorithm = {
        "steps": args.steps, "batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size,
        "ppo_epochs": args.epochs, "learning_rate": 1e-3, "init_kl_coef": 0.2,
        "output_min_length": args.min_len, "output_max_length": args.max_len,
        "inference_batch_size": args.inference_batch_size, "save_every": args.steps,
        "save_samples": False,
    }
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in algorithm.items())
    if args.lora:
        options += ", lora = { r = 8, alpha = 16 }"
    reward = (f'{{ name = "reward_model", model = "{rm_dir}" }}' if rm_dir else
              WORD_BONUS)
    return (
        '[run]\nseed = 1\ndevice = "cpu"\n\n[stages.align]\npolicy = "builtin:tiny-gpt-neo"\n'
        f'prompts = "builtin:tiny-prompts"\nreward = {reward}\n'
        f'algorithm = {{ name = "ppo", {options} }}\n'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--min-len", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=25)
    parser.add_argument("--inference-batch-size", type=int, default=32)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--tiny-rm", action="store_true", help="score with a tiny reward model")
    args = parser.parse_args()

    import torch
    from rich.console import Console

    from rlhfx.recipe import load_recipe
    from rlhfx.runner import run_recipe

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        rm_dir = None
        if args.tiny_rm:
            rm_dir = tmp_path / "rm"
            build_tiny_rm(rm_dir)
        recipe = tmp_path / "bench_ppo.toml"
        recipe.write_text(recipe_text(args, rm_dir), encoding="utf-8")
        started = time.perf_counter()
        run_dir = run_recipe(load_recipe(recipe), console=Console(stderr=True, quiet=True),
                             output_dir=tmp_path / "run")
        wall = time.perf_counter() - started
        lines = (run_dir / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
        recs = [json.loads(line) for line in lines][1:]  # drop the warm-up step

    def mean(key: str) -> float:
        return statistics.mean(r.get(key, 0.0) for r in recs)

    step = mean("time/step")
    print("PPO step on the tiny built-in policy (GPT-Neo, hidden 64, 2 layers, CPU)")
    print(f"settings: batch {args.batch_size}, mini-batch {args.mini_batch_size}, "
          f"{args.epochs} epochs ({args.batch_size // args.mini_batch_size * args.epochs} "
          f"optimiser passes), responses {args.min_len}-{args.max_len - 1} tokens, "
          f"{'LoRA r=8' if args.lora else 'full fine-tuning'}, reward "
          f"{'tiny GPT-Neo RM (word-level tokenizer)' if args.tiny_rm else 'word bonus (regex)'}, "
          f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"mean over steps 2-{args.steps}:")
    accounted = 0.0
    for label, key in PHASES.items():
        value = mean(key)
        accounted += value
        print(f"  {label:<15} {value:7.3f} s  {100 * value / step:5.1f}%")
    rest = step - accounted
    print(f"  {'rest':<15} {rest:7.3f} s  {100 * rest / step:5.1f}%  (rewards, GAE, gathering)")
    print(f"  {'step total':<15} {step:7.3f} s")
    print(f"whole run incl. loading, checkpoint and final save: {wall:.1f} s "
          f"for {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

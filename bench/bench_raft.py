"""How much time does rlhfx's RAFT add on top of the work itself?

Runs RAFT iterations on the built-in tiny policy through `run_recipe` (exactly what
`rlhfx run` does), then repeats the same iterations with bare transformers calls:
`model.generate` on the same batches, the cleaners and reward called directly, a best-of-k
argmax, and `Trainer.train()` on the same examples. Both use the same seeds, so they do the
same work (the script checks that they selected the same samples). Prints seconds per phase
and the ratio of RAFT's wall time per iteration (everything: progress bars, sample files,
checkpoint, metrics, plot) to the bare sum. The first iteration (imports, warm-up) is left out.

    python bench/bench_raft.py [--iterations 5] [--batch-size 32] [--k 8]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rlhfx import hookimpl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """
[run]
seed = {seed}
[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"
[stages.align.algorithm]
name = "raft"
iterations = {iterations}
batch_size = {b}
k = {k}
min_new_tokens = 16
max_new_tokens = 24
inference_batch_size = 64
epochs = 2
learning_rate = 3e-3
train_batch_size = 8
eval_every = 0
torch_threads = 1
[stages.align.reward]
name = "pattern_penalty"
rules = [{{ pattern = "[A-Za-z]{{3,}}", penalty = -1.0 }}]
"""


class Clock:
    """A plugin for rlhfx's own `rlhfx_log_metrics` hook: notes wall and CPU time per record."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float, float]] = []

    @hookimpl
    def rlhfx_log_metrics(self, run_dir, stage, step, metrics):
        self.marks.append((step, time.perf_counter(), time.process_time()))


def run_raft(workdir: Path, iterations: int, b: int, k: int, seed: int) -> list[dict[str, Any]]:
    """Per iteration: the phase times RAFT logged, plus its full wall and CPU time, taken from
    one metrics record to the next (so progress bars, sample files, the checkpoint, the
    metrics record and the plot request all count)."""
    from rich.console import Console

    from rlhfx.recipe import load_recipe
    from rlhfx.registry import get_plugins, reset_plugins
    from rlhfx.runner import run_recipe

    recipe = workdir / "bench.toml"
    recipe.write_text(RECIPE.format(seed=seed, iterations=iterations, b=b, k=k))
    out = workdir / "raft"
    clock = Clock()
    reset_plugins()
    plugins = get_plugins(extra=[(clock, "bench-clock")])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_recipe(load_recipe(recipe, plugins), console=Console(file=io.StringIO()),
               output_dir=out, plugins=plugins)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reset_plugins()
    lines = (out / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r, (step, wall, cpu) in zip(records, clock.marks, strict=True):
        assert r["step"] == step
        r["_wall"], r["_cpu"] = wall, cpu
    for i in range(1, len(records)):
        records[i]["seconds_wall"] = records[i]["_wall"] - records[i - 1]["_wall"]
        records[i]["seconds_cpu"] = records[i]["_cpu"] - records[i - 1]["_cpu"]
    plot_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    records[0]["plotter_cpu_per_draw"] = plot_cpu / max(1, len(records))
    return records


def run_bare(iterations: int, b: int, k: int, seed: int) -> list[dict[str, Any]]:
    """The same iterations with plain transformers calls and no rlhfx machinery around them."""
    import torch
    from transformers import Trainer, TrainingArguments
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from rlhfx.alignment.schedule import iteration_seed
    from rlhfx.alignment.schedule import prompt_indices as batch_prompt_indices
    from rlhfx.data.prompts import read_prompt_set
    from rlhfx.models import load_causal_lm, load_tokenizer
    from rlhfx.plugins.cleaners import Discard, StopMarkers, Strip
    from rlhfx.plugins.rewards.rules import PatternPenalty, PatternPenaltyConfig, PatternRule

    torch.set_num_threads(1)
    seed = seed + 0  # the align stage is stage 0: the runner gives it run.seed + 0
    model = load_causal_lm("builtin:tiny-gpt-neo")
    tok = load_tokenizer("builtin:tiny-gpt-neo")
    prompts = read_prompt_set("builtin:tiny-prompts")
    cleaners = [StopMarkers(), Strip(), Discard()]
    reward = PatternPenalty(PatternPenaltyConfig(rules=[PatternRule(pattern="[A-Za-z]{3,}",
                                                                    penalty=-1.0)]))
    collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)
    eos = tok.eos_token_id
    out = []
    for it in range(1, iterations + 1):
        times: dict[str, float] = {}
        start, start_cpu = time.perf_counter(), time.process_time()
        torch.manual_seed(iteration_seed(seed, it, 0))
        rng = random.Random(iteration_seed(seed, it, 0))
        batch = [prompts[i] for i in batch_prompt_indices(len(prompts), b, it, seed)]
        # generate: left padding, k samples of a prompt in one call, stop at `###Human`
        t = time.perf_counter()
        tok.padding_side = "left"
        texts, finished, owners = [], [], []
        per_call = max(1, 64 // k)
        for s in range(0, len(batch), per_call):
            chunk = batch[s : s + per_call]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=rng.randint(16, 24), do_sample=True, temperature=0.85,
                    top_k=0, top_p=1.0, num_return_sequences=k, pad_token_id=tok.pad_token_id,
                    eos_token_id=eos, use_cache=True, stop_strings=["###Human"], tokenizer=tok,
                )
            new = gen[:, enc["input_ids"].shape[1]:]
            decoded = tok.batch_decode(new, skip_special_tokens=True)
            texts += decoded
            finished += [
                bool((row == eos).any()) or "###Human" in d
                for row, d in zip(new, decoded, strict=True)
            ]
            owners += [s + j // k for j in range(len(decoded))]
        tok.padding_side = "right"
        times["generate"] = time.perf_counter() - t
        # clean and score
        t = time.perf_counter()
        cleaned, keep = [], []
        for owner, text in zip(owners, texts, strict=True):
            dropped = False
            for cleaner in cleaners:
                result = cleaner.clean(batch[owner], text)
                text = result.text
                if result.discard_reason:
                    dropped = True
                    break
            cleaned.append(text)
            keep.append(not dropped)
        scored = [i for i, ok in enumerate(keep) if ok]
        values = reward.score([batch[owners[i]] for i in scored], [cleaned[i] for i in scored])
        rewards: list[float | None] = [None] * len(texts)
        for i, v in zip(scored, values, strict=True):
            rewards[i] = v
        times["score"] = time.perf_counter() - t
        # select the best of k per prompt
        t = time.perf_counter()
        best: dict[int, int] = {}
        for i in scored:
            j = best.get(owners[i])
            if j is None or rewards[i] > rewards[j]:  # type: ignore[operator]
                best[owners[i]] = i
        chosen = sorted(best.values())
        # fine-tune with Trainer on prompt + response, prompt out of the loss (the loop's
        # "update" phase is selection and fine-tuning together)
        examples = []
        for i in chosen:
            raw = texts[i]
            completion = raw[: len(raw) - len(raw.lstrip())] + cleaned[i]
            p_ids = tok(batch[owners[i]], add_special_tokens=False)["input_ids"]
            r_ids = tok(completion, add_special_tokens=False)["input_ids"]
            ids = p_ids + r_ids + ([eos] if finished[i] else [])
            examples.append({"input_ids": ids, "labels": [-100] * len(p_ids) + ids[len(p_ids):]})
        args = TrainingArguments(
            output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, num_train_epochs=2,
            learning_rate=3e-3, seed=iteration_seed(seed, it, 0, "shared"),
            data_seed=iteration_seed(seed, it, 0, "shared"),
            use_cpu=True, save_strategy="no", logging_strategy="no", report_to=[],
            disable_tqdm=True,
        )
        Trainer(model=model, args=args, train_dataset=examples, data_collator=collator).train()
        model.eval()
        times["update"] = time.perf_counter() - t
        out.append({
            "step": it,
            "trained_reward_mean": statistics.fmean(rewards[i] for i in chosen),  # type: ignore[misc]
            **{f"seconds_{k2}": v for k2, v in times.items()},
            "seconds_wall": time.perf_counter() - start,
            "seconds_cpu": time.process_time() - start_cpu,
        })
    return out


def _per_iteration_min(runs: list[list[dict[str, Any]]], key: str) -> list[float]:
    """For each iteration, the fastest of the repeats (other programs only ever add time)."""
    return [min(run[i][key] for run in runs) for i in range(len(runs[0]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2,
                    help="alternate rlhfx and bare runs this often; the fastest of each counts")
    a = ap.parse_args()
    if a.iterations < 2:
        sys.exit("--iterations must be at least 2 (the first one is warm-up)")
    load_before = os.getloadavg()[0]
    raft_runs, bare_runs, plot_cpu, same = [], [], [], True
    for _ in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            records = [r for r in run_raft(Path(tmp), a.iterations, a.batch_size, a.k, a.seed)
                       if r["step"] >= 1 or "plotter_cpu_per_draw" in r]
        plot_cpu.append(records[0]["plotter_cpu_per_draw"])
        records = [r for r in records if r["step"] >= 1]
        raft_runs.append(records[1:])
        bare = run_bare(a.iterations, a.batch_size, a.k, a.seed)
        bare_runs.append(bare[1:])
        same = same and [round(r["trained_reward_mean"], 4) for r in records] == [
            round(r["trained_reward_mean"], 4) for r in bare
        ]

    def mean(runs: list[list[dict[str, Any]]], key: str) -> float:
        return statistics.fmean(_per_iteration_min(runs, key))

    print(f"RAFT on builtin:tiny-gpt-neo, b={a.batch_size}, k={a.k}, iterations "
          f"2..{a.iterations} (the first is warm-up), 1 torch thread, fastest of "
          f"{a.repeats} alternating runs per iteration; load average before: {load_before:.1f}")
    print(describe())
    print(f"same work in both (same selected rewards every iteration): {'yes' if same else 'NO'}")
    print(f"{'phase':<12}{'rlhfx s/iter':>14}{'bare s/iter':>14}")
    for phase in ("generate", "score", "update"):
        print(f"{phase:<12}{mean(raft_runs, f'seconds_{phase}'):>14.3f}"
              f"{mean(bare_runs, f'seconds_{phase}'):>14.3f}")
    wall, bare_wall = mean(raft_runs, "seconds_wall"), mean(bare_runs, "seconds_wall")
    cpu, bare_cpu = mean(raft_runs, "seconds_cpu"), mean(bare_runs, "seconds_cpu")
    loop = mean(raft_runs, "seconds_iteration")
    print(f"{'bookkeeping':<12}{wall - loop:>14.3f}{'':>14}"
          "   (checkpoint, metrics record, plot request, summary line)")
    print(f"{'iteration':<12}{wall:>14.3f}{bare_wall:>14.3f}   wall")
    print(f"{'iteration':<12}{cpu:>14.3f}{bare_cpu:>14.3f}   CPU of the process")
    print(f"reward-curve helper process: {min(plot_cpu):.3f} CPU s per drawing, off the loop")
    print(f"overhead, wall: rlhfx / bare = {wall / bare_wall:.3f} "
          f"({(wall / bare_wall - 1) * 100:+.1f}%; target <= +5%)")
    print(f"overhead, CPU:  rlhfx / bare = {cpu / bare_cpu:.3f} "
          f"({(cpu / bare_cpu - 1) * 100:+.1f}%; insensitive to other programs on the machine)")


if __name__ == "__main__":
    main()
